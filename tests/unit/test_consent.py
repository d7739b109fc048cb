"""Resolving mapping values against a Didomi consent state: every value form the README lists."""

import pytest

from didomi_braze.domain.consent import parse_consents
from didomi_braze.domain.errors import InvalidWebhook

STATE = parse_consents(
    {
        "purposes": [
            {"id": "newsletter", "enabled": True},
            {"id": "ads", "enabled": False},
            {"id": "analytics", "enabled": None},
            {
                "id": "product_updates",
                "enabled": None,
                "preferences": [
                    {
                        "id": "frequency_pref",
                        "enabled": True,
                        "channels": [{"id": "email", "enabled": False}, {"id": "sms", "enabled": None}],
                    }
                ],
                "values": {"frequency": {"value": "weekly,monthly"}, "topics": {"value": ""}, "unset": {"value": None}},
            },
            {"id": "offers", "values": {"topics": {"value": "sales"}, "topics_sales": {"value": "eu"}}},
        ],
        "channels": [{"id": "email", "enabled": True}, {"id": "push_web", "enabled": False}],
    },
    "consents",
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("consents_purposes_newsletter_enabled", True),
        ("consents_purposes_ads_enabled", False),
        ("consents_purposes_analytics_enabled", None),  # null: no specific choice
        ("consents_purposes_missing_enabled", None),  # absent purpose
        ("consents_purposes_product_updates_preferences_frequency_pref_enabled", True),  # v1 preference
        ("consents_purposes_product_updates_preferences_frequency_pref_channel_email_enabled", False),
        ("consents_purposes_product_updates_preferences_frequency_pref_channel_sms_enabled", None),
        ("consents_purposes_product_updates_values_frequency_weekly_enabled", True),  # v2: selected
        ("consents_purposes_product_updates_values_frequency_monthly_enabled", True),
        ("consents_purposes_product_updates_values_frequency_daily_enabled", False),  # v2: pref present without it
        ("consents_purposes_product_updates_values_topics_sales_enabled", False),  # empty selection
        ("consents_purposes_product_updates_values_unset_x_enabled", None),  # "value": null is no choice
        ("consents_purposes_product_updates_values_absent_weekly_enabled", None),  # v2: pref absent
        ("consents_channels_email_enabled", True),
        ("consents_channels_push_web_enabled", False),  # channel id with an underscore
        ("consents_channels_sms_enabled", None),
    ],
)
def test_each_value_form_resolves_to_true_false_or_null(value, expected):
    assert STATE.resolve(value) is expected


def test_ids_with_underscores_are_never_split_and_the_longest_preference_wins():
    # `topics_sales` + value `eu` must not be read as preference `topics` + value `sales_eu`.
    assert STATE.resolve("consents_purposes_offers_values_topics_sales_eu_enabled") is True
    assert STATE.resolve("consents_purposes_offers_values_topics_sales_enabled") is True
    assert STATE.resolve("consents_purposes_offers_values_topics_news_enabled") is False


def test_absent_consents_resolve_everything_to_null():
    assert parse_consents(None, "consents").resolve("consents_purposes_newsletter_enabled") is None
    assert parse_consents({}, "consents").resolve("consents_channels_email_enabled") is None


@pytest.mark.parametrize(
    ("consents", "read", "path"),
    [
        ({"purposes": {"id": "x"}}, "consents_purposes_x_enabled", "consents.purposes must be a list"),
        (
            {"purposes": [{"id": "n", "enabled": "true"}]},
            "consents_purposes_n_enabled",
            "consents.purposes[0].enabled must be true, false or null",
        ),
        (
            {"purposes": [{"id": "n", "values": {"t": "a,b"}}]},
            "consents_purposes_n_values_t_a_enabled",
            'consents.purposes[0].values.t must be an object like {"value": "a,b"}',
        ),
        (
            {"purposes": [{"id": "n", "values": {"t": {"value": 3}}}]},
            "consents_purposes_n_values_t_a_enabled",
            "consents.purposes[0].values.t.value must be a string",
        ),
        (
            {"purposes": [{"id": "n", "values": ["t"]}]},
            "consents_purposes_n_values_t_a_enabled",
            "consents.purposes[0].values must be an object",
        ),
        (
            {"purposes": [{"id": "n", "preferences": [{"id": "p", "channels": [{"id": "e", "enabled": 1}]}]}]},
            "consents_purposes_n_preferences_p_channel_e_enabled",
            "consents.purposes[0].preferences[0].channels[0].enabled must be true, false or null",
        ),
        ({"channels": "email"}, "consents_channels_email_enabled", "consents.channels must be a list"),
        ([], "consents_channels_email_enabled", "consents must be an object"),
    ],
)
def test_a_malformed_part_a_mapping_reads_is_rejected_with_its_path(consents, read, path):
    state = parse_consents(consents, "consents")
    with pytest.raises(InvalidWebhook) as raised:
        state.resolve(read)
    assert str(raised.value) == path


def test_malformed_parts_no_mapping_reads_do_not_matter():
    # Be liberal: Didomi may add fields, and one broken purpose must not block a change the connector can apply.
    state = parse_consents(
        {
            "purposes": [
                {"id": "analytics", "enabled": "yes", "values": "all", "preferences": "x"},
                "not-a-purpose",
                {"enabled": True},  # no id: no mapping can name it
                {"id": 7, "enabled": True},
                {"id": "newsletter", "enabled": False},
            ],
            "channels": "unexpected",
            "tcfcs": 42,
        },
        "consents",
    )
    assert state.resolve("consents_purposes_newsletter_enabled") is False
    assert state.resolve("consents_purposes_offers_values_topics_sales_enabled") is None


def test_the_first_entry_with_an_id_is_the_one_a_mapping_reads():
    state = parse_consents({"purposes": [{"id": "n", "enabled": True}, {"id": "n", "enabled": "junk"}]}, "consents")
    assert state.resolve("consents_purposes_n_enabled") is True
