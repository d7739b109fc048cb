"""`didomi-braze replay`: list the dead-letter queue by reason, a dry run that judges each user's parked changes
against their state record exactly as the worker would (and writes nothing), and the move back to the retry queue,
with the faults that must not lose a message."""

import json
from datetime import UTC, datetime

import boto3
from botocore.exceptions import ClientError
from freezegun import freeze_time

from tests.integration.conftest import REGION, call_webhook, event_for
from tests.integration.operator import OperatorAws, deploy, run
from tests.samples import http_event

START = datetime.now(UTC).replace(microsecond=0)
SALES = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"


def _park(aws, braze, worker):
    """customer-42's opt-in exhausts its retries; customer-7's update is rejected by Braze (400): two categories."""
    braze.add_user("external_id:customer-7")
    with freeze_time(START) as clock:
        braze.fail_next(*["503"] * 12)  # six tries, each request sent twice
        assert call_webhook(http_event("event-created"))[0] == 202
        for _ in range(330):
            clock.tick(1)
            while worker.poll_once(wait_seconds=0):
                pass
        braze.fail_next("400")
        assert call_webhook(event_for("customer-7"))[1]["status"] == "dead_lettered"
    return deploy(aws)


def _table(aws) -> list[dict]:
    return aws.dynamodb.scan(TableName=aws.stack.table_names["StateTable"])["Items"]


def test_replay_lists_the_dead_letter_queue_by_category_and_reason_and_moves_nothing(aws, braze, worker, capsys):
    stack = _park(aws, braze, worker)
    aws.sqs.send_message(QueueUrl=aws.dead_letter_queue, MessageBody="not a retry message")  # redriven, no attributes

    code, out, err = run(lambda region: OperatorAws(aws), "replay", "--stack", stack, capsys=capsys)

    assert (code, err) == (0, "")
    assert "The dead-letter queue of stack didomi-braze-sync: 3 message(s)" in out
    assert "retries_exhausted: 1" in out and "retries exhausted after 5 retries; last: braze server error (503)" in out
    assert "braze_rejected: 1" in out and "braze rejected the request (400)" in out
    assert "redriven: 1" in out and "moved by the retry queue's redrive policy" in out
    assert len(aws.messages(aws.dead_letter_queue)) == 3 and aws.messages(aws.retry_queue) == []


def test_the_dry_run_shows_what_the_worker_would_send_now_and_writes_nothing(aws, braze, worker, capsys):
    stack = _park(aws, braze, worker)
    # Later, customer-42 withdraws the newsletter consent again (a newer user.updated), and it reaches Braze.
    newer = http_event("user-updated")
    body = json.loads(newer["body"])
    body["parameters"]["new_entity"].update(updated_at="2026-05-05T08:00:00.000Z", version=8)
    newer["body"] = json.dumps(body)
    assert call_webhook(newer)[1]["status"] == "delivered"
    table_before, requests_before = _table(aws), len(braze.track_requests())

    code, out, _ = run(
        lambda region: OperatorAws(aws), "replay", "--stack", stack, "--category", "retries_exhausted", capsys=capsys
    )

    assert code == 0
    [would] = [line for line in out.splitlines() if line.strip().startswith("would send:")]
    sent = json.loads(would.split("would send: ", 1)[1])
    # The parked opt-in is older than the newsletter withdrawal: the worker would send the newer value, and the
    # subscription group the withdrawal did not touch; never the old opt-in.
    assert sent == {
        "external_id": "customer-42",
        "_update_existing_only": True,
        "email_subscribe": "unsubscribed",
        "subscription_groups": [{"subscription_group_id": SALES, "subscription_state": "subscribed"}],
    }
    assert "Dry run: nothing was moved" in out and "--category retries_exhausted --move" in out
    assert _table(aws) == table_before and len(braze.track_requests()) == requests_before
    assert len(aws.messages(aws.dead_letter_queue)) == 2 and aws.messages(aws.retry_queue) == []


def test_move_sends_only_the_chosen_messages_back_and_the_worker_delivers_them(aws, braze, worker, capsys):
    stack = _park(aws, braze, worker)

    code, out, _ = run(
        lambda region: OperatorAws(aws), "replay", "--stack", stack, "--category", "retries_exhausted", "--move", capsys=capsys
    )

    assert code == 0 and "Moved 1 message(s) to the retry queue" in out
    [left] = aws.messages(aws.dead_letter_queue)
    assert left["MessageAttributes"]["category"]["StringValue"] == "braze_rejected"
    [moved] = aws.messages(aws.retry_queue)
    body = json.loads(moved["Body"])
    assert (body["failures"], body["calls"], body["first_failure_at"]) == (0, 0, None)  # a fresh schedule

    with freeze_time(datetime.now(UTC)) as clock:
        clock.tick(1)
        assert worker.poll_once(wait_seconds=0) == 1
    assert braze.state("external_id:customer-42").email_subscribe == "opted_in"
    assert aws.messages(aws.retry_queue) == []


def test_a_message_the_retry_queue_refuses_stays_in_the_dead_letter_queue(aws, braze, worker, capsys):
    stack = _park(aws, braze, worker)
    sqs = boto3.client("sqs", region_name=REGION)

    def refuse(**kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "injected"}}, "SendMessageBatch")

    sqs.send_message_batch = refuse
    operator = OperatorAws(aws, clients={"sqs": sqs})

    code, out, _ = run(
        lambda region: operator, "replay", "--stack", stack, "--category", "retries_exhausted", "--move", capsys=capsys
    )

    assert code == 1
    assert "Moved 0 message(s)" in out and "NOT moved" in out and "AccessDenied: injected" in out
    assert len(aws.messages(aws.dead_letter_queue)) == 2 and aws.messages(aws.retry_queue) == []


def test_a_message_sent_but_not_deleted_is_reported_as_copied_and_is_on_the_retry_queue(aws, braze, worker, capsys):
    stack = _park(aws, braze, worker)
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.delete_message_batch = lambda **kwargs: {
        "Successful": [],
        "Failed": [
            {"Id": e["Id"], "Code": "InternalError", "Message": "injected", "SenderFault": False} for e in kwargs["Entries"]
        ],
    }
    operator = OperatorAws(aws, clients={"sqs": sqs})

    code, out, _ = run(
        lambda region: operator, "replay", "--stack", stack, "--category", "retries_exhausted", "--move", capsys=capsys
    )

    assert code == 1 and "COPIED" in out and "replaying it twice is harmless" in out
    assert len(aws.messages(aws.retry_queue)) == 1  # sent: the event is not lost
    assert len(aws.messages(aws.dead_letter_queue)) == 2  # and still parked, visible again


def test_a_malformed_message_is_named_and_never_moved(aws, braze, worker, capsys):
    stack = deploy(aws)
    aws.sqs.send_message(
        QueueUrl=aws.dead_letter_queue,
        MessageBody="{}",
        MessageAttributes={
            "category": {"DataType": "String", "StringValue": "malformed_message"},
            "reason": {"DataType": "String", "StringValue": "not a retry message written by this connector"},
        },
    )

    code, out, _ = run(
        lambda region: OperatorAws(aws), "replay", "--stack", stack, "--category", "malformed_message", "--move", capsys=capsys
    )

    assert code == 0 and "cannot be replayed" in out and "Moved 0 message(s)" in out
    assert len(aws.messages(aws.dead_letter_queue)) == 1 and aws.messages(aws.retry_queue) == []


def test_bad_input_to_replay_is_one_line_and_exit_2(aws, braze, capsys):
    stack = deploy(aws)
    for argv, message in [
        (["replay", "--stack", stack, "--move"], "choose the messages with --category"),
        (["replay", "--stack", stack, "--category", "nothing-like-it"], "no parked message matches"),
        (["replay", "--stack", stack, "--max", "0"], "--max must be at least 1"),
        (["replay", "--stack", "no-such-stack"], "cannot read stack 'no-such-stack'"),
    ]:
        code, out, err = run(lambda region: OperatorAws(aws), *argv, capsys=capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
