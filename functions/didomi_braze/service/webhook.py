"""One Didomi webhook delivery: authenticate, validate, filter, map, deliver once, else queue or park.

The answer always says what became of the event. 2xx only when it was delivered, queued, dead-lettered
or deliberately skipped; 503 whenever it could not be kept, so that Didomi delivers it again.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..adapters.state_table import Busy, StateTableUnavailable, user_key
from ..domain.access import OAUTH, bearer_matches
from ..domain.braze import DELIVERED, PERMANENT, RETRYABLE, BrazeOutcome, attributes_object
from ..domain.connector import ConnectorConfig
from ..domain.didomi import parse_webhook
from ..domain.errors import ConfigurationError, InvalidWebhook
from ..domain.mapping import BrazeUpdate, Push, Skip, plan
from ..domain.ordering import DUPLICATE, Verdict, fields_of, judge, position
from ..observability import count, count_by, logger
from .dependencies import Dependencies

if TYPE_CHECKING:
    from ..domain.retry import PendingUpdate

MAX_BODY_BYTES = 256 * 1024
WEBHOOK_LEASE_SECONDS = 30  # twice the function's timeout: the lease outlives any invocation holding it


@dataclass(frozen=True)
class WebhookRequest:
    authorization: str | None
    body: str | None
    is_base64: bool = False
    source_ip: str | None = None
    jwt_claims: dict | None = None  # set by API Gateway's JWT authorizer in OAuth mode


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
        count("WebhookRejected")
        logger.warning("webhook refused: invalid body", extra={"problem": str(exc)})
        return Answer(400, {"status": "rejected", "error": str(exc)})

    count("EventsReceived")
    try:
        config = deps.connector()
    except ConfigurationError as exc:
        return _unavailable("configuration_error", exc)

    decision = plan(webhook, config)
    if isinstance(decision, Skip):
        return _skip(webhook.type, decision.reason, decision.detail)
    return _apply(decision, webhook.type, config, deps)


def _apply(push: Push, event_type: str, config: ConnectorConfig, deps: Dependencies) -> Answer:
    """Send the update while holding the user's lease, so that one user's updates reach Braze one at a time,
    and only the fields for which Braze does not already have a newer value."""
    log = {"event_type": event_type, "user_ref": deps.user_ref(push.identity.key)}
    key, owner, pos = user_key(push.identity.key), uuid.uuid4().hex, position(push.order_key, push.event_id)
    try:
        state = deps.state.acquire(key, owner, pos, deps.clock(), WEBHOOK_LEASE_SECONDS)
    except StateTableUnavailable as exc:
        return _unavailable("state_table_unavailable", exc, log)
    if isinstance(state, Busy):
        if state.lease_position == pos:
            return _skip(event_type, DUPLICATE, "the same event is being delivered right now by another invocation")
        # Never race another invocation to Braze for the same user: the retry worker takes it from here.
        busy = BrazeOutcome(RETRYABLE, "another update for this user is being delivered")
        return _queue(_pending(push, push.update, event_type, busy, deps), busy, deps, log, lease=None)

    lease = (key, owner)
    verdict = judge(push.update, dict.fromkeys(fields_of(push.update), pos), state.positions, retry=False)
    if pos in state.pending:
        verdict = Verdict(BrazeUpdate(), {}, DUPLICATE)
    if verdict.is_skip:
        _finish(deps, lease)
        detail = (
            "this event was already delivered or is queued for retry"
            if verdict.skip_reason == DUPLICATE
            else "Braze already has a newer value for every field this event sets"
        )
        return _skip(event_type, verdict.skip_reason, detail)
    if verdict.dropped:
        logger.info("fields superseded by newer events are not sent", extra={**log, "fields": list(verdict.dropped)})

    log["update"] = verdict.send.to_dict()
    outcome = deps.braze.track(
        config.server, config.api_key, [attributes_object(push.identity, verdict.send, config.upsert_mode)]
    )
    if outcome.kind == DELIVERED and not outcome.item_errors:
        _finish(deps, lease, commit=verdict.positions)
        count("EventsDelivered")
        logger.info("event delivered to Braze", extra=log)
        return Answer(200, {"status": "delivered"})

    pending = _pending(push, verdict.send, event_type, outcome, deps)
    if outcome.kind == PERMANENT or outcome.item_errors:
        from ..adapters.queues import DeadLetter  # failure path only: kept off the cold start

        why = DeadLetter(
            pending.first_failure_reason,
            attempts=1,
            first_failure_at=pending.first_failure_at,
            last_braze_status=outcome.status,
            event_id=push.event_id,
        )
        try:
            deps.queues.dead_letter(pending.to_json(), why)
        except Exception as exc:
            _finish(deps, lease)
            return _unavailable("dead_letter_queue_unavailable", exc, log)
        _finish(deps, lease)
        count_by("EventsDeadLettered", "reason", "braze_rejected")
        logger.error(
            "event dead-lettered: Braze rejected it", extra={**log, "reason": why.reason, "braze_status": outcome.status}
        )
        return Answer(200, {"status": "dead_lettered", "reason": why.reason})

    if outcome.refresh_credentials:
        _refresh_connector(deps)
    return _queue(pending, outcome, deps, log, lease)


def _pending(push: Push, update: BrazeUpdate, event_type: str, outcome: BrazeOutcome, deps: Dependencies) -> PendingUpdate:
    from ..domain.retry import PendingUpdate, iso_utc  # failure path only: kept off the cold start

    return PendingUpdate(
        event_id=push.event_id,
        event_type=event_type,
        identity=push.identity,
        update=update,
        order_key=push.order_key,
        first_failure_at=iso_utc(deps.clock()),
        first_failure_reason=_reason(outcome),
    )


def _queue(pending: PendingUpdate, outcome: BrazeOutcome, deps: Dependencies, log: dict, lease: tuple[str, str] | None) -> Answer:
    delay = deps.schedule.first_delay(deps.clock(), outcome.retry_at)
    try:
        deps.queues.enqueue_retry(pending.to_json(), delay)
    except Exception as exc:
        if lease:
            _finish(deps, lease)
        return _unavailable("retry_queue_unavailable", exc, log)
    if lease:
        # Remembered as waiting, so that Didomi delivering it again is recognised as a duplicate.
        _finish(deps, lease, add_pending=pending.position)
    count("EventsQueued")
    logger.warning(
        "event queued for retry",
        extra={**log, "reason": pending.first_failure_reason, "braze_status": outcome.status, "retry_in_seconds": delay},
    )
    return Answer(202, {"status": "queued", "reason": pending.first_failure_reason, "retry_in_seconds": delay})


def _finish(
    deps: Dependencies, lease: tuple[str, str], commit: dict[str, str] | None = None, add_pending: str | None = None
) -> None:
    """Record the outcome and give the lease back. If that fails the lease simply runs out; the answer stands."""
    key, owner = lease
    try:
        if not deps.state.finish(key, owner, deps.clock(), commit=commit, add_pending=add_pending):
            logger.error(
                "the user's lease ran out before the update was recorded", extra={"lease_seconds": WEBHOOK_LEASE_SECONDS}
            )
    except StateTableUnavailable as exc:
        logger.error("could not record the outcome in the state table; the lease will run out", extra={"problem": str(exc)})


def _skip(event_type: str, reason: str, detail: str) -> Answer:
    count_by("EventsSkipped", "reason", reason)
    logger.info("event skipped", extra={"event_type": event_type, "reason": reason, "detail": detail})
    return Answer(200, {"status": "skipped", "reason": reason, "detail": detail})


def _refresh_connector(deps: Dependencies) -> None:
    """After a 401/403 the key may have been rotated: drop the cached document so the retry reads it anew."""
    try:
        deps.connector(force=True)
    except ConfigurationError as exc:
        logger.error("connector secret unreadable while refreshing after 401/403", extra={"problem": str(exc)})


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
    logger.error("event not accepted; Didomi will deliver it again", extra={**(log or {}), "cause": kind, "problem": str(exc)})
    return Answer(503, {"status": "unavailable", "error": f"the event could not be processed now ({kind}); retry later"})


def _reason(outcome: BrazeOutcome) -> str:
    if outcome.item_errors:
        return "braze rejected the object: " + "; ".join(sorted(set(outcome.item_errors.values())))
    return outcome.reason
