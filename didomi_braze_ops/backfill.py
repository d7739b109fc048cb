"""`backfill`: bring the users Didomi already has into Braze, through the deployed stack's retry queue and worker.

The laptop only reads users (Didomi's API, or a JSON-lines file of Didomi user objects), maps each one as a
`user.updated` webhook carrying its whole state would be mapped (domain/backfill.py), and queues the change on the
retry queue, ten per `SendMessageBatch`. The retry worker delivers them like any other change: merged into the
user's state, behind the ordering guard, so a backfill never overwrites a newer change.

A run's checkpoint (`backfill#<run>` in the state table) is written after every batch queued: Didomi's cursor and
how many users of that page are done (or the file's line), users read and changes queued. The worker adds the
applied, skipped and parked counts. `--resume RUN` continues from the checkpoint; `--follow` shows the counts until
every queued change is settled. Ctrl-C finishes the batch in hand, writes the checkpoint and prints the resume
command (a second Ctrl-C stops at once).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError

from didomi_braze.adapters.backfill_runs import BackfillRunTable
from didomi_braze.adapters.didomi_api import DidomiClient, Transport, Urllib3Transport
from didomi_braze.domain.backfill import BackfillInputError, BackfillRuns, Checkpoint, read_users_file, user_change
from didomi_braze.domain.braze import attributes_object
from didomi_braze.domain.connector import ConnectorConfig
from didomi_braze.domain.didomi_api import (
    PERMANENT,
    RATE_LIMITED,
    DidomiCredentials,
    didomi_base_url,
    parse_didomi_secret,
)
from didomi_braze.domain.errors import DidomiUnavailable, InvalidWebhook, StateUnavailable
from didomi_braze.domain.mapping import Change, Skip, desired, values_of
from didomi_braze.domain.retry import PendingChange, iso_utc

from .aws import Aws, OperatorError, describe, stack_outputs
from .connector import deployed_config

API_SOURCE = "didomi-api"
FILE_SOURCE = "file:"
BATCH = 10  # SendMessageBatch's maximum
RETRY_DELAYS = (1, 2, 4, 8, 16)  # Didomi 5xx and connection errors, then the run stops with its resume command
QUEUE_RETRY_DELAYS = (1, 2, 4)  # entries SQS refused in a batch
FOLLOW_SECONDS = 5.0
EXIT_STOPPED = 1  # stopped part way: the resume command is printed


class Stopped(Exception):
    """The run stopped part way; the checkpoint is written and `--resume` continues it."""

    def __init__(self, reason: str, exit_code: int = EXIT_STOPPED):
        super().__init__(reason)
        self.exit_code = exit_code


@dataclass
class Pace:
    """Time, injectable so that tests never sleep through a real delay."""

    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time


# -- sources: (user, where the checkpoint stands once this user is handled) ------------------------------------------
def api_users(
    client: DidomiClient,
    checkpoint: Checkpoint,
    secret_id: str,
    organization_id: str,
    pace: Pace,
    out: TextIO,
) -> Iterator[tuple[dict, dict]]:
    cursor, skip = checkpoint.cursor, checkpoint.done_in_page
    while True:
        page, following = _page(client, cursor, checkpoint.regulation, secret_id, organization_id, pace, out)
        for index, user in enumerate(page):
            if index < skip:
                continue
            last = index + 1 == len(page)
            yield (
                user,
                (
                    {"cursor": following, "done_in_page": 0}
                    if last and following
                    else {"cursor": cursor, "done_in_page": index + 1}
                ),
            )
        if following is None:
            return
        cursor, skip = following, 0


def _page(
    client: DidomiClient, cursor: str | None, regulation: str, secret_id: str, organization_id: str, pace: Pace, out: TextIO
) -> tuple[list[dict], str | None]:
    """One page, waiting out Didomi's rate limit and retrying its failures; Stopped when retrying cannot help."""
    failures = 0
    while True:
        try:
            return client.user_page(cursor, regulation)
        except DidomiUnavailable as exc:
            answer = exc.answer
        if answer.status == 401 or answer.refresh_credentials:
            raise Stopped(
                f"Didomi refused the API key ({answer.status}): put a valid key and secret in secret {secret_id} "
                '(JSON {"key", "secret", "organization_id"}), then resume',
                exit_code=2,
            )
        if answer.status == 403:
            raise Stopped(
                f"Didomi refused access to organisation {organization_id} (403): check organization_id in secret "
                f"{secret_id}; it must be the organisation the API key belongs to",
                exit_code=2,
            )
        if answer.kind == RATE_LIMITED:
            wait = max(1.0, (answer.retry_at or pace.clock()) - pace.clock())
            print(f"Didomi's rate limit (429): waiting {wait:.0f} s", file=out, flush=True)
            pace.sleep(wait)
            continue
        if answer.kind == PERMANENT:
            raise Stopped(answer.reason, exit_code=2)
        if failures == len(RETRY_DELAYS):
            raise Stopped(f"{answer.reason}; gave up after {failures} retries")
        delay = RETRY_DELAYS[failures]
        failures += 1
        print(f"{answer.reason}: retry {failures} of {len(RETRY_DELAYS)} in {delay} s", file=out, flush=True)
        pace.sleep(delay)


def file_users(path: Path, checkpoint: Checkpoint) -> Iterator[tuple[dict, dict]]:
    try:
        with path.open(encoding="utf-8") as lines:
            for number, user in read_users_file(lines, str(path), checkpoint.line):
                yield user, {"line": number}
    except BackfillInputError as exc:
        raise Stopped(f"{exc}; fix or remove that line", exit_code=2) from None
    except UnicodeDecodeError:
        raise OperatorError(f"{path} is not UTF-8 text: expected one Didomi user object per line (JSON lines)") from None
    except OSError as exc:
        raise OperatorError(f"cannot read {path}: {exc.strerror or exc}") from None


# -- queueing ----------------------------------------------------------------------------------------------------
class RetryQueueSender:
    """`SendMessageBatch` to the retry queue, ten per call; entries SQS refused are sent again a few times."""

    def __init__(self, sqs, url: str, pace: Pace):
        self._sqs, self._url, self._pace = sqs, url, pace

    def send(self, bodies: list[str]) -> None:
        """Raises Stopped naming how many of the leading bodies were queued when some could not be."""
        waiting = {str(i): body for i, body in enumerate(bodies)}
        problem = ""
        for delay in (*QUEUE_RETRY_DELAYS, None):
            try:
                answer = self._sqs.send_message_batch(
                    QueueUrl=self._url, Entries=[{"Id": i, "MessageBody": b} for i, b in waiting.items()]
                )
                failed = {f["Id"]: f.get("Message") or f.get("Code", "refused") for f in answer.get("Failed", [])}
            except (ClientError, BotoCoreError) as exc:
                failed = dict.fromkeys(waiting, describe(exc))
            waiting = {i: waiting[i] for i in waiting if i in failed}
            if not waiting:
                return
            problem = next(iter(failed.values()))
            if delay is not None:
                self._pace.sleep(delay)
        queued = min(int(i) for i in waiting)
        raise QueueRefused(queued, f"the retry queue refused {len(waiting)} message(s): {problem}")


class QueueRefused(Exception):
    def __init__(self, queued: int, reason: str):
        super().__init__(reason)
        self.queued = queued  # the leading bodies certainly queued


# -- the run -------------------------------------------------------------------------------------------------------
class Run:
    """Reads, maps and queues; the checkpoint is saved after each batch, so that it never runs ahead of the queue."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        config: ConnectorConfig,
        runs: BackfillRuns,
        sender: RetryQueueSender,
        out: TextIO,
        pace: Pace,
        stop: Callable[[], bool],
    ):
        self.saved = checkpoint
        self.config = config
        self.runs, self.sender, self.out, self.pace, self.stop = runs, sender, out, pace, stop
        self.reasons: Counter[str] = Counter()
        self.broken = False  # a batch or a checkpoint could not be written: the run stops where it certainly is

    def go(self, users: Iterator[tuple[dict, dict]], limit: int | None) -> Checkpoint:
        working = self.saved
        batch: list[tuple[str, Checkpoint]] = []  # message body, and the checkpoint once it is queued
        read_now = 0
        try:
            for user, mark in users:
                working = replace(working, read=working.read + 1, **mark)
                read_now += 1
                outcome = self._change(user)
                if isinstance(outcome, Change):
                    working = replace(working, queued=working.queued + 1)
                    batch.append((self._message(outcome), working))
                else:
                    working = replace(working, not_sent=working.not_sent + 1)
                if len(batch) == BATCH:
                    self._flush(batch, working)
                if self.stop() or (limit is not None and read_now >= limit):
                    break
            else:
                working = replace(working, finished=True)
        finally:  # the batch in hand is queued and checkpointed, whatever stopped the reading
            self._flush(batch, working)
        return self.saved

    def _change(self, user: dict) -> Change | None:
        try:
            outcome = user_change(user, self.config, self.saved.regulation)
        except InvalidWebhook as exc:
            self.reasons["malformed"] += 1
            user_id = user.get("id") if isinstance(user.get("id"), str) else "-"
            print(f"user {user_id[:64]}: not sent, {exc}", file=self.out)
            return None
        if isinstance(outcome, Skip):
            self.reasons[outcome.reason] += 1
            return None
        return outcome

    def _message(self, change: Change) -> str:
        return PendingChange(change, None, "backfill", iso_utc(self.pace.clock()), run=self.saved.run).to_json()

    def _flush(self, batch: list[tuple[str, Checkpoint]], working: Checkpoint) -> None:
        """Queue the batch (emptied once queued) and checkpoint. After a failure nothing more is queued or saved, so
        that the checkpoint stays at what the queue certainly holds."""
        if self.broken:
            return
        try:
            if batch:
                try:
                    self.sender.send([body for body, _ in batch])
                except QueueRefused as exc:
                    # Only what was certainly queued is checkpointed; the batch's later users are read again on resume.
                    if exc.queued:
                        self._save(batch[exc.queued - 1][1])
                    raise Stopped(str(exc)) from None
                batch.clear()
            if working != self.saved:
                self._save(working)
        except Stopped:
            self.broken = True
            raise

    def _save(self, checkpoint: Checkpoint) -> None:
        try:
            self.runs.save(checkpoint)
        except StateUnavailable as exc:
            raise Stopped(f"cannot write the checkpoint to the state table: {exc}") from None
        self.saved = checkpoint


# -- the command ---------------------------------------------------------------------------------------------------
def command(
    args,
    aws_factory: Callable[[str | None], Aws],
    out: TextIO,
    pace: Pace | None = None,
    stop: Callable[[], bool] | None = None,
    transport: Transport | None = None,
    run_id: str | None = None,
    err: TextIO | None = None,
) -> int:
    pace, err = pace or Pace(), err or sys.stderr
    if args.limit is not None and args.limit < 1:
        raise OperatorError("--limit must be at least 1")
    if args.show < 0:
        raise OperatorError("--show must be 0 or more")
    if args.dry_run and args.resume:
        raise OperatorError("--dry-run reads from the start and writes nothing: it cannot --resume a run")
    if args.file is not None and not args.file.is_file():
        raise OperatorError(f"{args.file}: no such file")
    aws = aws_factory(args.region)
    outputs = stack_outputs(aws, args.stack)
    runs = BackfillRunTable(aws.client("dynamodb"), outputs["StateTableName"], clock=pace.clock)
    config = deployed_config(aws, outputs["ConnectorSecretArn"])

    if args.resume:
        checkpoint = _load(runs, args.resume)
        _check_source(checkpoint, args)
        if checkpoint.finished:
            print(f"Run {checkpoint.run} has read every user already.", file=out)
            return follow(runs, checkpoint.run, out, pace, args.stack) if args.follow else 0
    else:
        regulation = _regulation(args.regulation, config)
        source = FILE_SOURCE + args.file.name if args.file is not None else API_SOURCE
        checkpoint = Checkpoint(
            run=run_id or _new_run_id(pace.clock()), source=source, regulation=regulation, started_at=iso_utc(pace.clock())
        )

    if args.file is not None:
        users = file_users(args.file, checkpoint)
    else:
        users = _api(aws, outputs, args, checkpoint, pace, out, transport)

    if args.dry_run:
        try:
            return dry_run(users, config, checkpoint.regulation, args.limit, args.show, out)
        except Stopped as exc:
            print(f"error: {exc}", file=err)
            return exc.exit_code

    sender = RetryQueueSender(aws.client("sqs"), outputs["RetryQueueUrl"], pace)
    run = Run(checkpoint, config, runs, sender, out, pace, stop or _interrupted())
    print(f"Backfill run {checkpoint.run}: reading {_describe_source(checkpoint, args)}", file=out, flush=True)
    try:
        saved = run.go(users, args.limit)
    except Stopped as exc:
        print(run.saved.progress(), file=out)
        print(f"error: {exc}", file=err)
        print(f"Resume with: {_resume_command(args, run.saved.run)}", file=out)
        return exc.exit_code
    print(saved.progress(), file=out)
    if run.reasons:
        print("not sent: " + ", ".join(f"{n} {r}" for r, n in run.reasons.most_common()), file=out)
    if not saved.finished:
        print(f"Stopped before the end. Resume with: {_resume_command(args, saved.run)}", file=out)
        return EXIT_STOPPED
    if args.follow:
        return follow(runs, saved.run, out, pace, args.stack)
    print(f"Every user is read. Watch the worker settle them: {_resume_command(args, saved.run)} --follow", file=out)
    return 0


def dry_run(users: Iterator[tuple[dict, dict]], config: ConnectorConfig, regulation: str, limit, show: int, out: TextIO) -> int:
    """What the run would queue, and the first `show` Braze requests as the worker would send them to a user Braze
    knows nothing about yet (a user whose state holds newer values gets less, or nothing). Writes nothing."""
    read = queued = shown = 0
    reasons: Counter[str] = Counter()
    for user, _ in users:
        read += 1
        try:
            outcome = user_change(user, config, regulation)
        except InvalidWebhook as exc:
            reasons["malformed"] += 1
            print(f"user {str(user.get('id') or '-')[:64]}: not sent, {exc}", file=out)
            outcome = None
        if isinstance(outcome, Skip):
            reasons[outcome.reason] += 1
        elif isinstance(outcome, Change):
            queued += 1
            if shown < show:
                shown += 1
                fields = desired(values_of(outcome.inputs), config)
                body = {"attributes": [attributes_object(outcome.identity, fields, config.upsert_mode)]}
                print(f"POST {config.server}/users/track {json.dumps(body, separators=(', ', ': '))}", file=out)
        if limit is not None and read >= limit:
            break
    print(f"Dry run: {read} users read, {queued} would be queued.", file=out)
    if reasons:
        print("not sent: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()), file=out)
    print("Nothing was queued or written.", file=out)
    return 0


def follow(runs: BackfillRuns, run: str, out: TextIO, pace: Pace, stack: str = "<stack>", every: float = FOLLOW_SECONDS) -> int:
    """Print the run's counts whenever they change, until every queued change is applied, skipped or parked."""
    last = ""
    while True:
        checkpoint = _load(runs, run)
        line = checkpoint.progress()
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if checkpoint.all_settled:
            break
        pace.sleep(every)
    if checkpoint.parked:
        print(f"{checkpoint.parked} change(s) parked: see them with didomi-braze replay --stack {stack}", file=out)
    print("Every queued change is settled.", file=out)
    return 0


# -- helpers -------------------------------------------------------------------------------------------------------
def _api(aws: Aws, outputs, args, checkpoint: Checkpoint, pace: Pace, out: TextIO, transport) -> Iterator[tuple[dict, dict]]:
    secret_id = args.didomi_secret_id or outputs.values.get("DidomiSecretArn")
    if not secret_id:
        raise OperatorError(
            f"stack {args.stack!r} has no Didomi secret: deploy it with EnableBackfill=true (or pass "
            "--didomi-secret-id with a secret you made), or read users from a file with --file"
        )
    credentials = _DidomiSecret(aws, secret_id)
    loaded = credentials(False)  # the secret's problems are reported before anything is read
    base = didomi_base_url(os.environ.get("DIDOMI_API_URL"), os.environ.get("DIDOMI_ALLOW_LOOPBACK", "").lower() == "true")
    client = DidomiClient(credentials, base, transport or Urllib3Transport(), clock=pace.clock)
    return api_users(client, checkpoint, secret_id, loaded.organization_id, pace, out)


class _DidomiSecret:
    def __init__(self, aws: Aws, secret_id: str):
        self._aws, self._secret_id = aws, secret_id
        self._credentials: DidomiCredentials | None = None

    def __call__(self, force: bool) -> DidomiCredentials:
        if self._credentials is None or force:
            try:
                text = self._aws.client("secretsmanager").get_secret_value(SecretId=self._secret_id).get("SecretString")
            except (ClientError, BotoCoreError) as exc:
                raise OperatorError(f"cannot read the Didomi secret {self._secret_id}: {describe(exc)}") from None
            self._credentials = parse_didomi_secret(text or "", self._secret_id)
        return self._credentials


def _load(runs: BackfillRuns, run: str) -> Checkpoint:
    try:
        checkpoint = runs.load(run)
    except StateUnavailable as exc:
        raise OperatorError(f"cannot read the state table: {exc}") from None
    if checkpoint is None:
        raise OperatorError(f"no backfill run {run!r} in this stack's state table")
    return checkpoint


def _check_source(checkpoint: Checkpoint, args) -> None:
    if checkpoint.source.startswith(FILE_SOURCE):
        name = checkpoint.source[len(FILE_SOURCE) :]
        if args.file is None or args.file.name != name:
            raise OperatorError(f"run {checkpoint.run} reads the file {name}: resume it with --file <path to {name}>")
    elif args.file is not None:
        raise OperatorError(f"run {checkpoint.run} reads Didomi's API: resume it without --file")


def _regulation(wanted: str | None, config: ConnectorConfig) -> str:
    configured = sorted(config.regulations)
    if wanted is None:
        return "gdpr" if "gdpr" in config.regulations else configured[0]
    if wanted.lower() not in config.regulations:
        raise OperatorError(f"regulation {wanted!r} is not in the connector's properties.regulations ({', '.join(configured)})")
    return wanted.lower()


def _new_run_id(now: float) -> str:
    return f"{datetime.fromtimestamp(now, tz=UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _describe_source(checkpoint: Checkpoint, args) -> str:
    if args.file is not None:
        where = f" from line {checkpoint.line + 1}" if checkpoint.line else ""
        return f"{args.file}{where}"
    where = " (resuming)" if checkpoint.cursor or checkpoint.done_in_page else ""
    return f"Didomi's consent users, regulation {checkpoint.regulation}{where}"


def _resume_command(args, run: str) -> str:
    parts = ["didomi-braze backfill", f"--stack {args.stack}", f"--resume {run}"]
    if args.file is not None:
        parts.append(f"--file {shlex.quote(str(args.file))}")
    if args.didomi_secret_id:
        parts.append(f"--didomi-secret-id {args.didomi_secret_id}")
    if args.region:
        parts.append(f"--region {args.region}")
    return " ".join(parts)


def _interrupted() -> Callable[[], bool]:
    """The first Ctrl-C asks the run to stop after the batch in hand (the checkpoint stays exact); a second one
    interrupts at once."""
    asked = []

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        print("\nstopping after this batch (Ctrl-C again to stop at once)…", flush=True)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: Ctrl-C is not ours to handle
        pass
    return lambda: bool(asked)
