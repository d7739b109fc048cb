"""Integration fixtures: AWS from moto (resources created from template.yaml), Braze from the emulator on
127.0.0.1, and the functions' environment taken from the template, exactly as Lambda would get it."""

import contextlib
import io
import json
import os
from dataclasses import dataclass
from unittest import mock

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from didomi_braze import runtime
from sandbox.braze_emulator import BrazeEmulator
from sandbox.lambda_runtime import LambdaContext
from sandbox.template import Stack, provision
from tests.samples import BRAZE_API_KEY, WEBHOOK_TOKEN, connector_document, http_event

REGION = "eu-central-1"
KNOWN_USERS = ("external_id:customer-42", "external_id:customer-7", "external_id:customer-9")


@dataclass
class LocalAws:
    sqs: object
    secrets: object
    dynamodb: object
    stack: Stack

    @property
    def retry_queue(self) -> str:
        return self.stack.retry_queue_url

    @property
    def dead_letter_queue(self) -> str:
        return self.stack.dead_letter_queue_url

    def messages(self, queue_url: str) -> list[dict]:
        """Every visible message on a queue, made visible again afterwards (inspection must not hide them)."""
        out = []
        while got := self.sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=60,
        ).get("Messages", []):
            out.extend(got)
        for message in out:
            self.sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        return out

    def put_connector(self, document: dict | str) -> None:
        text = document if isinstance(document, str) else json.dumps(document)
        self.secrets.put_secret_value(SecretId=self.stack.secret_arns["ConnectorSecret"], SecretString=text)


@pytest.fixture(autouse=True)
def _no_real_pause_before_a_second_try():
    """The functions pause half a second before sending a 5xx'd request again; the clock these tests read is frozen
    or moved by hand, so the real sleep would only slow them down (tests/faults/test_quick_retry.py times it).
    Not through `monkeypatch`: an autouse fixture using it would make the tests' own `monkeypatch` outlive `aws`,
    whose environment it would then write back into the process."""
    from didomi_braze.service import delivery

    pause = delivery.QUICK_RETRY_PAUSE_SECONDS
    delivery.QUICK_RETRY_PAUSE_SECONDS = 0.0
    yield
    delivery.QUICK_RETRY_PAUSE_SECONDS = pause


@pytest.fixture
def braze():
    with BrazeEmulator(api_key=BRAZE_API_KEY, known_users=KNOWN_USERS, hang_seconds=1.0) as emulator:
        yield emulator


@contextlib.contextmanager
def local_aws(braze_url: str):
    """moto AWS with the template's queues, table and secrets, and the environment of the template's functions
    (restored afterwards). Usable once per hypothesis example as well as through the `aws` fixture."""
    with mock_aws(), mock.patch.dict(os.environ):
        sqs = boto3.client("sqs", region_name=REGION)
        secrets = boto3.client("secretsmanager", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        stack = provision(
            sqs,
            secrets,
            dynamodb,
            webhook_token=WEBHOOK_TOKEN,
            connector_document=json.dumps(connector_document(braze_url)),
            region=REGION,
            logs=boto3.client("logs", region_name=REGION),
            stack_name="didomi-braze-sync",
        )
        os.environ.update(stack.function("WebhookFunction").environment)
        os.environ["BRAZE_ALLOW_LOOPBACK"] = "true"
        os.environ["BRAZE_READ_TIMEOUT_SECONDS"] = "0.5"  # below the emulator's 1 s hang
        _fresh_container()
        try:
            yield LocalAws(sqs, secrets, dynamodb, stack)
        finally:
            _fresh_container()


@pytest.fixture
def aws(braze):
    with local_aws(braze.url) as environment:
        yield environment


def _fresh_container():
    """What a new Lambda container starts with: no cached dependencies, no cached secrets."""
    runtime.dependencies.cache_clear()
    parameters.clear_caches()


@pytest.fixture
def context():
    return LambdaContext("WebhookFunction", 15)


@pytest.fixture
def logs():
    """Everything the functions log, as text (Powertools writes JSON lines to its own stream handler)."""
    from didomi_braze.observability import logger

    buffer = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


def call_webhook(event: dict) -> tuple[int, dict]:
    from didomi_braze.handlers.webhook import handler

    result = handler(event, LambdaContext("WebhookFunction", 15))
    return result["statusCode"], json.loads(result["body"])


@pytest.fixture
def worker(aws):
    """RetryFunction behind the same SQS event-source stand-in the local stack uses, polled by the test.

    It shares the webhook's container (its dependencies), so that a fault injected there reaches both, and it
    hands each poll's messages over at once: these tests check the retry schedule itself, and
    tests/integration/test_local_runtime.py checks it again with the template's batching window."""
    from sandbox.lambda_runtime import RetryQueuePoller

    return RetryQueuePoller(
        aws.sqs, aws.retry_queue, aws.stack.function("RetryFunction"), REGION, wait_seconds=0, batching_window=0
    )


def event_for(user: str, name: str = "event-created") -> dict:
    """A sample event re-addressed to another user (and given its own event id)."""
    event = http_event(name)
    body = json.loads(event["body"])
    entity = body["parameters"].get("entity") or body["parameters"]["new_entity"]
    if "user" in entity:
        entity["user"]["organization_user_id"] = user
        entity["id"] = f"{entity['id']}-{user}"
    else:
        entity["organization_user_id"] = user
    event["body"] = json.dumps(body)
    return event
