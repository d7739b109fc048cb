"""`didomi-braze trace`: one user's story from what the functions really logged (run in-process, shipped to moto's
CloudWatch Logs), found by the stack's saved query, and the user's state record."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from didomi_braze.domain.mapping import BrazeIdentity
from didomi_braze.observability import user_ref
from tests.integration.conftest import call_webhook
from tests.integration.operator import OperatorAws, deploy, run, ship_logs
from tests.samples import WEBHOOK_TOKEN, http_event

START = datetime.now(UTC).replace(microsecond=0)
CUSTOMER_42 = user_ref(WEBHOOK_TOKEN, "external_id:customer-42")


def _story(aws, braze, worker, logs):
    """customer-42: an opt-out delivered, a pending event skipped, an opt-in that fails five retries and is parked;
    customer-7 meanwhile opts in (their lines must not show)."""
    with freeze_time(START) as clock:
        assert call_webhook(http_event("user-updated"))[1]["status"] == "delivered"
        assert call_webhook(http_event("event-created-pending"))[1]["reason"] == "pending"
        assert call_webhook(http_event("user-created"))[1]["status"] == "delivered"
        clock.tick(10)  # past the first delivery's lease
        braze.fail_next(*["503"] * 12)  # six tries, each request sent twice
        assert call_webhook(http_event("event-created"))[0] == 202
        for _ in range(400):
            clock.tick(1)
            while worker.poll_once(wait_seconds=0):
                pass
    ship_logs(aws, logs)
    return deploy(aws)


def test_trace_tells_one_user_s_story_in_order_with_reasons_and_braze_statuses(aws, braze, worker, logs, capsys):
    stack = _story(aws, braze, worker, logs)
    operator = OperatorAws(aws)

    with freeze_time(START + timedelta(seconds=420)):
        code, out, err = run(lambda region: operator, "trace", "customer-42", "--stack", stack, capsys=capsys)

    assert (code, err) == (0, "")
    timeline = [re.split(r"\s{2,}", line, maxsplit=2)[2] for line in out.splitlines() if line.startswith(START.strftime("%Y-"))]
    assert (
        timeline[0].startswith("received user.updated user.updated:") and "(change of 2026-05-02T09:15:22.300000Z)" in timeline[0]
    )
    assert timeline[0].endswith("delivered to Braze [Braze 201]: email_subscribe=unsubscribed")
    assert "skipped (pending)" in timeline[1]
    assert "queued, retry in 30 s: braze server error (503)" in timeline[2] and timeline[2].endswith("[Braze 503]")
    retries = timeline[3:]
    assert [("receive 1" in r, "next retry in 45 s" in r) for r in retries[:1]] == [(True, True)]
    assert sum("failed: braze server error (503)" in r for r in retries) == 4
    # A try whose request failed twice (a 5xx is sent again at once) goes on as a fresh copy of its message.
    assert retries[-1].startswith("retry (receive 1) of event.created")
    assert "parked in the dead-letter queue (retries_exhausted): retries exhausted after 5 retries" in retries[-1]
    assert len(timeline) == 3 + 5
    assert "customer-7" not in out and "user.created" not in out  # another user's lines are not shown

    # The state record: the merged inputs with their positions, what they call for, the lease.
    assert "State table record (revision" in out
    assert "consents_purposes_newsletter_enabled" in out and "as of 2026-05-04T12:00:00.000000Z" in out
    assert "Braze fields this state calls for, with the deployed mappings: email_subscribe=opted_in" in out
    assert "lease: ran out at" in out or "lease: free" in out
    assert f"user_ref {CUSTOMER_42}" in out
    assert "The last event waits in the dead-letter queue: make replay STACK=" in out
    assert operator.insights_port.queries == [
        f'fields @timestamp, @log, @message\n| filter user_ref = "{CUSTOMER_42}"\n| sort @timestamp asc\n| limit 10000'
    ]


def test_trace_searches_with_the_previous_token_too_after_a_rotation(aws, braze, worker, logs, capsys):
    stack = _story(aws, braze, worker, logs)
    aws.secrets.put_secret_value(SecretId=aws.stack.secret_arns["WebhookSecret"], SecretString="rotated-token")
    operator = OperatorAws(aws)

    with freeze_time(START + timedelta(seconds=420)):
        code, out, _ = run(lambda region: operator, "trace", "customer-42", "--stack", stack, capsys=capsys)

    rotated = user_ref("rotated-token", "external_id:customer-42")
    assert code == 0 and f"user_ref {rotated} / {CUSTOMER_42}" in out
    assert len(operator.insights_port.queries) == 2
    assert "delivered to Braze [Braze 201]: email_subscribe=unsubscribed" in out  # written under the old token


def test_trace_of_a_user_nothing_happened_to_says_so(aws, braze, capsys):
    stack = deploy(aws)
    code, out, _ = run(lambda region: OperatorAws(aws), "trace", "nobody-here", "--stack", stack, capsys=capsys)
    assert code == 0
    assert "No log line about this user in the last 7d." in out
    assert "(the connector identifies users by external_id: is 'nobody-here' one?)" in out
    assert "The state table has no record for this user" in out


def test_trace_names_a_broken_connector_document_as_the_cause(aws, braze, logs, capsys):
    # The silent-loss case of the issue: a document stored with the raw aws CLI that the functions refuse.
    aws.put_connector({"type_id": "braze", "authentication": {"api_key": "secret-value-9", "server": "EU-09"}, "mappings": []})
    status, _ = call_webhook(http_event("event-created"))
    assert status == 503
    stack = deploy(aws)

    code, out, _ = run(lambda region: OperatorAws(aws), "trace", "customer-42", "--stack", stack, capsys=capsys)

    assert code == 0
    assert "! The deployed connector document is invalid, so every webhook answers 503" in out
    assert "authentication.server 'EU-09'" in out and "secret-value-9" not in out


def test_trace_reads_the_user_s_record_under_the_key_the_functions_use(aws, braze, capsys):
    call_webhook(http_event("user-updated"))
    stack = deploy(aws)
    key = BrazeIdentity("external_id", "customer-42").state_key
    assert "Item" in aws.dynamodb.get_item(TableName=aws.stack.table_names["StateTable"], Key={"user_key": {"S": key}})

    code, out, _ = run(lambda region: OperatorAws(aws), "trace", "customer-42", "--stack", stack, capsys=capsys)

    assert code == 0 and "State table record (revision 1)" in out
    assert "consents_purposes_newsletter_enabled  false  as of 2026-05-02T09:15:22.300000Z" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trace", "customer-42", "--stack", "no-such-stack"], "cannot read stack 'no-such-stack': ValidationError"),
        (["trace", "customer-42", "--stack", "{stack}", "--since", "forever"], "--since 'forever': give a duration"),
        (["trace", "  ", "--stack", "{stack}"], "give the user's Braze external_id"),
        (["trace", "customer-42", "--stack", "{stack}", "--identifier", "phone"], "argument --identifier: invalid choice"),
        (["trace", "customer-42"], "the following arguments are required: --stack"),
    ],
)
def test_bad_input_to_trace_is_one_line_and_exit_2(aws, braze, capsys, argv, message):
    stack = deploy(aws)
    argv = [a.replace("{stack}", stack) for a in argv]
    try:
        code, out, err = run(lambda region: OperatorAws(aws), *argv, capsys=capsys)
    except SystemExit as exit_:  # argparse's own usage errors
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_trace_output_carries_no_secret(aws, braze, worker, logs, capsys):
    stack = _story(aws, braze, worker, logs)
    with freeze_time(START + timedelta(seconds=420)):
        _, out, err = run(lambda region: OperatorAws(aws), "trace", "customer-42", "--stack", stack, capsys=capsys)
    document = json.loads(aws.secrets.get_secret_value(SecretId=aws.stack.secret_arns["ConnectorSecret"])["SecretString"])
    assert WEBHOOK_TOKEN not in out + err and document["authentication"]["api_key"] not in out + err
