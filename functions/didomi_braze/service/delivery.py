"""The one delivery flow, shared by the webhook, the retry worker and the backfill: claim → judge → send → settle.

- **Claim** (one conditional write per user): take the user's lease and merge the changes' inputs into the user's
  state. Fast path: the write itself checks that no stored input is newer. If it refuses, the record it returns is
  merged exactly and written back on the revision it was read at.
- **Judge**: Braze is sent the fields whose value, evaluated on the merged state, changed with this merge; the
  fields of a change seen before (a redelivery: it may not have reached Braze); and the fields a failed call owes.
  Every value comes from the merged state as it stands under the lease, so it is the newest known one.
- **Send**: as few `/users/track` requests as there are chunks of users, while the leases are safely held. A
  request Braze answers at once with a 5xx is sent once more after a short pause, if the leases still allow it: a
  random 5xx then costs half a second instead of a 30 s retry (README "Delivery, retries").
- **Settle**: one outcome per user. What becomes of it (an answer, a queued retry, a parked message, a lease
  released) is the caller's business.

Why this keeps an older value from overwriting a newer one: the merged state only ever moves forward, every
value sent is computed from it under the lease, and a lease outlives the Braze call that holds it. A value
counts as given from the moment the claim that computed it succeeded (DESIGN §4); whoever merges next judges
against it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from ..domain.braze import DELIVERED, PERMANENT, RATE_LIMITED, RETRYABLE, BrazeOutcome, attributes_object
from ..domain.connector import ConnectorConfig
from ..domain.errors import ConfigurationError, StateUnavailable
from ..domain.mapping import desired, fields_reading, values_of
from ..domain.ordering import Merge, merge, newest, quietly
from ..domain.ports import AtRevision, BrazeApi, Claimed, StateStore, StoredOlder, UserRecord
from ..domain.ratelimit import RateGauge
from ..domain.retry import UserWork
from ..observability import count, logger

# What became of one user's work. DELIVERED and SKIPPED are final; the others leave work to the caller.
SKIPPED = "skipped"
BUSY = "busy"  # another invocation holds the user's lease (or this one ran out of time): try after `retry_at`
UNAVAILABLE = "unavailable"  # the state table could not be reached: nothing was sent
FINAL = (DELIVERED, SKIPPED)

LEASE_MARGIN_SECONDS = 3  # a lease outlives the Braze call it covers by this much (clock skew, the last bytes)
CLAIM_ATTEMPTS = 3  # exact merges retried when the revision moved meanwhile
STATE_TABLE_CONCURRENCY = 16  # matches the DynamoDB client's connection pool (runtime.py)
QUICK_RETRY_PAUSE_SECONDS = 0.5  # before sending again a request Braze answered with a 5xx


@dataclass(frozen=True)
class Lease:
    key: str
    owner: str
    until: float
    # Inputs this claim wrote newer but whose Braze fields it does not send (the value changed nothing, or not in
    # every field it drives), and those fields: marked quiet when the lease is given back (ordering.StoredInput).
    quiet: tuple[str, ...] = ()
    unsent: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """One user's result. `sent` is what was (or was being) sent; `owed` what a retry must still send."""

    kind: str  # DELIVERED, SKIPPED, BUSY, UNAVAILABLE, or a failed call's RETRYABLE / RATE_LIMITED / PERMANENT
    reason: str
    sent: dict[str, str] = field(default_factory=dict)
    owed: tuple[str, ...] = ()
    skip_reason: str | None = None
    status: int | None = None  # Braze's HTTP status
    retry_at: float | None = None  # BUSY: when the lease runs out; RATE_LIMITED: Braze's reset
    calls: int = 0  # Braze requests made for this user (2: a 5xx sent again at once)
    lease: Lease | None = None  # held, to be given back by the caller

    @property
    def called_braze(self) -> bool:
        return self.calls > 0


@dataclass
class _Claim:
    user: UserWork
    lease: Lease
    before: UserRecord
    merged: Merge
    send: dict[str, str] = field(default_factory=dict)


class Delivery:
    def __init__(
        self,
        state: StateStore,
        braze: BrazeApi,
        load_config: Callable[[bool], ConnectorConfig],
        clock: Callable[[], float],
        objects_per_request: int,
        braze_seconds: float,
        concurrency: int = STATE_TABLE_CONCURRENCY,
        gauge: RateGauge | None = None,
        pause: Callable[[float], None] = time.sleep,
    ):
        self.state = state
        self.braze = braze
        self.load_config = load_config
        self.clock = clock
        self.objects_per_request = objects_per_request
        self.braze_seconds = braze_seconds  # the longest one Braze call can take (connect + read timeouts)
        self.concurrency = concurrency  # state-table round trips side by side (1: one after the other)
        self.gauge = gauge or RateGauge()  # Braze's rate-limit window, as this container last saw it
        self.pause = pause

    # -- the flow --------------------------------------------------------------------------------------------
    def deliver(
        self,
        work: list[UserWork],
        config: ConnectorConfig,
        lease_until: float,
        deadline: float,
        merge_when_busy: bool = False,
    ) -> list[Outcome]:
        """Deliver each user's work; one outcome per user, in order. Leases still held are in the outcomes.

        With `merge_when_busy`, a user whose lease another invocation holds still gets the changes merged; the
        outcome is then SKIPPED when the merge calls for nothing new, else BUSY with the fields it `owed`."""
        now = self.clock()
        claimed = self._parallel(lambda user: self._claim(user, config, now, lease_until, merge_when_busy), work)
        outcomes: dict[int, Outcome] = {}
        ready: list[tuple[int, _Claim]] = []
        for index, result in enumerate(claimed):
            if isinstance(result, Outcome):
                outcomes[index] = result
            elif result.send:
                ready.append((index, result))
            else:
                outcomes[index] = self._nothing_to_send(result)
        for index, outcome in self._send(ready, config, deadline):
            outcomes[index] = outcome
        return [outcomes[i] for i in range(len(work))]

    def release(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Give back every lease the outcomes hold, marking the inputs it left unsent quiet. A lease that cannot be
        given back runs out on its own; but a quiet mark that was not written leaves fields Braze may never have
        got unaccounted for: those outcomes are returned, and the caller must still owe their `unsent` fields."""

        def give_back(outcome: Outcome) -> Outcome | None:
            lease = outcome.lease
            try:
                if self.state.release(lease.key, lease.owner, lease.quiet):
                    return None
                logger.warning("a lease ran out before it was given back", extra={"lease_until": lease.until})
            except StateUnavailable as exc:
                logger.error("could not give a lease back; it runs out on its own", extra={"problem": str(exc)})
            return outcome if lease.quiet else None

        return [o for o in self._parallel(give_back, [o for o in outcomes if o.lease is not None]) if o is not None]

    @staticmethod
    def must_release(outcome: Outcome) -> bool:
        """A delivered claim keeps its lease (it runs out on its own), unless it left inputs to mark quiet."""
        return outcome.lease is not None and (outcome.kind != DELIVERED or bool(outcome.lease.quiet))

    def _parallel(self, function, items: list) -> list:
        """Independent state-table round trips side by side; one pool per container, created on first use."""
        global _pool
        if len(items) <= 1 or self.concurrency <= 1:
            return [function(item) for item in items]
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=STATE_TABLE_CONCURRENCY, thread_name_prefix="state-table")
        return list(_pool.map(function, items))

    # -- claim -----------------------------------------------------------------------------------------------
    def _claim(
        self, user: UserWork, config: ConnectorConfig, now: float, lease_until: float, merge_when_busy: bool
    ) -> _Claim | Outcome:
        key, owner = user.identity.state_key, os.urandom(12).hex()
        carried = newest([change.inputs for change in user.changes])
        try:
            result = self.state.claim(key, carried, owner, user.event, now, lease_until, StoredOlder())
            for _ in range(CLAIM_ATTEMPTS):
                if isinstance(result, Claimed):
                    lease = Lease(key, owner, lease_until)
                    return self._judge(_Claim(user, lease, result.before, merge(result.before.inputs, carried)), config)
                current = result.current
                if current.leased_at(now):
                    if not merge_when_busy:
                        return Outcome(BUSY, "another update for this user is being delivered", retry_at=current.lease_until)
                    return self._merge_beside(user, config, carried, current, now)
                exact = merge(current.inputs, carried)
                if not exact.newer and not user.seen_again(current.inputs) and not user.owed:
                    return _skip("superseded", "Braze already has newer values for every consent this event sets")
                result = self.state.claim(key, exact.newer, owner, user.event, now, lease_until, AtRevision(current.revision))
        except StateUnavailable as exc:
            return Outcome(UNAVAILABLE, f"state table unavailable: {exc}")
        return Outcome(BUSY, "the user's state kept changing while it was being merged", retry_at=now + 1)

    def _merge_beside(self, user: UserWork, config: ConnectorConfig, carried: dict, current: UserRecord, now: float) -> Outcome:
        """Another invocation is sending this user's update: merge without the lease, and say what it leaves owed.

        The holder sends what it computed before this merge, so whatever this merge changes is owed to a later
        delivery (the caller queues it for after the lease). A merge that changes nothing for Braze is done, and
        its facts are stored as quiet (ordering.StoredInput)."""
        busy = "another update for this user is being delivered"
        for _ in range(CLAIM_ATTEMPTS):
            exact = merge(current.inputs, carried)
            due, after = self._judged(current, exact, user, config)
            if exact.newer:
                # Input by input, as a holder marks them: a fact whose fields are not all owed vouches for nothing.
                quiet, _ = _left_unsent(exact.newer, due, after, config)
                written = {**exact.newer, **quietly({name: exact.newer[name] for name in quiet})}
                result = self.state.claim(
                    user.identity.state_key, written, None, user.event, now, now, AtRevision(current.revision)
                )
                if not isinstance(result, Claimed):
                    current = result.current
                    continue
            if due:
                return Outcome(BUSY, busy, owed=tuple(sorted(due)), retry_at=current.lease_until)
            if exact.newer:
                return _skip("no_change", "the merged consent state calls for no change in Braze")
            return _skip("superseded", "Braze already has newer values for every consent this event sets")
        return Outcome(BUSY, busy, retry_at=max(current.lease_until, now + 1))

    def _judge(self, claim: _Claim, config: ConnectorConfig) -> _Claim:
        due, after = self._judged(claim.before, claim.merged, claim.user, config)
        claim.send = {name: after[name] for name in sorted(due) if name in after}
        quiet, unsent = _left_unsent(claim.merged.newer, claim.send, after, config)
        claim.lease = replace(claim.lease, quiet=quiet, unsent=unsent)
        return claim

    @staticmethod
    def due(before: UserRecord, merged: Merge, user: UserWork, config: ConnectorConfig) -> set[str]:
        """The Braze fields to send: changed by this merge, read by a change seen before, or owed by a failed call."""
        return Delivery._judged(before, merged, user, config)[0]

    @staticmethod
    def _judged(before: UserRecord, merged: Merge, user: UserWork, config: ConnectorConfig) -> tuple[set[str], dict[str, str]]:
        """`due`, and every field's value on the merged state (what the caller sends them as)."""
        old = desired(values_of(before.inputs), config)
        new = desired(values_of(merged.state), config)
        changed = {name for name, value in new.items() if old.get(name) != value}
        redelivered = fields_reading(user.seen_again(before.inputs), config)
        return {name for name in changed | redelivered | user.owed if name in new}, new

    @staticmethod
    def _nothing_to_send(claim: _Claim) -> Outcome:
        if not claim.merged.newer and claim.merged.older:
            return _skip("superseded", "Braze already has newer values for every consent this event sets", claim.lease)
        return _skip("no_change", "the merged consent state calls for no change in Braze", claim.lease)

    # -- send and settle -------------------------------------------------------------------------------------
    def _send(self, ready: list[tuple[int, _Claim]], config: ConnectorConfig, deadline: float):
        for start in range(0, len(ready), self.objects_per_request):
            chunk = ready[start : start + self.objects_per_request]
            spent_until = self.gauge.spent_until(self.clock())
            if spent_until is not None:  # the workspace's window is spent: the rest waits for the reset, uncalled
                wait = BrazeOutcome(
                    RATE_LIMITED, "braze rate limit reached: waiting for the window to reset", retry_at=spent_until
                )
                yield from ((i, self._settle(c, wait, calls=0)) for i, c in chunk)
                continue
            if not self._time_for_a_call(chunk, deadline):
                yield from ((i, _out_of_time(c, self.clock())) for i, c in chunk)
                continue
            answer, calls = self._track_once_more_after_5xx(config, chunk, deadline)
            if answer.kind == PERMANENT and len(chunk) > 1:
                # Braze refused the request as a whole: send each object alone, so one bad object parks only itself.
                for i, claim in chunk:
                    if self._time_for_a_call([(i, claim)], deadline):
                        yield i, self._settle(claim, self._track(config, [claim]), calls=calls + 1)
                    else:
                        yield i, _out_of_time(claim, self.clock())
                continue
            yield from (
                (i, self._settle(c, answer, item_error=answer.item_error(n), calls=calls)) for n, (i, c) in enumerate(chunk)
            )
            if answer.refresh_credentials:
                config = self._refreshed(config)

    def _time_for_a_call(self, chunk: list[tuple[int, _Claim]], deadline: float) -> bool:
        """A request may only leave while every lease it relies on outlives it (and the invocation does too)."""
        ends = min([deadline, *(c.lease.until for _, c in chunk)])
        return self.clock() + self.braze_seconds <= ends

    def _track_once_more_after_5xx(
        self, config: ConnectorConfig, chunk: list[tuple[int, _Claim]], deadline: float
    ) -> tuple[BrazeOutcome, int]:
        """One request; sent again after a short pause when Braze answered it with a 5xx and the leases still cover
        another call. Not after a timeout (it took the whole timeout already) nor after 401/403 or 429."""
        claims = [c for _, c in chunk]
        answer = self._track(config, claims)
        if answer.kind != RETRYABLE or (answer.status or 0) < 500:  # a timeout has no status; 401/403 are below
            return answer, 1
        self.pause(QUICK_RETRY_PAUSE_SECONDS)
        if not self._time_for_a_call(chunk, deadline):
            return answer, 1
        count("BrazeQuickRetries")
        return self._track(config, claims), 2

    def _track(self, config: ConnectorConfig, claims: list[_Claim]) -> BrazeOutcome:
        count("BrazeRequests")
        objects = [attributes_object(c.user.identity, c.send, config.upsert_mode) for c in claims]
        answer = self.braze.track(config.server, config.api_key, objects)
        self.gauge.observe(answer, self.clock())
        if answer.kind == RATE_LIMITED:
            count("BrazeRateLimited")
        return answer

    def _refreshed(self, config: ConnectorConfig) -> ConnectorConfig:
        """After a 401/403 the key may have been rotated: read the secret again and use it for the rest."""
        try:
            return self.load_config(True)
        except ConfigurationError as exc:
            logger.error("connector secret unreadable while refreshing after 401/403", extra={"problem": str(exc)})
            return config

    @staticmethod
    def _settle(claim: _Claim, answer: BrazeOutcome, item_error: str | None = None, calls: int = 1) -> Outcome:
        sent, owed = claim.send, tuple(claim.send)
        if answer.kind == DELIVERED and item_error is None:
            return Outcome(DELIVERED, "delivered", sent, status=answer.status, calls=calls, lease=claim.lease)
        if answer.kind == DELIVERED:
            reason = f"braze rejected the object: {item_error}"
            return Outcome(PERMANENT, reason, sent, owed, status=answer.status, calls=calls, lease=claim.lease)
        return Outcome(
            answer.kind,
            answer.reason,
            sent,
            owed,
            status=answer.status,
            retry_at=answer.retry_at,
            calls=calls,
            lease=claim.lease,
        )


def _left_unsent(
    newer: Collection[str], sent: Collection[str], after: dict[str, str], config: ConnectorConfig
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The newer inputs that drive a Braze field this delivery does not send (to be stored quiet), and those fields."""
    quiet, unsent = [], set()
    for name in sorted(newer):
        fields = {f for f in fields_reading({name}, config) if f in after and f not in sent}
        if fields:
            quiet.append(name)
            unsent |= fields
    return tuple(quiet), tuple(sorted(unsent))


def _skip(reason: str, detail: str, lease: Lease | None = None) -> Outcome:
    return Outcome(SKIPPED, detail, skip_reason=reason, lease=lease)


def _out_of_time(claim: _Claim, now: float) -> Outcome:
    return Outcome(
        BUSY,
        "no time left to call Braze safely in this invocation",
        claim.send,
        tuple(claim.send),
        retry_at=now + 1,
        lease=claim.lease,
    )


def failed(outcome: Outcome) -> bool:
    return outcome.kind in (RETRYABLE, RATE_LIMITED, PERMANENT)


_pool: ThreadPoolExecutor | None = None
