"""The connector document's error messages and the flow back's judgement of time, where a mistake or a clock's
precision would otherwise lose a withdrawal or leak a secret."""

import json
from datetime import UTC, datetime

import pytest

from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.currents import GLOBAL_STATE_CHANGE, CurrentsEvent
from didomi_braze.domain.errors import ConfigurationError
from didomi_braze.domain.ordering import Position, StoredInput
from didomi_braze.domain.writeback import WriteBack, decide
from tests.samples import BRAZE_API_KEY, connector_document

NEWSLETTER = "consents_purposes_newsletter_enabled"


def test_a_key_pasted_into_the_server_field_is_not_repeated_in_the_error():
    """Swapping `api_key` and `server` is an easy mistake; the error names the server's value, and every function
    logs the error (`problem`) on each webhook while the document is wrong."""
    doc = connector_document()
    doc["authentication"] = {"api_key": "https://rest.fra-01.braze.eu", "server": BRAZE_API_KEY}
    with pytest.raises(ConfigurationError) as caught:
        parse_connector_document(json.dumps(doc))
    assert "authentication.server" in str(caught.value)
    assert BRAZE_API_KEY not in str(caught.value)


def test_a_braze_unsubscribe_in_the_same_second_as_a_didomi_grant_is_written_the_withdrawal_wins_the_tie():
    """Currents `time` is whole seconds, Didomi's times have milliseconds: a Braze unsubscribe made at 12:00:00.9,
    after a Didomi grant at 12:00:00.4, is reported as 12:00:00 and judged `superseded`. Braze keeps the user's
    unsubscribe, Didomi (and every tool fed from it) keeps the grant. Within one second the order is unknown; the
    opt-out is the side to err on."""
    config = parse_connector_document(json.dumps(connector_document()))
    grant = StoredInput(True, Position("2027-01-15T12:00:00.400000Z", None, "didomi-event"))
    second = int(datetime(2027, 1, 15, 12, 0, 0, tzinfo=UTC).timestamp())
    event = CurrentsEvent(
        "braze-1",
        GLOBAL_STATE_CHANGE,
        "Unsubscribed",
        second,
        external_user_id="customer-42",
        state_change_source="Subscription Page",
    )
    decision = decide(event, config, False, {NEWSLETTER: grant})
    assert isinstance(decision, WriteBack), decision
