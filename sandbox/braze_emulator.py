"""A Braze REST emulator: `POST /users/track`, as strict as Braze's documentation.

`BrazeWorkspace` is Braze itself, without sockets. It checks what Braze checks (API key, JSON body, object counts,
identifiers, allowed values), keeps each user's subscription state and records every request. With a rate limit
set, it counts requests in fixed windows that reset on the clock and answers `X-RateLimit-Limit`, `-Remaining` and
`-Reset` (epoch seconds) on every request, as Braze documents. It can be told to fail: 5xx, 429, 401, 400,
per-object errors in a 201, or a hang past the client's timeout *after* applying the update (the answer is lost,
the change is not: the worst case for ordering).

Every real change of a user's subscription state is recorded in `subscription_changes`, with the source Braze would
report to Currents (`REST API` for `/users/track`; `Dashboard`, `Subscription Page`, ... for `change_subscription`,
which stands for what a user or an agent does in Braze itself): `sandbox/currents.py` exports them as Currents files.

`BrazeEmulator` serves a workspace over HTTP on 127.0.0.1; the in-memory double (`sandbox/memory.py`) calls one
directly. It is the stand-in for a service the tests cannot reach; it is never loosened to make a test pass.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IDENTIFIERS = ("external_id", "user_alias", "braze_id", "email", "phone")
EMAIL_STATES = ("opted_in", "subscribed", "unsubscribed")
GROUP_STATES = ("subscribed", "unsubscribed")
FAULTS = ("500", "503", "429", "401", "400", "hang", "item_error")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: object
    status: int = 0
    fault: str | None = None


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # the answer comes too late for the client (the update itself was applied)


@dataclass(frozen=True)
class SubscriptionChange:
    """One change Braze's Currents reports: `users.behaviors.subscription.GlobalStateChange` (no group) or
    `users.behaviors.subscriptiongroup.StateChange`."""

    id: str
    identity_key: str  # "external_id:<id>" or "email:<address>"
    state: str  # as /users/track writes it: opted_in, subscribed, unsubscribed
    time: int  # epoch seconds
    source: str  # Currents' state_change_source
    group_id: str | None = None


@dataclass
class BrazeUser:
    email_subscribe: str | None = None
    subscription_groups: dict[str, str] = field(default_factory=dict)
    updates: int = 0  # how many attributes objects were applied to this user


class BrazeWorkspace:
    def __init__(
        self,
        api_key: str = "local-braze-api-key",
        max_objects: int = 75,
        known_users: tuple[str, ...] = (),
        hang_seconds: float = 2.0,
        rate_limit_reset_in: int = 2,
        requests_per_window: int | None = None,
        window_seconds: int = 3,
        clock: Callable[[], float] = lambda: time.time(),
    ):
        self.api_key = api_key
        self.max_objects = max_objects
        self.hang_seconds = hang_seconds
        self.rate_limit_reset_in = rate_limit_reset_in  # an injected 429's reset, in seconds from now
        self.requests_per_window = requests_per_window  # None: no limit (Braze's default is 3,000 per 3 s)
        self.window_seconds = window_seconds
        self.clock = clock
        self.requests: list[ReceivedRequest] = []
        self.users: dict[str, BrazeUser] = {key: BrazeUser() for key in known_users}
        self.window_use: dict[int, int] = {}  # window start -> requests counted in it (others' use included)
        self.subscription_changes: list[SubscriptionChange] = []
        self._faults: deque[str] = deque()
        self._random: tuple[random.Random, float, tuple[str, ...]] | None = None
        self._lock = threading.Lock()

    # -- control -------------------------------------------------------------------------------------------
    def add_user(self, identity_key: str) -> None:
        with self._lock:
            self.users.setdefault(identity_key, BrazeUser())

    def fail_next(self, *faults: str) -> None:
        """Answer the next requests with these faults, in order (one fault per request)."""
        for fault in faults:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        with self._lock:
            self._faults.extend(faults)

    def fail_randomly(self, rate: float, seed: int, faults: tuple[str, ...] = FAULTS) -> None:
        self._random = (random.Random(seed), rate, faults)

    def use_capacity(self, requests: int) -> None:
        """Someone else's requests against the same workspace limit (the customer's other integrations)."""
        if self.requests_per_window is not None:
            with self._lock:
                start = self._window()
                self.window_use[start] = self.window_use.get(start, 0) + requests

    def track_requests(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path == "/users/track"]

    def state(self, identity_key: str) -> BrazeUser | None:
        return self.users.get(identity_key)

    def change_subscription(
        self,
        identity_key: str,
        email_subscribe: str | None = None,
        groups: dict[str, str] | None = None,
        source: str = "Dashboard",
    ) -> None:
        """A change made in Braze itself (an unsubscribe link, the preference centre, an agent in the dashboard)."""
        if email_subscribe is not None and email_subscribe not in EMAIL_STATES:
            raise ValueError(f"email_subscribe must be one of {EMAIL_STATES}")
        if any(state not in GROUP_STATES for state in (groups or {}).values()):
            raise ValueError(f"a group's state must be one of {GROUP_STATES}")
        with self._lock:
            user = self.users.setdefault(identity_key, BrazeUser())
            self._set(identity_key, user, email_subscribe, groups or {}, source)

    # -- behaviour -----------------------------------------------------------------------------------------
    def receive(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[ReceivedRequest, Answer]:
        """One request, recorded, and Braze's answer to it."""
        request = ReceivedRequest(method, path, {k.lower(): v for k, v in headers.items()}, None)
        with self._lock:
            self.requests.append(request)
        answer = self.handle(request, raw)
        request.status = answer.status
        return request, answer

    def handle(self, request: ReceivedRequest, raw: bytes) -> Answer:
        if request.method != "POST" or request.path != "/users/track":
            return Answer(404, {"message": "Not Found"})
        if request.headers.get("authorization", "") != f"Bearer {self.api_key}":
            return Answer(401, {"message": "Invalid API key"})
        limit = self._count_against_limit()
        if limit is not None and int(limit["X-RateLimit-Remaining"]) < 0:
            return Answer(429, {"message": "Rate limit exceeded"}, {**limit, "X-RateLimit-Remaining": "0"})
        answer = self._track(request, raw)
        if limit is not None:
            answer.headers = {**limit, **answer.headers}
        return answer

    def _track(self, request: ReceivedRequest, raw: bytes) -> Answer:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return Answer(400, {"message": "Content-Type must be application/json"})
        try:
            body = json.loads(raw)
        except ValueError:
            return Answer(400, {"message": "Invalid JSON in request body"})
        request.body = body
        problem = self._request_problem(body)
        if problem:
            return Answer(400, {"message": problem})

        fault = self._next_fault()
        request.fault = fault
        if fault in ("500", "503"):
            return Answer(int(fault), {"message": "Internal Server Error"})
        if fault == "429":
            reset = str(int(self.clock()) + self.rate_limit_reset_in)
            return Answer(
                429,
                {"message": "Rate limit exceeded"},
                {"X-RateLimit-Limit": "3000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
            )
        if fault == "401":
            return Answer(401, {"message": "Invalid API key"})
        if fault == "400":
            return Answer(400, {"message": "Bad Request"})

        errors = []
        processed = 0
        for index, obj in enumerate(body.get("attributes", [])):
            problem = "injected item error" if fault == "item_error" and index == 0 else _attribute_problem(obj)
            if problem:
                errors.append({"type": problem, "input_array": "attributes", "index": index})
                continue
            self._apply(obj)
            processed += 1
        answer: dict = {"message": "success", "attributes_processed": processed}
        if errors:
            answer["errors"] = errors
        return Answer(201, answer, hang=fault == "hang")

    def _window(self) -> int:
        now = int(self.clock())
        return now - now % self.window_seconds

    def _count_against_limit(self) -> dict[str, str] | None:
        """Count this request in the current window and say where the window stands (negative: over the limit)."""
        if self.requests_per_window is None:
            return None
        with self._lock:
            start = self._window()
            used = self.window_use[start] = self.window_use.get(start, 0) + 1
            for old in [w for w in self.window_use if w < start - 60]:
                del self.window_use[old]
        return {
            "X-RateLimit-Limit": str(self.requests_per_window),
            "X-RateLimit-Remaining": str(self.requests_per_window - used),
            "X-RateLimit-Reset": str(start + self.window_seconds),
        }

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self._random:
                rng, rate, faults = self._random
                if rng.random() < rate:
                    return rng.choice(faults)
        return None

    def _request_problem(self, body: object) -> str | None:
        if not isinstance(body, dict):
            return "Request body must be a JSON object"
        unknown = set(body) - {"attributes", "events", "purchases"}
        if unknown:
            return f"Unknown top-level field(s): {', '.join(sorted(unknown))}"
        total = 0
        for key in ("attributes", "events", "purchases"):
            value = body.get(key, [])
            if not isinstance(value, list):
                return f"'{key}' must be an array"
            total += len(value)
        if total == 0:
            return "Request must contain attributes, events or purchases"
        if total > self.max_objects:
            return f"Too many objects: {total} exceeds the limit of {self.max_objects} per request"
        return None

    def _apply(self, obj: dict) -> None:
        ident = next(k for k in IDENTIFIERS if k in obj)
        key = f"{ident}:{obj[ident]}"
        with self._lock:
            user = self.users.get(key)
            if user is None:
                if obj.get("_update_existing_only") is True:
                    return  # Braze does not create a profile for an unknown user here
                user = self.users[key] = BrazeUser()
            groups = {g["subscription_group_id"]: g["subscription_state"] for g in obj.get("subscription_groups", [])}
            self._set(key, user, obj.get("email_subscribe"), groups, "REST API")
            user.updates += 1

    def _set(self, key: str, user: BrazeUser, email: str | None, groups: dict[str, str], source: str) -> None:
        """Apply a change; Currents hears of it only when the state really changes."""
        now = int(self.clock())
        if email is not None and email != user.email_subscribe:
            user.email_subscribe = email
            self.subscription_changes.append(SubscriptionChange(str(uuid.uuid4()), key, email, now, source))
        for group_id, state in groups.items():
            if user.subscription_groups.get(group_id) != state:
                user.subscription_groups[group_id] = state
                self.subscription_changes.append(SubscriptionChange(str(uuid.uuid4()), key, state, now, source, group_id))


class BrazeEmulator(BrazeWorkspace):
    """A workspace served over HTTP on 127.0.0.1."""

    _server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0) -> BrazeEmulator:
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="braze-emulator", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> BrazeEmulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "emulator not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"


def _attribute_problem(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return "Attributes object must be a JSON object"
    present = [k for k in IDENTIFIERS if k in obj]
    if len(present) != 1:
        return "Attributes object must have exactly one of external_id, user_alias, braze_id, email, phone"
    ident = present[0]
    value = obj[ident]
    if ident in ("external_id", "braze_id") and (not isinstance(value, str) or not value):
        return f"'{ident}' must be a non-empty string"
    if ident == "email" and (not isinstance(value, str) or not _EMAIL.match(value)):
        return "'email' is not a valid email address"
    if "_update_existing_only" in obj and not isinstance(obj["_update_existing_only"], bool):
        return "'_update_existing_only' must be a boolean"
    if "email_subscribe" in obj and obj["email_subscribe"] not in EMAIL_STATES:
        return "'email_subscribe' must be one of opted_in, subscribed, unsubscribed"
    groups = obj.get("subscription_groups", [])
    if not isinstance(groups, list):
        return "'subscription_groups' must be an array"
    for group in groups:
        if not isinstance(group, dict) or set(group) != {"subscription_group_id", "subscription_state"}:
            return "each subscription group needs exactly subscription_group_id and subscription_state"
        if not isinstance(group["subscription_group_id"], str) or not group["subscription_group_id"]:
            return "'subscription_group_id' must be a non-empty string"
        if group["subscription_state"] not in GROUP_STATES:
            return "'subscription_state' must be subscribed or unsubscribed"
    return None


class _Handler(BaseHTTPRequestHandler):
    owner: BrazeEmulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid the delayed-ACK stall

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        _, answer = self.owner.receive(method, self.path, dict(self.headers.items()), raw)
        if answer.hang:
            time.sleep(self.owner.hang_seconds)
        payload = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a hang past its timeout)

    def log_message(self, format: str, *args) -> None:  # keep test and demo output clean
        pass
