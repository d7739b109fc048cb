"""One Didomi webhook delivery: authenticate, validate, filter, map, deliver once, else queue or park.

The answer always says what became of the event: 2xx only when it was delivered, queued, dead-lettered or
deliberately skipped; 503 whenever it could not be kept, so that Didomi delivers it again. A redelivered event
is judged against the user's merged state like any other, and its fields are sent again: its first delivery may
have died before reaching Braze.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..domain.access import OAUTH, bearer_matches
from ..domain.braze import DELIVERED, PERMANENT, RATE_LIMITED, RETRYABLE
from ..domain.connector import ConnectorConfig
from ..domain.didomi import DidomiWebhook, parse_webhook
from ..domain.errors import ConfigurationError, InvalidWebhook
from ..domain.mapping import BrazeIdentity, Change, Skip, plan
from ..domain.ports import DeadLetter
from ..domain.retry import PendingChange, UserWork, iso_utc
from ..observability import count, count_by, logger
from .delivery import BUSY, SKIPPED, UNAVAILABLE, Delivery, Outcome
from .dependencies import Dependencies

MAX_BODY_BYTES = 256 * 1024
HANDED_OFF = "handed_off"  # queued for the batched worker without a call: Braze's window is nearly spent


@dataclass(frozen=True)
class WebhookRequest:
    authorization: str | None
    body: str | None
    is_base64: bool = False
    source_ip: str | None = None
    jwt_claims: dict | None = None  # set by API Gateway's JWT authorizer in OAuth mode
    deadline: float | None = None  # epoch seconds at which Lambda ends the invocation


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict = field(default_factory=dict)


def receive_webhook(request: WebhookRequest, load_dependencies: Callable[[], Dependencies]) -> Answer:
    try:
        deps = load_dependencies()
    except ConfigurationError as exc:
        return _unavailable("configuration_error", exc)
    if not deps.access.source_allowed(request.source_ip):
        count("WebhookForbidden")
        logger.warning("webhook refused: source address not in ALLOWED_SOURCE_CIDRS", extra={"source_ip": request.source_ip})
        return Answer(403, {"status": "forbidden", "error": "this source address may not call the webhook"})
    try:
        authenticated = _authenticated(request, deps)
    except ConfigurationError as exc:
        return _unavailable("configuration_error", exc)
    if not authenticated:
        count("WebhookUnauthorized")
        logger.warning("webhook refused: missing or wrong credentials", extra={"auth_mode": deps.access.mode})
        return Answer(401, {"status": "unauthorized", "error": "missing or invalid Authorization: Bearer token"})

    try:
        webhook = parse_webhook(_decode(request))
    except _TooLarge:
        count("WebhookRejected")
        logger.warning("webhook refused: body over the size limit", extra={"limit_bytes": MAX_BODY_BYTES})
        return Answer(413, {"status": "too_large", "error": f"the body exceeds {MAX_BODY_BYTES} bytes"})
    except InvalidWebhook as exc:
        return _rejected(exc)

    count("EventsReceived")
    try:
        config = deps.connector()
    except ConfigurationError as exc:
        return _unavailable("configuration_error", exc)
    try:
        decision = plan(webhook, config)
    except InvalidWebhook as exc:
        return _rejected(exc)
    if isinstance(decision, Skip):
        return _skipped(decision.reason, decision.detail, _skipped_log(webhook, config, deps))
    return _deliver(decision, config, deps, request.deadline)


def _skipped_log(webhook: DidomiWebhook, config: ConnectorConfig, deps: Dependencies) -> dict:
    """What a skip's log line says about the event, and the user when the event names one (so `trace` finds it)."""
    log = {"event_type": webhook.type, "event_id": webhook.event_id}
    if webhook.entity.organization_user_id is not None:
        log["user_ref"] = deps.user_ref(BrazeIdentity(config.user_identifier, webhook.entity.organization_user_id).key)
    return log


def _deliver(change: Change, config: ConnectorConfig, deps: Dependencies, deadline: float | None) -> Answer:
    # Every line about this event carries these, so that `trace` can put the user's timeline together.
    log = {
        "event_type": change.event_type,
        "event_id": change.event_id,
        "event_time": change.position.time,
        "user_ref": deps.user_ref(change.identity.key),
    }
    now = deps.clock()
    limited_until = deps.delivery.gauge.hand_off_until(now)
    if limited_until is not None:
        # Braze's window is nearly spent: one request per user would only meet 429s. The batched worker sends up
        # to 50 users per request; it merges the change exactly as this invocation would have.
        reason = "braze rate limit nearly reached: handed to the batched worker"
        handed = Outcome(HANDED_OFF, reason, retry_at=limited_until)
        return _queue(_pending(change, handed, deps), handed, deps, log)
    user = UserWork(change.identity)
    user.add(change)
    lease_until = now + deps.webhook_lease_seconds
    [outcome] = deps.delivery.deliver([user], config, lease_until, deadline=deadline or lease_until, merge_when_busy=True)
    log.update(fields=outcome.sent or None)

    if outcome.kind == UNAVAILABLE:
        return _unavailable("state_table_unavailable", Exception(outcome.reason), log)
    # A delivered event keeps its lease, which runs out on its own a few seconds after the Braze call could have
    # ended: that saves a state-table round trip on every delivered event (README "Ordering"). Unless the claim left
    # inputs to mark quiet; and where that mark cannot be written, the fields it stood for are owed.
    unrecorded = deps.delivery.release([outcome]) if Delivery.must_release(outcome) else []
    still_owed = outcome.lease.unsent if unrecorded else ()
    if outcome.kind == DELIVERED:
        count("EventsDelivered")
        logger.info("event delivered to Braze", extra={**log, "outcome": "delivered", "braze_status": outcome.status})
        return _owe(change, still_owed, deps, log) or Answer(200, {"status": "delivered"})
    if outcome.kind == SKIPPED:
        return _owe(change, still_owed, deps, log) or _skipped(outcome.skip_reason or "no_change", outcome.reason, log)

    pending = _pending(change, outcome, deps)
    if still_owed:
        pending = replace(pending, owed=tuple(sorted({*(pending.owed or ()), *still_owed})))
    if outcome.kind == PERMANENT:
        return _park(pending, outcome, deps, log)
    return _queue(pending, outcome, deps, log)


def _owe(change: Change, fields: tuple[str, ...], deps: Dependencies, log: dict) -> Answer | None:
    """Queue the fields a delivery left unsent when the state table could not record that it did: None when there
    is nothing to owe or it is queued (the caller's answer stands), else 503 so that Didomi delivers the event again."""
    if not fields:
        return None
    owing = Outcome(BUSY, "the state table did not record what this delivery left unsent", owed=fields)
    pending = _pending(change, owing, deps)
    try:
        deps.queue.enqueue(pending.to_json(), 1)
    except Exception as exc:
        return _unavailable("retry_queue_unavailable", exc, log)
    count("EventsQueued")
    logger.warning("fields owed to Braze queued", extra={**log, "outcome": "queued", "reason": owing.reason, "fields": fields})
    return None


def _pending(change: Change, outcome: Outcome, deps: Dependencies) -> PendingChange:
    now = iso_utc(deps.clock())
    failed = outcome.kind in (RETRYABLE, PERMANENT)
    return PendingChange(
        change=change,
        # BUSY without a merge result (the state kept moving) leaves the judging to the worker.
        owed=outcome.owed if outcome.kind not in (BUSY, HANDED_OFF) or outcome.owed else None,
        reason=outcome.reason,
        queued_at=now,
        failures=1 if failed else 0,
        calls=outcome.calls,
        first_failure_at=now if failed else None,
    )


def _queue(pending: PendingChange, outcome: Outcome, deps: Dependencies, log: dict) -> Answer:
    now = deps.clock()
    if outcome.kind == RETRYABLE:
        delay = deps.schedule.delay_after_failure(1)
    elif outcome.kind == HANDED_OFF:
        delay = 0  # the worker's own reading of the window decides when it calls
    elif outcome.kind == BUSY:  # another invocation holds the user: look again when it is likely done
        delay = deps.schedule.relook_when_busy(outcome.retry_at, now, deps.rng)
    else:  # rate limited: wait for the reset
        delay = deps.schedule.wait_until(outcome.retry_at, now, at_least=1)
    try:
        deps.queue.enqueue(pending.to_json(), delay)
    except Exception as exc:
        return _unavailable("retry_queue_unavailable", exc, log)
    if outcome.kind in (RATE_LIMITED, HANDED_OFF):
        count("EventsHandedOff")
    count("EventsQueued")
    logger.warning(
        "event queued for retry",
        extra={
            **log,
            "outcome": "queued",
            "reason": outcome.reason,
            "braze_status": outcome.status,
            "retry_in_seconds": delay,
        },
    )
    return Answer(202, {"status": "queued", "reason": outcome.reason, "retry_in_seconds": delay})


def _park(pending: PendingChange, outcome: Outcome, deps: Dependencies, log: dict) -> Answer:
    why = DeadLetter(
        outcome.reason,
        attempts=1,
        first_failure_at=pending.first_failure_at or iso_utc(deps.clock()),
        last_braze_status=outcome.status,
        event_id=pending.change.event_id,
        category="braze_rejected",
    )
    try:
        deps.queue.dead_letter(pending.ready_to_replay().to_json(), why)
    except Exception as exc:
        return _unavailable("dead_letter_queue_unavailable", exc, log)
    count_by("EventsDeadLettered", "reason", why.category)
    logger.error(
        "event dead-lettered: Braze rejected it",
        extra={**log, "outcome": "dead_lettered", "category": why.category, "reason": why.reason, "braze_status": outcome.status},
    )
    return Answer(200, {"status": "dead_lettered", "reason": why.reason})


def _skipped(reason: str, detail: str, log: dict) -> Answer:
    count_by("EventsSkipped", "reason", reason)
    logger.info("event skipped", extra={**log, "outcome": "skipped", "reason": reason, "detail": detail})
    return Answer(200, {"status": "skipped", "reason": reason, "detail": detail})


def _rejected(exc: InvalidWebhook) -> Answer:
    count("WebhookRejected")
    logger.warning("webhook refused: invalid body", extra={"problem": str(exc)})
    return Answer(400, {"status": "rejected", "error": str(exc)})


def _authenticated(request: WebhookRequest, deps: Dependencies) -> bool:
    if deps.access.mode == OAUTH:
        # API Gateway's JWT authorizer has validated the token; a request without its claims did not go through it.
        return deps.access.claims_allowed(request.jwt_claims)
    if bearer_matches(request.authorization, deps.webhook_tokens.valid()):
        return True
    # The token may just have been rotated: look again (at most every 30 s), then decide.
    return deps.webhook_tokens.refresh_after_miss() and bearer_matches(request.authorization, deps.webhook_tokens.valid())


class _TooLarge(Exception):
    pass


def _decode(request: WebhookRequest) -> object:
    raw = request.body or ""
    if len(raw) > (MAX_BODY_BYTES * 4 // 3 + 4 if request.is_base64 else MAX_BODY_BYTES * 4):
        raise _TooLarge()
    if request.is_base64:
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidWebhook("the body is marked base64 but is not valid base64") from None
    else:
        data = raw.encode("utf-8", errors="surrogatepass")
    if len(data) > MAX_BODY_BYTES:
        raise _TooLarge()
    if not data.strip():
        raise InvalidWebhook("the body is empty; expected a Didomi webhook JSON object")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidWebhook("the body is not UTF-8 text") from None
    except ValueError as exc:
        raise InvalidWebhook(
            f"the body is not valid JSON: {getattr(exc, 'msg', 'cannot parse')} at line {getattr(exc, 'lineno', '?')}"
        ) from None
    except RecursionError:
        raise InvalidWebhook("the body is nested too deeply") from None


def _unavailable(kind: str, exc: Exception, log: dict | None = None) -> Answer:
    count_by("WebhookUnavailable", "cause", kind)
    logger.error(
        "event not accepted; Didomi will deliver it again",
        extra={**(log or {}), "outcome": "unavailable", "cause": kind, "problem": str(exc)},
    )
    return Answer(503, {"status": "unavailable", "error": f"the event could not be processed now ({kind}); retry later"})
