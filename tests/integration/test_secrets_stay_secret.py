"""The Braze API key and the webhook token never reach a log line, a metric, a response or a queue message;
raw user ids never reach a log line (users appear as a keyed hash)."""

import json

import pytest
from freezegun import freeze_time

from tests.integration.conftest import call_webhook
from tests.samples import BRAZE_API_KEY, WEBHOOK_TOKEN, connector_document, http_event

USER = "customer-42"


def _everything_visible(aws, capsys, logs, answers) -> str:
    queued = [
        m["Body"] + json.dumps(m.get("MessageAttributes", {}))
        for q in (aws.retry_queue, aws.dead_letter_queue)
        for m in aws.messages(q)
    ]
    return "\n".join([logs.getvalue(), capsys.readouterr().out, *map(json.dumps, answers), *queued])


@pytest.mark.parametrize(
    "faults",
    [(), ("503",), ("429",), ("401",), ("400",), ("item_error",), ("hang",)],
)
def test_no_secret_or_raw_user_id_in_logs_metrics_or_answers_whatever_braze_does(aws, braze, worker, logs, capsys, faults):
    with freeze_time(tick=True) as clock:
        braze.fail_next(*faults, *faults)
        answers = [call_webhook(http_event(name)) for name in ("event-created", "user-updated", "unauthenticated", "wrong-token")]
        clock.tick(31)
        worker.poll_once(wait_seconds=0)
        seen = _everything_visible(aws, capsys, logs, answers)

    assert BRAZE_API_KEY not in seen
    assert WEBHOOK_TOKEN not in seen
    assert USER not in logs.getvalue()
    assert '"user_ref":' in logs.getvalue()


def test_a_token_presented_by_an_attacker_is_not_logged(aws, braze, logs, capsys):
    event = http_event("event-created")
    event["headers"]["authorization"] = "Bearer attacker-guess-0123456789"
    answer = call_webhook(event)
    assert "attacker-guess-0123456789" not in logs.getvalue() + capsys.readouterr().out + json.dumps(answer)


def test_an_invalid_connector_document_is_explained_without_its_key(aws, braze, logs, capsys):
    doc = connector_document("https://not-braze.example")
    doc["authentication"]["api_key"] = BRAZE_API_KEY
    doc["mappings"].append({"id": "OPTED_IN", "value": BRAZE_API_KEY})
    aws.put_connector(doc)

    answer = call_webhook(http_event("event-created"))

    seen = logs.getvalue() + capsys.readouterr().out + json.dumps(answer)
    assert "authentication.server" in seen and "mapped twice" in seen
    assert BRAZE_API_KEY not in seen


def test_a_connector_document_that_is_not_json_is_explained_without_echoing_it(aws, braze, logs, capsys):
    aws.put_connector('{"authentication": {"api_key": "' + BRAZE_API_KEY + '", // my key\n}}')
    call_webhook(http_event("event-created"))
    seen = logs.getvalue() + capsys.readouterr().out
    assert "// comment" in seen and BRAZE_API_KEY not in seen
