"""`didomi-braze backfill` against a stack on moto, Didomi's emulator and Braze's emulator on 127.0.0.1, and the
retry worker draining the queue in-process. Time is injected: no test sleeps through a delay."""

import io
import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from freezegun import freeze_time

from didomi_braze.adapters.didomi_api import Urllib3Transport
from didomi_braze.domain.retry import PendingChange
from didomi_braze_ops import backfill
from didomi_braze_ops.cli import _parser, main
from sandbox.didomi_emulator import DidomiEmulator
from tests.integration.conftest import REGION, call_webhook, event_for
from tests.integration.operator import OperatorAws, deploy, run
from tests.samples import EVENTS

KEY, SECRET, ORG = "didomi-key-backfill-4c1e", "didomi-secret-backfill-8a93d2", "org-backfill"
WEBHOOK_LEASE_SECONDS = 6  # with the tests' Braze timeouts (2 s + 0.5 s, rounded up, + 3 s)
NEWSLETTER_ON = {"purposes": [{"id": "newsletter", "enabled": True}], "channels": [], "vendors": {}}
NEWSLETTER_OFF = {"purposes": [{"id": "newsletter", "enabled": False}], "channels": [], "vendors": {}}


class Pace(backfill.Pace):
    """Time that moves only when the run sleeps; every sleep is recorded."""

    def __init__(self):
        self.now = 1_780_000_000.0
        self.slept: list[float] = []
        super().__init__(sleep=self._sleep, clock=lambda: self.now)

    def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def didomi(monkeypatch):
    with DidomiEmulator(organization_id=ORG, api_key=KEY, api_secret=SECRET, page_size=10) as emulator:
        monkeypatch.setenv("DIDOMI_API_URL", emulator.url)
        monkeypatch.setenv("DIDOMI_ALLOW_LOOPBACK", "true")
        yield emulator


@pytest.fixture
def stack(aws):
    return deploy(aws)


@pytest.fixture
def secret(aws):
    """A Didomi secret the operator made (the stack here was deployed without EnableBackfill)."""
    value = {"key": KEY, "secret": SECRET, "organization_id": ORG}
    return aws.secrets.create_secret(Name="didomi/backfill", SecretString=json.dumps(value))["ARN"]


def backfill_run(aws, stack, *argv, pace=None, stop=None, transport=None):
    """The command as `main` runs it, with time, Ctrl-C and Didomi's transport injected."""
    args = _parser().parse_args(["backfill", "--stack", stack, *argv])
    out, err = io.StringIO(), io.StringIO()
    code = backfill.command(
        args, lambda region: OperatorAws(aws), out, pace=pace or Pace(), stop=stop, transport=transport, err=err
    )
    return code, out.getvalue(), err.getvalue()


def add_users(didomi, count, consents=NEWSLETTER_ON, first=0):
    return [
        didomi.add_user(f"customer-{n}", consents, version=2, updated_at="2026-03-01T10:00:00.000Z")
        for n in range(first, first + count)
    ]


def queued(aws) -> list[PendingChange]:
    return [PendingChange.from_json(m["Body"]) for m in aws.messages(aws.retry_queue)]


def run_id(out: str) -> str:
    return out.split("Backfill run ", 1)[1].split(":", 1)[0]


def checkpoint(aws, run: str) -> dict:
    item = aws.dynamodb.get_item(TableName=aws.stack.table_names["StateTable"], Key={"user_key": {"S": f"backfill#{run}"}})
    return {k: next(iter(v.values())) for k, v in item.get("Item", {}).items()}


def drain(worker) -> None:
    while worker.poll_once(wait_seconds=0):
        pass


# -- the whole way: Didomi → queue → worker → Braze -------------------------------------------------------------------
def test_every_didomi_user_reaches_braze_and_the_run_counts_what_the_worker_settled(aws, braze, didomi, stack, secret, worker):
    add_users(didomi, 23)  # three pages of ten
    didomi.add_user("customer-no-consent", {"purposes": [{"id": "marketing", "enabled": True}]})
    for n in range(23):
        braze.add_user(f"external_id:customer-{n}")

    code, out, err = backfill_run(aws, stack, "--didomi-secret-id", secret)

    assert (code, err) == (0, "")
    run = run_id(out)
    messages = queued(aws)
    assert sorted(m.change.identity.value for m in messages) == sorted(f"customer-{n}" for n in range(23))
    assert {m.run for m in messages} == {run}
    assert "24 users read, 23 queued" in out and "not sent: 1 no_change" in out
    drain(worker)
    assert all(braze.state(f"external_id:customer-{n}").email_subscribe == "opted_in" for n in range(23))
    follow_out = io.StringIO()
    assert (
        backfill.follow(backfill.BackfillRunTable(aws.dynamodb, aws.stack.table_names["StateTable"]), run, follow_out, Pace())
        == 0
    )
    assert f"run {run}: 24 users read, 23 queued, 23 applied, 0 skipped, 0 parked (finished reading)" in follow_out.getvalue()
    assert "Every queued change is settled." in follow_out.getvalue()


def test_follow_waits_while_the_worker_is_behind_and_stops_when_all_is_settled(aws, braze, didomi, stack, secret, worker):
    add_users(didomi, 3)
    for n in range(3):
        braze.add_user(f"external_id:customer-{n}")
    code, out, _ = backfill_run(aws, stack, "--didomi-secret-id", secret)
    pace = Pace()
    pace.sleep = lambda seconds: (pace.slept.append(seconds), drain(worker))  # the worker runs while we wait

    code, follow_out, _ = backfill_run(aws, stack, "--resume", run_id(out), "--follow", "--didomi-secret-id", secret, pace=pace)

    assert code == 0
    assert pace.slept == [backfill.FOLLOW_SECONDS]
    lines = follow_out.splitlines()
    assert "3 queued, 0 applied" in lines[1] and "3 queued, 3 applied" in lines[2]


# -- ordering ------------------------------------------------------------------------------------------------------
def test_a_backfill_never_overwrites_a_newer_webhook_change(aws, braze, didomi, stack, secret, worker):
    # Given Didomi's list still holds customer-42 at version 3 (opted in), and a webhook at version 7 (newsletter
    # withdrawn, the sample user.updated) has reached Braze already,
    didomi.add_user("customer-42", NEWSLETTER_ON, version=3, updated_at="2026-04-01T00:00:00.000Z")
    with freeze_time(datetime.now(UTC)) as clock:
        assert call_webhook(event_for("customer-42", "user-updated"))[0] == 200
        assert braze.state("external_id:customer-42").email_subscribe == "unsubscribed"
        calls = len(braze.track_requests())
        clock.tick(WEBHOOK_LEASE_SECONDS + 1)  # a delivered webhook keeps its lease until it runs out

        # when the backfill queues the older state and the worker settles it,
        code, out, _ = backfill_run(aws, stack, "--didomi-secret-id", secret)
        drain(worker)

    # then Braze keeps the newer value, no call was made, and the run counts the change skipped.
    assert code == 0
    assert braze.state("external_id:customer-42").email_subscribe == "unsubscribed"
    assert len(braze.track_requests()) == calls
    assert checkpoint(aws, run_id(out))["skipped"] == "1"


# -- interruption and resume ---------------------------------------------------------------------------------------
def test_ctrl_c_then_resume_queues_every_user_exactly_once(aws, didomi, stack, secret):
    add_users(didomi, 37)
    reads = iter(range(1000))
    code, out, _ = backfill_run(aws, stack, "--didomi-secret-id", secret, stop=lambda: next(reads) == 14)  # mid-page 2

    assert code == backfill.EXIT_STOPPED
    run = run_id(out)
    assert f"Resume with: didomi-braze backfill --stack {stack} --resume {run} --didomi-secret-id {secret}" in out
    assert len(queued(aws)) == 15
    assert checkpoint(aws, run)["done_in_page"] == "5"

    code, out, _ = backfill_run(aws, stack, "--resume", run, "--didomi-secret-id", secret)

    assert code == 0
    counts = Counter(m.change.identity.value for m in queued(aws))
    assert counts == Counter({f"customer-{n}": 1 for n in range(37)})
    assert "37 users read, 37 queued" in out


class FaultsFromPage:
    """The HTTP transport, with Didomi answering `faults` to the tries for page `page` of the users."""

    def __init__(self, didomi, page: int, *faults: str):
        self.inner, self.didomi, self.page, self.faults, self.pages = Urllib3Transport(), didomi, page, faults, 0

    def __call__(self, method, url, headers, body):
        if "/v1/consents/users" in url:
            self.pages += 1
            if self.pages == self.page:
                self.didomi.fail_next(*self.faults, path="/v1/consents/users")
        return self.inner(method, url, headers, body)


def test_didomi_failing_past_the_retries_stops_with_the_resume_command_and_resume_skips_no_one(aws, didomi, stack, secret):
    add_users(didomi, 25)
    pace = Pace()

    code, out, err = backfill_run(
        aws, stack, "--didomi-secret-id", secret, pace=pace, transport=FaultsFromPage(didomi, 2, *["503"] * 6)
    )

    assert code == backfill.EXIT_STOPPED
    assert pace.slept == [1, 2, 4, 8, 16]
    assert "didomi server error (503)" in err and "gave up after 5 retries" in err
    run = run_id(out)
    assert f"Resume with: didomi-braze backfill --stack {stack} --resume {run}" in out
    assert len(queued(aws)) == 10

    code, out, _ = backfill_run(aws, stack, "--resume", run, "--didomi-secret-id", secret)

    assert code == 0
    assert Counter(m.change.identity.value for m in queued(aws)) == Counter({f"customer-{n}": 1 for n in range(25)})


def test_five_server_errors_then_an_answer_go_on_without_stopping(aws, didomi, stack, secret):
    add_users(didomi, 12)
    pace = Pace()

    code, _, _ = backfill_run(
        aws, stack, "--didomi-secret-id", secret, pace=pace, transport=FaultsFromPage(didomi, 2, *["500"] * 5)
    )

    assert code == 0
    assert pace.slept == [1, 2, 4, 8, 16]
    assert len(queued(aws)) == 12


# -- Didomi's answers a user must act on ---------------------------------------------------------------------------
def test_a_refused_key_names_the_secret_to_fix_and_never_prints_the_key(aws, didomi, stack):
    wrong = {"key": "didomi-key-revoked-77", "secret": "didomi-secret-revoked-991", "organization_id": ORG}
    secret = aws.secrets.create_secret(Name="didomi/old", SecretString=json.dumps(wrong))["ARN"]

    code, out, err = backfill_run(aws, stack, "--didomi-secret-id", secret)

    assert code == 2
    assert f"put a valid key and secret in secret {secret}" in err
    assert "revoked" not in out + err
    assert queued(aws) == []


def test_a_token_refused_after_a_new_session_names_the_secret(aws, didomi, stack, secret):
    add_users(didomi, 3)
    didomi.fail_next("401", "401", path="/v1/consents/users")

    code, _, err = backfill_run(aws, stack, "--didomi-secret-id", secret)

    assert code == 2
    assert "Didomi refused the API key (401)" in err and secret in err
    assert KEY not in err and SECRET not in err


def test_a_key_of_another_organisation_hints_at_the_organisation_id(aws, didomi, stack):
    other = {"key": KEY, "secret": SECRET, "organization_id": "org-typo"}
    secret = aws.secrets.create_secret(Name="didomi/typo", SecretString=json.dumps(other))["ARN"]

    code, _, err = backfill_run(aws, stack, "--didomi-secret-id", secret)

    assert code == 2
    assert f"Didomi refused access to organisation org-typo (403): check organization_id in secret {secret}" in err


@pytest.mark.parametrize(("retry_after", "waited"), [(7, 7.0), (None, 15.0)])
def test_a_rate_limit_waits_for_retry_after_or_fifteen_seconds_then_goes_on(aws, didomi, stack, secret, retry_after, waited):
    add_users(didomi, 3)
    didomi.retry_after = retry_after
    didomi.fail_next("429", path="/v1/consents/users")
    pace = Pace()

    code, out, _ = backfill_run(aws, stack, "--didomi-secret-id", secret, pace=pace)

    assert code == 0
    assert pace.slept == [waited]
    assert f"Didomi's rate limit (429): waiting {waited:.0f} s" in out
    assert len(queued(aws)) == 3


# -- the dry run ---------------------------------------------------------------------------------------------------
def test_the_dry_run_shows_braze_requests_and_writes_nothing(aws, braze, didomi, stack, secret):
    add_users(didomi, 15, consents=NEWSLETTER_OFF)

    code, out, _ = backfill_run(aws, stack, "--didomi-secret-id", secret, "--dry-run", "--limit", "4", "--show", "2")

    assert code == 0
    requests = [line for line in out.splitlines() if line.startswith("POST ")]
    assert requests == [
        f"POST {braze.url}/users/track "
        f'{{"attributes": [{{"external_id": "customer-{n}", "_update_existing_only": true, "email_subscribe": "unsubscribed"}}]}}'
        for n in (0, 1)
    ]
    assert "Dry run: 4 users read, 4 would be queued." in out
    assert queued(aws) == []
    table = aws.dynamodb.scan(TableName=aws.stack.table_names["StateTable"])
    assert table["Items"] == []
    assert len([r for r in didomi.requests if r.path == "/v1/consents/users"]) == 1  # the limit stops the paging


# -- a users file --------------------------------------------------------------------------------------------------
def test_a_file_run_queues_its_users_and_needs_no_didomi_secret(aws, stack):
    code, out, _ = backfill_run(aws, stack, "--file", str(EVENTS / "backfill-users.jsonl"))

    assert code == 0
    assert sorted(m.change.identity.value for m in queued(aws)) == ["customer-42", "customer-7", "customer-9"]
    assert "5 users read, 3 queued" in out and "1 no_change" in out and "1 no_user_id" in out
    assert checkpoint(aws, run_id(out))["line"] == "5"


def test_a_malformed_line_is_one_clear_error_and_exit_2(aws, stack, tmp_path, capsys):
    lines = (EVENTS / "backfill-users.jsonl").read_text().splitlines()
    broken = tmp_path / "users.jsonl"
    broken.write_text("\n".join([*lines[:2], lines[2][:40], *lines[3:]]) + "\n")

    code, out, err = run(lambda region: OperatorAws(aws), "backfill", "--stack", stack, "--file", str(broken), capsys=capsys)

    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"error: {broken} line 3: not JSON (")
    assert "fix or remove that line" in err
    assert sorted(m.change.identity.value for m in queued(aws)) == ["customer-42", "customer-7"]  # the lines before it
    assert "Resume with:" in out


def test_a_malformed_line_in_a_dry_run_is_one_error_and_exit_2(aws, stack, tmp_path, capsys):
    broken = tmp_path / "users.jsonl"
    broken.write_text('{"id": "u-1",\n')

    code, out, err = run(
        lambda region: OperatorAws(aws), "backfill", "--stack", stack, "--file", str(broken), "--dry-run", capsys=capsys
    )

    assert (code, err.count("\n")) == (2, 1)
    assert "line 1: not JSON" in err


def test_without_a_didomi_secret_the_error_says_how_to_get_one(aws, stack, capsys):
    code, _, err = run(lambda region: OperatorAws(aws), "backfill", "--stack", stack, capsys=capsys)

    assert code == 2
    assert "EnableBackfill=true" in err and "--didomi-secret-id" in err


def test_a_limit_below_one_is_refused_before_anything_is_read():
    assert main(["backfill", "--stack", "s", "--limit", "0"], aws=lambda region: None) == 2


def test_the_template_s_enable_backfill_creates_the_didomi_secret_and_its_output():
    from sandbox.template import Stack, load_template

    template = load_template()
    defaults = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    for parameters, expected in (({}, False), ({"EnableBackfill": "true"}, True), ({"EnableBrazeCurrents": "true"}, True)):
        stack = Stack(template=template, parameters={**defaults, **parameters}, region=REGION, name="s")
        assert ("DidomiSecret" in stack.resources("AWS::SecretsManager::Secret")) is expected
        assert stack.condition(template["Outputs"]["DidomiSecretArn"]["Condition"]) is expected


# -- the worker's counts -------------------------------------------------------------------------------------------
def test_a_change_braze_rejects_is_parked_and_counted_parked_for_its_run(aws, braze, didomi, stack, secret, worker):
    add_users(didomi, 2)
    for n in range(2):
        braze.add_user(f"external_id:customer-{n}")
    code, out, _ = backfill_run(aws, stack, "--didomi-secret-id", secret)
    braze.fail_next("400", "400", "400")  # the request for both users, then each user's own

    drain(worker)

    assert code == 0
    counts = checkpoint(aws, run_id(out))
    assert (counts["parked"], counts.get("applied")) == ("2", None)
    assert {m["MessageAttributes"]["category"]["StringValue"] for m in aws.messages(aws.dead_letter_queue)} == {"braze_rejected"}


def test_a_retry_without_a_run_writes_no_run_item(aws, braze, worker):
    braze.fail_next("503", "503")  # the request and its second try
    assert call_webhook(event_for("customer-7"))[0] == 202  # Braze failed: the change waits on the retry queue

    with freeze_time(datetime.now(UTC)) as clock:
        for _ in range(40):
            clock.tick(1)
            drain(worker)

    assert braze.state("external_id:customer-7") is not None
    items = aws.dynamodb.scan(TableName=aws.stack.table_names["StateTable"])["Items"]
    assert [i["user_key"]["S"] for i in items if i["user_key"]["S"].startswith("backfill#")] == []
