"""Validating the connector document: every problem named, the API key never echoed."""

import json

import pytest

from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.errors import ConfigurationError
from tests.samples import connector_document

SECRET_KEY = "braze-key-3c7f1d9e-should-never-be-printed"


def _parse(doc, allow_loopback=False):
    return parse_connector_document(json.dumps(doc) if not isinstance(doc, str) else doc, allow_loopback)


def _problems(doc, allow_loopback=False):
    with pytest.raises(ConfigurationError) as raised:
        _parse(doc, allow_loopback)
    assert SECRET_KEY not in str(raised.value)
    return str(raised.value)


def test_the_sample_document_parses_into_a_typed_config():
    config = _parse(connector_document("EU-01"))
    assert config.server == "https://rest.fra-01.braze.eu"
    assert config.email_opted_in == config.email_unsubscribed == "consents_purposes_newsletter_enabled"
    assert [g for g, _ in config.subscription_groups] == [
        "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13",
        "9b2e4d61-0c3a-4f7e-8d15-6a9c1b3e5f27",
    ]
    assert config.regulations == {"gdpr"} and config.user_identifier == "external_id" and config.upsert_mode is False


def test_defaults_apply_when_properties_and_upsert_mode_are_absent():
    doc = connector_document("EU-01")
    del doc["properties"], doc["upsert_mode"]
    config = _parse(doc)
    assert config.regulations == {"gdpr"} and config.user_identifier == "external_id" and config.upsert_mode is False


def test_the_api_key_is_not_in_the_repr_of_the_config():
    doc = connector_document("EU-01")
    doc["authentication"]["api_key"] = SECRET_KEY
    assert SECRET_KEY not in repr(_parse(doc))


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ("EU-01", "https://rest.fra-01.braze.eu"),
        ("eu-02", "https://rest.fra-02.braze.eu"),
        ("US-03", "https://rest.iad-03.braze.com"),
        ("US-10", "https://rest.us-10.braze.com"),
        ("AU-01", "https://rest.au-01.braze.com"),
        ("KR-01", "https://rest.kr-01.braze.com"),
        ("https://rest.iad-08.braze.com/", "https://rest.iad-08.braze.com"),
        ("https://REST.fra-01.braze.eu", "https://rest.fra-01.braze.eu"),
    ],
)
def test_instance_codes_and_official_urls_are_accepted(server, url):
    assert _parse(connector_document(server)).server == url


@pytest.mark.parametrize(
    "server",
    [
        "https://rest.fra-01.braze.eu.attacker.example",
        "http://rest.fra-01.braze.eu",
        "https://rest.iad-09.braze.com",
        "https://evil.example/rest.iad-01.braze.com",
        "https://rest.iad-01.braze.com@169.254.169.254",
        "http://169.254.169.254",
        "US-99",
        "",
    ],
)
def test_any_other_server_is_refused_so_the_key_cannot_be_sent_elsewhere(server):
    assert "authentication.server" in _problems(connector_document(server))


def test_loopback_is_accepted_only_when_explicitly_allowed():
    doc = connector_document("http://127.0.0.1:9300")
    assert "BRAZE_ALLOW_LOOPBACK=true" in _problems(doc)
    assert _parse(doc, allow_loopback=True).server == "http://127.0.0.1:9300"
    assert _parse(connector_document("http://localhost:8080"), allow_loopback=True).server == "http://localhost:8080"
    assert "authentication.server" in _problems(connector_document("http://10.0.0.1:80"), allow_loopback=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(type_id="salesforce"), 'type_id must be "braze"'),
        (lambda d: d.pop("authentication"), "authentication is required"),
        (lambda d: d["authentication"].pop("api_key"), "authentication.api_key is required"),
        (lambda d: d["authentication"].update(api_key=""), "authentication.api_key is required"),
        (lambda d: d["authentication"].update(api_key="<Braze REST API key>"), "authentication.api_key is required"),
        (lambda d: d["properties"].update(regulations="gdpr"), "properties.regulations must be a non-empty list"),
        (lambda d: d["properties"].update(user_identifier="braze_id"), "properties.user_identifier must be"),
        (lambda d: d.update(upsert_mode="false"), "upsert_mode must be true or false"),
        (lambda d: d.update(mappings=[]), "mappings must be a non-empty list"),
        (
            lambda d: d["mappings"].append({"id": "", "value": "consents_purposes_x_enabled"}),
            "mappings[4].id must be a non-empty string",
        ),
        (
            lambda d: d["mappings"].append({"id": 7, "value": "consents_purposes_x_enabled"}),
            "mappings[4].id must be a non-empty string",
        ),
        (
            lambda d: d["mappings"].append({"id": "OPTED_IN", "value": "consents_purposes_x_enabled"}),
            "mappings[4].id 'OPTED_IN' is mapped twice",
        ),
        (lambda d: d["mappings"].append({"id": "g", "value": "purposes.x"}), "mappings[4].value must name a consent"),
        (lambda d: d["mappings"].append("OPTED_IN"), "mappings[4] must be an object"),
    ],
)
def test_each_invalid_field_is_named_in_the_error(change, message):
    doc = connector_document("EU-01")
    doc["authentication"]["api_key"] = SECRET_KEY
    change(doc)
    assert message in _problems(doc)


def test_several_problems_are_reported_together():
    doc = connector_document("nowhere", type_id="x", upsert_mode=1)
    problems = _problems(doc)
    assert "type_id" in problems and "authentication.server" in problems and "upsert_mode" in problems


DIDOMI_DOCS_EXAMPLE = """{
  "type_id": "braze",
  "authentication": {
    "api_key": "braze-key-3c7f1d9e-should-never-be-printed", // your Braze REST API key
    "server": "EU-01",
  },
  "mappings": [{"id": "OPTED_IN", "value": "consents_purposes_newsletter_enabled"}],
}"""


def test_the_commented_example_from_didomis_docs_gets_a_message_saying_what_to_remove():
    message = _problems(DIDOMI_DOCS_EXAMPLE)
    assert "line 4 has a // comment" in message and "remove the comments" in message


def test_a_trailing_comma_is_reported_with_its_line():
    text = DIDOMI_DOCS_EXAMPLE.replace(" // your Braze REST API key", "")
    assert "line 5 has a trailing comma" in _problems(text)


@pytest.mark.parametrize("text", ["", "[]", "null", '"braze"', "{"])
def test_a_document_that_is_not_a_json_object_is_refused(text):
    assert "connector document" in _problems(text)
