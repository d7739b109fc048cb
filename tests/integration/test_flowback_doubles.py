"""The flow back's in-memory doubles (sandbox/memory_flowback.py) against the real adapters: the same operations,
the same results. DynamoDB and S3 are moto; Didomi is the emulator over HTTP on 127.0.0.1 against the same
organisation in memory."""

import json

import boto3
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from moto import mock_aws

from didomi_braze.adapters.currents_files import S3CurrentsFiles
from didomi_braze.adapters.didomi_api import DidomiClient, Urllib3Transport
from didomi_braze.adapters.event_ledger import TTL_SECONDS, DynamoEventLedger
from didomi_braze.domain.didomi_api import DidomiCredentials
from didomi_braze.domain.errors import DidomiUnavailable, UnreadableFile
from sandbox.currents import GLOBAL, avro_file
from sandbox.didomi_emulator import DidomiEmulator, DidomiOrganization
from sandbox.memory import Clock
from sandbox.memory_flowback import LEDGER_TTL_SECONDS, MemoryCurrentsFiles, MemoryEventLedger, memory_didomi
from sandbox.template import provision
from tests.integration.conftest import REGION
from tests.samples import currents_records

NOW = 1_800_000_000.0
CREDENTIALS = DidomiCredentials("k", "s", "o")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rounds=st.lists(st.tuples(st.lists(st.sampled_from("abcdef"), max_size=4), st.lists(st.sampled_from("abcdef"), max_size=4)))
)
def test_the_memory_ledger_answers_as_the_dynamodb_ledger(rounds):
    assert LEDGER_TTL_SECONDS == TTL_SECONDS
    with mock_aws():
        sqs, secrets, dynamodb = (boto3.client(s, region_name=REGION) for s in ("sqs", "secretsmanager", "dynamodb"))
        stack = provision(sqs, secrets, dynamodb, webhook_token="t", connector_document="{}", region=REGION)
        real, double = DynamoEventLedger(dynamodb, stack.table_names["StateTable"]), MemoryEventLedger(Clock(NOW))
        for recorded, asked in rounds:
            keys = [f"currents#{k}" for k in asked]
            assert real.handled(keys) == double.handled(keys)
            real.record([f"currents#{k}" for k in recorded], NOW)
            double.record([f"currents#{k}" for k in recorded], NOW)


@mock_aws
def test_the_dynamodb_ledger_pages_through_more_than_one_batch():
    sqs, secrets, dynamodb = (boto3.client(s, region_name=REGION) for s in ("sqs", "secretsmanager", "dynamodb"))
    stack = provision(sqs, secrets, dynamodb, webhook_token="t", connector_document="{}", region=REGION)
    ledger = DynamoEventLedger(dynamodb, stack.table_names["StateTable"])
    keys = [f"currents#{n}" for n in range(260)]
    ledger.record(keys[:130], NOW)
    assert ledger.handled(keys) == set(keys[:130])
    item = dynamodb.get_item(TableName="StateTable", Key={"user_key": {"S": "currents#0"}})["Item"]
    assert int(item["expires_at"]["N"]) == int(NOW) + TTL_SECONDS  # the table's TTL attribute


@mock_aws
def test_the_memory_files_read_as_s3_does():
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="currents-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
    real, double = S3CurrentsFiles(s3), MemoryCurrentsFiles()
    data = avro_file(GLOBAL, currents_records(GLOBAL))
    for key, body in (("ok.avro", data), ("junk.avro", b"not avro at all"), ("cut.avro", data[: len(data) // 2])):
        s3.put_object(Bucket="currents-bucket", Key=key, Body=body)
        double.put("currents-bucket", key, body)
    records = list(real.records("currents-bucket", "ok.avro"))
    assert records == list(double.records("currents-bucket", "ok.avro"))
    assert [{k: v for k, v in r.items() if v is not None} for r in records] == [
        {k: v for k, v in r.items() if v is not None} for r in currents_records(GLOBAL)
    ]
    for key in ("junk.avro", "cut.avro", "missing.avro"):
        outcomes = []
        for files in (real, double):
            with pytest.raises(UnreadableFile) as caught:
                list(files.records("currents-bucket", key))
            outcomes.append(str(caught.value).split(" (")[0])
        assert outcomes[0] == outcomes[1]


def test_the_memory_transport_answers_as_the_emulator_over_http():
    """One script of calls against the same organisation, once over HTTP and once in memory."""

    def script(client: DidomiClient, org: DidomiOrganization, clock: Clock) -> list:
        out = []
        event = {
            "id": "e-1",
            "user": {"organization_user_id": "c-1"},
            "consents": {"purposes": [{"id": "newsletter", "enabled": False}]},
        }
        out.append(client.create_event(event).kind)
        out.append(client.create_event(event).duplicate)
        org.fail_next("401", path="/v1/consents/events")
        out.append(client.create_event({**event, "id": "e-2"}).kind)
        org.fail_next("503", path="/v1/consents/users")
        try:
            list(client.users())
        except DidomiUnavailable as exc:
            out.append(exc.answer.status)
        clock.advance(3500)
        out.append([u["organization_user_id"] for u in client.users("c-1")])
        out.append(client.create_event({**event, "consents": {"purposes": [{"id": "nope"}]}, "id": "e-3"}).reason)
        out.append([(r.method, r.path, r.status) for r in org.requests])
        return out

    results = []
    for over_http in (True, False):
        clock = Clock(NOW)
        if over_http:
            org = DidomiEmulator(organization_id="o", api_key="k", api_secret="s", clock=clock).start()
            client = DidomiClient(lambda force: CREDENTIALS, org.url, Urllib3Transport(), clock=clock)
        else:
            org = DidomiOrganization(organization_id="o", api_key="k", api_secret="s", clock=clock)
            client = memory_didomi(org, clock)
        try:
            results.append(script(client, org, clock))
        finally:
            if over_http:
                org.stop()
    assert results[0] == results[1]
    assert json.dumps(results[0])  # the script ran to its end in both


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy", "bzip2"])
def test_currents_files_are_read_whatever_their_avro_codec(codec):
    """Braze does not document its codec: the container header names it, and the function reads each of these."""
    files = MemoryCurrentsFiles()
    files.put("currents-bucket", "f.avro", avro_file(GLOBAL, currents_records(GLOBAL), codec=codec))
    assert [r["id"] for r in files.records("currents-bucket", "f.avro")] == [r["id"] for r in currents_records(GLOBAL)]
