"""The whole product on loopback: moto server (SQS, Secrets Manager) provisioned from template.yaml, the Braze
emulator, WebhookFunction behind an HTTP gateway, and RetryFunction fed by a queue poller. With `with_currents`,
the flow back too: the Currents bucket (S3 on moto, notifying the ingest queue), Braze's Currents export writing
Avro files into it, the Didomi emulator, and IngestFunction fed by a poller. One process, daemon threads only:
nothing is left running when it stops.

Each function runs with its own environment as the template declares it (the worker's longer Braze read timeout
is the worker's only); the process environment holds only what every function shares, so code that calls a
handler directly sees the environment the functions have in common.
"""

from __future__ import annotations

import json
import logging
import os
import secrets as token_source
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import boto3
import urllib3
from moto.server import ThreadedMotoServer

from .braze_emulator import BrazeEmulator
from .currents import CurrentsExport
from .didomi_emulator import DidomiEmulator
from .lambda_runtime import RetryQueuePoller, WebhookGateway
from .template import ROOT, FunctionSpec, Stack, provision

REGION = "eu-central-1"
DEMO_USERS = ("external_id:customer-42", "external_id:customer-7", "external_id:customer-9")
CONNECTOR_EXAMPLE = ROOT / "events" / "connector.json"
SAMPLE_WEBHOOK_TOKEN = "local-webhook-token"  # noqa: S105 (the local-only token the events/ files carry)
# The flow back's template parameters: a Braze account id and external id as Braze's dashboard would show them.
CURRENTS_PARAMETERS = {
    "EnableBrazeCurrents": "true",
    "BrazeCurrentsPrincipal": "210987654321",
    "BrazeCurrentsExternalId": "local-braze-external-id",
}


class LocalStack:
    def __init__(
        self,
        retry_delays: str | None = None,
        batching_window: float | None = None,
        connector_path: Path = CONNECTOR_EXAMPLE,
        webhook_token: str = SAMPLE_WEBHOOK_TOKEN,
        webhook_port: int = 0,
        with_gateway: bool = True,
        with_poller: bool = True,
        with_currents: bool = False,
        currents_opt_ins: bool = False,
        braze_clock: Callable[[], float] | None = None,
    ):
        self.retry_delays = retry_delays
        self.batching_window = batching_window  # None: the template's MaximumBatchingWindowInSeconds
        self.connector_path = connector_path
        self.webhook_token = webhook_token
        self.webhook_port = webhook_port
        self.with_gateway, self.with_poller = with_gateway, with_poller
        self.with_currents, self.currents_opt_ins = with_currents, currents_opt_ins
        self.braze_clock = braze_clock  # when Braze records its changes (Currents' `time`); default: now
        self.moto: ThreadedMotoServer | None = None
        self.braze: BrazeEmulator | None = None
        self.didomi: DidomiEmulator | None = None
        self.currents: CurrentsExport | None = None
        self.gateway: WebhookGateway | None = None
        self.poller: RetryQueuePoller | None = None
        self.ingest_poller: RetryQueuePoller | None = None
        self.stack: Stack | None = None
        self._saved_env: dict[str, str | None] = {}

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto server's per-request access log
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        # A moto server thread serves the process's own backends: start from nothing, whatever an earlier local stack
        # (or an operator test's deployed stack) of this process left there.
        urllib3.request("POST", f"http://{host}:{port}/moto-api/reset", timeout=10)
        self._set_env(
            {
                "AWS_ENDPOINT_URL": f"http://{host}:{port}",
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            self._set_env({name: None})

        document = json.loads(self.connector_path.read_text())
        api_key = document.get("authentication", {}).get("api_key") or token_source.token_hex(16)
        clock = {"clock": self.braze_clock} if self.braze_clock else {}
        self.braze = BrazeEmulator(api_key=api_key, known_users=DEMO_USERS, **clock).start()
        document.setdefault("authentication", {})["server"] = self.braze.url
        document["authentication"]["api_key"] = api_key

        self.sqs = boto3.client("sqs", region_name=REGION)
        secretsmanager = boto3.client("secretsmanager", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)
        parameters, secret_values = {}, {}
        if self.with_currents:
            self.didomi = DidomiEmulator(api_key=token_source.token_hex(12), api_secret=token_source.token_hex(24)).start()
            parameters = {**CURRENTS_PARAMETERS, "CurrentsOptIns": str(self.currents_opt_ins).lower()}
            secret_values["DidomiSecret"] = json.dumps(
                {"key": self.didomi.api_key, "secret": self.didomi.api_secret, "organization_id": self.didomi.organization_id}
            )
        self.stack = provision(
            self.sqs,
            secretsmanager,
            self.dynamodb,
            webhook_token=self.webhook_token,
            connector_document=json.dumps(document),
            region=REGION,
            parameters=parameters,
            secret_values=secret_values,
            s3=self.s3,
        )
        webhook, retry = self.function("WebhookFunction"), self.function("RetryFunction")
        self._set_env(dict(webhook.environment.items() & retry.environment.items()))
        ingest = None
        if self.with_currents:
            ingest = self.function("IngestFunction")
            bucket = self.stack.bucket_names["CurrentsBucket"]
            folder = self.stack.parameters["CurrentsFolderPath"]
            self.currents = CurrentsExport(
                self.braze, lambda key, data: self.s3.put_object(Bucket=bucket, Key=key, Body=data), folder
            )
        self._fresh_container()

        if self.with_gateway:
            self.gateway = WebhookGateway(webhook, port=self.webhook_port, environment=webhook.environment).start()
        if self.with_poller:
            self.poller = RetryQueuePoller(
                self.sqs,
                self.retry_queue_url,
                retry,
                REGION,
                batching_window=self.batching_window,
                environment=retry.environment,
            ).start()
            if ingest is not None:
                self.ingest_poller = RetryQueuePoller(
                    self.sqs, self.stack.queue_urls["IngestQueue"], ingest, REGION, environment=ingest.environment
                ).start()

    def function(self, logical_id: str) -> FunctionSpec:
        """A function of the template with its environment as deployed, plus what the local run changes: Braze
        (and Didomi) are the emulators on loopback, and the retry delays may be compressed."""
        spec = self.stack.function(logical_id)
        local = {"BRAZE_ALLOW_LOOPBACK": "true"}
        if self.retry_delays:
            local["RETRY_DELAYS_SECONDS"] = self.retry_delays
        if self.didomi is not None:
            local.update(DIDOMI_API_URL=self.didomi.url, DIDOMI_ALLOW_LOOPBACK="true")
        return replace(spec, environment={**spec.environment, **local})

    @property
    def moto_url(self) -> str:
        host, port = self.moto.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def retry_queue_url(self) -> str:
        return self.stack.retry_queue_url

    @property
    def dead_letter_queue_url(self) -> str:
        return self.stack.dead_letter_queue_url

    def queue_depth(self, url: str) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return sum(
            int(attrs.get(name, 0))
            for name in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )

    def dead_letters(self) -> list[dict]:
        """Peek at the dead-letter queue: bodies and reason attributes (messages stay where they are)."""
        found: dict[str, dict] = {}
        for _ in range(5):
            got = self.sqs.receive_message(
                QueueUrl=self.dead_letter_queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
            ).get("Messages", [])
            for m in got:
                found[m["MessageId"]] = {
                    "body": m["Body"],
                    **{k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()},
                }
        return list(found.values())

    def deliver_didomi_notifications(self) -> list[tuple[str, int, dict]]:
        """Send what Didomi's organisation notified its integrations of to the webhook, as Didomi's webhook
        integration would (with the custom Authorization header); returns (type, status, answer) per delivery."""
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=20))
        out = []
        for notification in self.didomi.drain_notifications():
            response = http.request(
                "POST",
                self.gateway.url,
                body=json.dumps(notification).encode(),
                headers={"Authorization": f"Bearer {self.webhook_token}", "Content-Type": "application/json"},
            )
            out.append((notification["type"], response.status, json.loads(response.data)))
        return out

    def stop(self) -> None:
        for part in (self.ingest_poller, self.poller, self.gateway, self.braze, self.didomi):
            if part is not None:
                part.stop()
        if self.moto is not None:
            self.moto.stop()
        self._fresh_container()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        self.poller = self.ingest_poller = self.gateway = self.braze = self.didomi = self.moto = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _set_env(self, values: dict[str, str | None]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    @staticmethod
    def _fresh_container() -> None:
        """Functions cache their dependencies per container: start (and end) like a new one."""
        import sys

        runtime = sys.modules.get("didomi_braze.runtime")
        if runtime is not None:
            runtime.dependencies.cache_clear()
            runtime.flow_back.cache_clear()
