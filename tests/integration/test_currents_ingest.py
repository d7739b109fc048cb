"""IngestFunction in-process, the whole AWS path on moto (created from template.yaml with EnableBrazeCurrents=true):
a Currents file put in the bucket → S3's notification on the ingest queue → the function's handler → Didomi (the
emulator over HTTP on 127.0.0.1) and Braze (the emulator over HTTP). Time is frozen where SQS timing matters."""

import contextlib
import json
import os
from datetime import UTC, datetime
from unittest import mock

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from freezegun import freeze_time
from moto import mock_aws

from didomi_braze import runtime
from didomi_braze.domain.currents import GLOBAL_STATE_CHANGE, GROUP_STATE_CHANGE
from didomi_braze.domain.errors import ConfigurationError
from didomi_braze.domain.origin import FLOW_BACK_DELEGATE_ID
from sandbox.currents import CurrentsExport, avro_file, currents_key
from sandbox.didomi_emulator import DidomiEmulator
from sandbox.lambda_runtime import LambdaContext, RetryQueuePoller, load_handler
from sandbox.stack import CURRENTS_PARAMETERS
from sandbox.template import provision
from tests.integration.conftest import REGION, call_webhook
from tests.samples import WEBHOOK_TOKEN, connector_document, currents_records, http_event, ingest_batch_event

DIDOMI_KEY, DIDOMI_SECRET = "didomi-key-ad02f7", "didomi-secret-61c9e3b8"
START = datetime.now(UTC).replace(microsecond=0)


class FlowBackAws:
    def __init__(self, clients: dict, stack, didomi: DidomiEmulator):
        self.s3, self.sqs, self.dynamodb, self.secrets = (clients[n] for n in ("s3", "sqs", "dynamodb", "secretsmanager"))
        self.stack, self.didomi = stack, didomi
        self.bucket = stack.bucket_names["CurrentsBucket"]
        self.ingest_queue = stack.queue_urls["IngestQueue"]
        self.ingest_dlq = stack.queue_urls["IngestDeadLetterQueue"]
        self.function = stack.function("IngestFunction")
        self.poller = RetryQueuePoller(self.sqs, self.ingest_queue, self.function, REGION, wait_seconds=0)

    def put_currents(self, event_type: str, records: list[dict], offset: int = 0) -> str:
        key = currents_key("currents", event_type, datetime.now(UTC).timestamp(), offset)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=avro_file(event_type, records))
        return key

    def ingest(self) -> list[str]:
        """One invocation of IngestFunction on what the ingest queue holds; returns the batch item failures."""
        messages = self.sqs.receive_message(QueueUrl=self.ingest_queue, MaxNumberOfMessages=10, AttributeNames=["All"])
        messages = [m for m in messages.get("Messages", []) if "s3:TestEvent" not in m["Body"]] or messages.get("Messages", [])
        from sandbox.lambda_runtime import sqs_record

        arn = f"arn:aws:sqs:{REGION}:123456789012:IngestQueue"
        result = load_handler(self.function)(
            {"Records": [sqs_record(m, arn, REGION) for m in messages]}, LambdaContext("IngestFunction", 300)
        )
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.ingest_queue, ReceiptHandle=m["ReceiptHandle"])
        return sorted(failed)

    def parked(self) -> list[dict]:
        got = self.sqs.receive_message(QueueUrl=self.ingest_dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        return [
            {"body": m["Body"], **{k: v["StringValue"] for k, v in m["MessageAttributes"].items()}}
            for m in got.get("Messages", [])
        ]

    def depth(self, url: str) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return sum(int(attrs[n]) for n in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"))


@contextlib.contextmanager
def flow_back_aws(braze_url: str, didomi: DidomiEmulator, didomi_secret: str | None = None):
    with mock_aws(), mock.patch.dict(os.environ):
        clients = {n: boto3.client(n, region_name=REGION) for n in ("sqs", "secretsmanager", "dynamodb", "s3")}
        secret = didomi_secret or json.dumps({"key": DIDOMI_KEY, "secret": DIDOMI_SECRET, "organization_id": "org-1"})
        stack = provision(
            clients["sqs"],
            clients["secretsmanager"],
            clients["dynamodb"],
            webhook_token=WEBHOOK_TOKEN,
            connector_document=json.dumps(connector_document(braze_url)),
            region=REGION,
            parameters=CURRENTS_PARAMETERS,
            secret_values={"DidomiSecret": secret},
            s3=clients["s3"],
        )
        os.environ.update(stack.function("WebhookFunction").environment)
        os.environ.update(stack.function("IngestFunction").environment)
        os.environ.update({"BRAZE_ALLOW_LOOPBACK": "true", "DIDOMI_API_URL": didomi.url, "DIDOMI_ALLOW_LOOPBACK": "true"})
        os.environ["BRAZE_READ_TIMEOUT_SECONDS"] = "0.5"
        _fresh_container()
        clients["sqs"].purge_queue(QueueUrl=stack.queue_urls["IngestQueue"])  # S3's test event
        try:
            yield FlowBackAws(clients, stack, didomi)
        finally:
            _fresh_container()


def _fresh_container():
    runtime.dependencies.cache_clear()
    runtime.flow_back.cache_clear()
    parameters.clear_caches()


@pytest.fixture
def didomi():
    with DidomiEmulator(organization_id="org-1", api_key=DIDOMI_KEY, api_secret=DIDOMI_SECRET, hang_seconds=1.0) as emulator:
        emulator.add_user("customer-42", {"purposes": [{"id": "newsletter", "enabled": True}], "channels": [], "vendors": {}})
        yield emulator


@pytest.fixture
def aws(braze, didomi):
    with flow_back_aws(braze.url, didomi) as environment:
        yield environment


def test_an_unsubscribe_made_in_braze_reaches_didomi_through_the_whole_aws_path(aws, didomi, braze):
    aws.put_currents(GLOBAL_STATE_CHANGE, currents_records(GLOBAL_STATE_CHANGE))
    assert aws.depth(aws.ingest_queue) == 1  # S3 notified the queue, as the template's NotificationConfiguration says
    assert aws.ingest() == []
    [event] = didomi.events.values()
    assert event["delegate"]["id"] == FLOW_BACK_DELEGATE_ID and event["created_at"] == "2026-05-04T12:30:00Z"
    assert didomi.user("customer-42")["consents"]["purposes"] == [{"id": "newsletter", "enabled": False}]
    assert aws.depth(aws.ingest_queue) == 0 and aws.parked() == []
    ledger = [i for i in aws.dynamodb.scan(TableName="StateTable")["Items"] if i["user_key"]["S"].startswith("currents#")]
    assert len(ledger) == 1 and "expires_at" in ledger[0]
    assert braze.track_requests()[-1].body["attributes"][0]["email_subscribe"] == "unsubscribed"


def test_the_full_loop_over_http_a_didomi_change_and_its_currents_echo(aws, didomi, braze):
    assert call_webhook(http_event("user-updated")) == (200, {"status": "delivered"})  # Didomi: newsletter withdrawn
    export = CurrentsExport(braze, lambda key, data: aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=data))
    assert export.flush()  # Braze's Currents reports the unsubscribe the connector made (source REST API)
    assert aws.ingest() == []
    assert didomi.events == {} and aws.depth(aws.ingest_queue) == 0


def test_a_tagged_didomi_event_is_not_sent_back_to_braze(aws, braze):
    before = len(braze.requests)
    assert call_webhook(http_event("event-created-from-braze"))[1]["reason"] == "from_braze"
    assert len(braze.requests) == before


def test_didomi_5xx_fails_the_message_and_postpones_it_on_the_schedule(aws, didomi):
    with freeze_time(START) as clock:
        aws.put_currents(GLOBAL_STATE_CHANGE, currents_records(GLOBAL_STATE_CHANGE))
        didomi.fail_next("503", path="/v1/consents/events")
        [failed] = aws.ingest()
        clock.tick(29)
        assert aws.sqs.receive_message(QueueUrl=aws.ingest_queue).get("Messages") is None  # postponed by 30 s
        clock.tick(2)
        assert aws.ingest() == []
    assert len(didomi.events) == 1


def test_a_rejected_change_is_parked_with_didomis_reason(braze, didomi):
    doc = connector_document(braze.url)
    doc["mappings"].append({"id": "a1c2e3f4-0000-4b8a-9c61-2e5f0a7b8d13", "value": "consents_purposes_retired_enabled"})
    records = [{**currents_records(GROUP_STATE_CHANGE)[0], "subscription_group_id": "a1c2e3f4-0000-4b8a-9c61-2e5f0a7b8d13"}]
    with flow_back_aws(braze.url, didomi) as aws:
        aws.secrets.put_secret_value(SecretId=aws.stack.secret_arns["ConnectorSecret"], SecretString=json.dumps(doc))
        aws.put_currents(GROUP_STATE_CHANGE, records)
        assert aws.ingest() == []
        [parked] = aws.parked()
    assert parked["category"] == "didomi_rejected" and parked["last_didomi_status"] == "400"
    assert "is not a purpose of this organization" in parked["reason"]
    assert json.loads(parked["body"])["event"]["id"] == records[0]["id"]


def test_an_unfilled_didomi_secret_fails_the_batch_loudly_and_keeps_the_message(braze, didomi, logs):
    placeholder = '{"key": "", "secret": "", "organization_id": ""}'  # the template's own placeholder
    with flow_back_aws(braze.url, didomi, didomi_secret=placeholder) as aws:
        aws.put_currents(GLOBAL_STATE_CHANGE, currents_records(GLOBAL_STATE_CHANGE))
        with pytest.raises(ConfigurationError, match="key is required"):
            aws.ingest()
        assert aws.depth(aws.ingest_queue) == 1 and didomi.events == {}
    assert "IngestFunction cannot run" in logs.getvalue()


def test_a_loopback_didomi_needs_its_flag(braze, didomi):
    with flow_back_aws(braze.url, didomi) as aws:
        os.environ.pop("DIDOMI_ALLOW_LOOPBACK")
        _fresh_container()
        with pytest.raises(ConfigurationError, match="DIDOMI_ALLOW_LOOPBACK"):
            runtime.flow_back()
        assert aws.stack.function("IngestFunction").environment.get("DIDOMI_API_URL") is None  # the template never sets it


def test_the_sample_ingest_event_runs_through_the_handler(aws, didomi):
    """events/ingest-batch.json, as `sam local invoke IngestFunction -e` sends it, against the local bucket."""
    event = ingest_batch_event()
    body = json.loads(event["Records"][0]["body"])
    body["Records"][0]["s3"]["bucket"]["name"] = aws.bucket
    key = body["Records"][0]["s3"]["object"]["key"]
    from urllib.parse import unquote_plus

    aws.s3.put_object(
        Bucket=aws.bucket, Key=unquote_plus(key), Body=avro_file(GLOBAL_STATE_CHANGE, currents_records(GLOBAL_STATE_CHANGE))
    )
    event["Records"][0]["body"] = json.dumps(body)
    result = load_handler(aws.function)(event, LambdaContext("IngestFunction", 300))
    assert result == {"batchItemFailures": []} and len(didomi.events) == 1


def test_no_didomi_key_secret_or_token_reaches_a_log_line(aws, didomi, logs):
    aws.put_currents(GLOBAL_STATE_CHANGE, currents_records(GLOBAL_STATE_CHANGE))
    didomi.fail_next("401", path="/v1/consents/events")
    aws.ingest()
    aws.secrets.put_secret_value(
        SecretId=aws.stack.secret_arns["DidomiSecret"],
        SecretString=json.dumps({"key": DIDOMI_KEY, "secret": "not-" + DIDOMI_SECRET, "organization_id": "org-1"}),
    )
    _fresh_container()
    aws.put_currents(GROUP_STATE_CHANGE, currents_records(GROUP_STATE_CHANGE), offset=1)
    aws.ingest()
    text = logs.getvalue()
    assert "braze change written to Didomi" in text and "didomi refused the API key" in text
    for secret in (DIDOMI_KEY, DIDOMI_SECRET, *didomi.tokens, "customer-42@example.com"):
        assert secret not in text


def test_many_users_in_one_file_are_written_side_by_side_and_braze_gets_one_request(aws, didomi, braze):
    base = currents_records(GLOBAL_STATE_CHANGE)[0]
    records = [{**base, "id": f"evt-{n}", "external_user_id": f"customer-{n}"} for n in range(20)]
    for n in range(20):
        braze.add_user(f"external_id:customer-{n}")
    before = len(braze.track_requests())
    aws.put_currents(GLOBAL_STATE_CHANGE, records)
    assert aws.ingest() == []
    assert sorted(e["user"]["organization_user_id"] for e in didomi.events.values()) == sorted(f"customer-{n}" for n in range(20))
    assert len(braze.track_requests()) - before == 1  # the merged states, in one request of 20 users
