"""Positions and the merged state: an older fact never replaces a newer one, input by input."""

from decimal import Decimal

import pytest

from didomi_braze.domain.ordering import Position, StoredInput, merge, newest, quietly, stored_older

T1, T2, T3 = "2026-05-01T00:00:00.000000Z", "2026-05-02T00:00:00.000000Z", "2026-05-03T00:00:00.000000Z"


def event(time, entity="ev"):
    return Position(time, None, entity)


def user(time, version, entity="didomi-user"):
    return Position(time, Decimal(version), entity)


def test_a_later_time_is_newer_whatever_the_entity_id():
    assert event(T2, "a").is_newer_than(event(T1, "z"))
    assert not event(T1, "z").is_newer_than(event(T2, "a"))


def test_between_two_states_of_one_didomi_user_the_higher_version_wins_whatever_the_clocks():
    # v6 stamped one millisecond before v5: the version says which is newer (DESIGN §4)
    v5 = user("2026-05-02T00:00:00.001000Z", 5)
    v6 = user("2026-05-02T00:00:00.000000Z", 6)
    assert v6.is_newer_than(v5) and not v5.is_newer_than(v6)


def test_versions_of_different_didomi_users_and_consent_events_compare_by_time():
    assert user(T2, 1, "someone-else").is_newer_than(user(T1, 9))
    assert event(T2).is_newer_than(user(T1, 9)) and user(T3, 1).is_newer_than(event(T2))


def test_position_keys_sort_by_time_then_version_then_entity():
    assert user(T1, 4).key < user(T1, 5).key < user(T1, 10).key
    assert user(T1, "7.0").key == user(T1, 7).key  # Didomi's schema types version as a number


def test_a_position_survives_its_round_trip_through_a_message():
    for position in (event(T1), user(T2, "7.5")):
        assert Position.from_dict(position.to_dict()) == position


def stored(value, position, quiet=False):
    return StoredInput(value, position, quiet)


def test_merge_takes_newer_inputs_keeps_the_others_and_says_which_was_which():
    state = {"a": stored(True, event(T2)), "b": stored(False, event(T2)), "c": stored(True, event(T1))}
    carried = {
        "a": stored(False, event(T1)),
        "b": stored(False, event(T2)),
        "c": stored(False, event(T3)),
        "d": stored(True, event(T3)),
    }
    result = merge(state, carried)
    assert result.state == {"a": state["a"], "b": state["b"], "c": carried["c"], "d": carried["d"]}
    assert set(result.newer) == {"c", "d"} and result.seen == {"b"} and result.older == {"a"}


def test_an_older_fact_held_only_by_a_quiet_newer_fact_of_the_same_value_counts_as_seen():
    # The newer fact sent nothing to Braze: the value's delivery rests on the older change, which may have died.
    quiet = {"a": stored(False, event(T3), quiet=True)}
    assert merge(quiet, {"a": stored(False, event(T1))}).seen == {"a"}
    assert merge(quiet, {"a": stored(True, event(T1))}).older == {"a"}  # a different value is simply older
    assert merge({"a": stored(False, event(T3))}, {"a": stored(False, event(T1))}).older == {"a"}


def test_quietly_marks_inputs_without_moving_them():
    assert quietly({"a": stored(True, event(T1))}) == {"a": stored(True, event(T1), quiet=True)}


def test_newest_combines_changes_of_one_user_input_by_input():
    combined = newest(
        [
            {"a": stored(True, event(T2)), "b": stored(True, event(T1))},
            {"a": stored(False, event(T1)), "b": stored(False, event(T3))},
        ]
    )
    assert combined == {"a": stored(True, event(T2)), "b": stored(False, event(T3))}


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (None, event(T1), True),
        (event(T1), event(T2), True),
        (event(T2), event(T2), False),  # the same change again: merged exactly, its quiet mark kept
        (event(T2), event(T1), False),
        (user(T1, 5), user(T2, 6), True),
        (user(T2, 5), user(T1, 6), False),  # a false alarm: the exact merge then takes v6
        (user(T1, 6), user(T2, 5), False),  # time says newer, version says older
        (user(T1, 6, "other"), user(T2, 5), True),
        (event(T1), user(T2, 1), True),
    ],
)
def test_the_state_table_check_never_lets_an_older_fact_or_the_same_fact_again_through(current, incoming, expected):
    held = stored(True, current) if current else None
    assert stored_older(held, incoming) is expected
    if expected and held is not None:
        assert incoming.is_newer_than(held.position)  # whatever the check lets through, the exact rule calls newer
