"""A Braze REST emulator on loopback: `POST /users/track`, as strict as Braze's documentation.

It checks what Braze checks (API key, JSON body, object counts, identifiers, allowed values), keeps each
user's subscription state, records every request, and can be told to fail: 5xx, 429 with
`X-RateLimit-Reset`, 401, 400, a hang past the client's timeout, or per-object errors in a 201.
It is the stand-in for a service the tests cannot reach; it is never loosened to make a test pass.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import deque
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
class BrazeUser:
    email_subscribe: str | None = None
    subscription_groups: dict[str, str] = field(default_factory=dict)
    updates: int = 0  # how many attributes objects were applied to this user


class BrazeEmulator:
    def __init__(
        self,
        api_key: str = "local-braze-api-key",
        max_objects: int = 75,
        known_users: tuple[str, ...] = (),
        hang_seconds: float = 2.0,
        rate_limit_reset_in: int = 2,
    ):
        self.api_key = api_key
        self.max_objects = max_objects
        self.hang_seconds = hang_seconds
        self.rate_limit_reset_in = rate_limit_reset_in
        self.requests: list[ReceivedRequest] = []
        self.users: dict[str, BrazeUser] = {key: BrazeUser() for key in known_users}
        self._faults: deque[str] = deque()
        self._random: tuple[random.Random, float, tuple[str, ...]] | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------------------------------
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

    def track_requests(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path == "/users/track"]

    def state(self, identity_key: str) -> BrazeUser | None:
        return self.users.get(identity_key)

    # -- behaviour -----------------------------------------------------------------------------------------
    def _next_fault(self) -> str | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self._random:
                rng, rate, faults = self._random
                if rng.random() < rate:
                    return rng.choice(faults)
        return None

    def handle(self, request: ReceivedRequest, raw: bytes) -> tuple[int, dict, dict[str, str]]:
        if request.method != "POST" or request.path != "/users/track":
            return 404, {"message": "Not Found"}, {}
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            return 401, {"message": "Invalid API key"}, {}
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return 400, {"message": "Content-Type must be application/json"}, {}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"message": "Invalid JSON in request body"}, {}
        request.body = body
        problem = self._request_problem(body)
        if problem:
            return 400, {"message": problem}, {}

        fault = self._next_fault()
        request.fault = fault
        if fault in ("500", "503"):
            return int(fault), {"message": "Internal Server Error"}, {}
        if fault == "429":
            reset = str(int(time.time()) + self.rate_limit_reset_in)
            return (
                429,
                {"message": "Rate limit exceeded"},
                {"X-RateLimit-Limit": "3000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
            )
        if fault == "401":
            return 401, {"message": "Invalid API key"}, {}
        if fault == "400":
            return 400, {"message": "Bad Request"}, {}
        if fault == "hang":
            time.sleep(self.hang_seconds)
            return 503, {"message": "Service Unavailable"}, {}

        objects = body.get("attributes", [])
        errors = []
        fail_index = 0 if fault == "item_error" else None
        processed = 0
        for index, obj in enumerate(objects):
            problem = "injected item error" if index == fail_index else _attribute_problem(obj)
            if problem:
                errors.append({"type": problem, "input_array": "attributes", "index": index})
                continue
            self._apply(obj)
            processed += 1
        answer: dict = {"message": "success", "attributes_processed": processed}
        if errors:
            answer["errors"] = errors
        return 201, answer, {}

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
            if "email_subscribe" in obj:
                user.email_subscribe = obj["email_subscribe"]
            for group in obj.get("subscription_groups", []):
                user.subscription_groups[group["subscription_group_id"]] = group["subscription_state"]
            user.updates += 1


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
        request = ReceivedRequest(method, self.path, {k.lower(): v for k, v in self.headers.items()}, None)
        with self.owner._lock:
            self.owner.requests.append(request)
        status, answer, headers = self.owner.handle(request, raw)
        request.status = status
        payload = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a hang past its timeout)

    def log_message(self, format: str, *args) -> None:  # keep test and demo output clean
        pass
