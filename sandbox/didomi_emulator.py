"""A Didomi Platform API emulator: sessions, consent events and consent users, as strict as Didomi's documentation.

`DidomiOrganization` is one Didomi organisation without sockets: it checks what Didomi documents and records every
request. `DidomiEmulator` serves it over HTTP on 127.0.0.1. It is a stand-in for a service the tests cannot reach
and is never loosened to make a test pass. What it checks, with the documentation it follows
(developers.didomi.io, and the OpenAPI document in shared/reference where the pages are silent):

- `POST /v1/sessions` with `{"type": "api-key", "key", "secret"}` → `access_token`; anything else is a 400
  ("If there is a problem authenticating you, a 400 error is returned"). Tokens expire after an hour on the
  emulator's clock; "Calls without a valid authorization token will fail with a 401 error code".
- Every `/v1/consents` call needs `organization_id`, the organisation the key belongs to.
- `POST /v1/consents/events`: the body's shape (`user`, `consents.purposes[]` with `id`, `enabled`, v2 `values`,
  `channels[]`, `delegate` with an `id`, ...); with API v2, "only existing or previously existing purposes,
  preferences and preferences value IDs in your organization will be accepted"; an `id` that exists already is
  refused ("the API will ensure that the event does not already exist": the status is not documented, this answers
  409 Conflict, Feathers' error for it). A confirmed event is merged into the user's consent status (the user is
  created if needed), and unless `$disable_integrations=true` the organisation's integrations are notified
  (`notifications`: the webhook payloads Didomi would send).
- `GET /v1/consents/users` "by pages of 100 [...] The returned `cursor` is `null` when there is no more result",
  `$cursor` for the next page; `organization_user_id` filters.
- Routes outside `/consents` (`/sessions` included) and `$include_full_tree=true` reads are limited to "100 requests
  every 15 seconds per organization" (429).
- Faults on demand: 401, 429, 5xx, or a hang after the change was applied (the answer is lost, the change is not).
  Didomi documents no header on a 429; `retry_after` adds HTTP's standard `Retry-After` to the 429 fault.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("401", "429", "500", "502", "503", "hang")
TOKEN_SECONDS = 3600
RATE_LIMIT = 100
RATE_WINDOW_SECONDS = 15
PAGE_SIZE = 100
EVENT_FIELDS = {
    "id",
    "organization_id",
    "created_at",
    "status",
    "user",
    "consents",
    "proofs_id",
    "proofs",
    "delegate",
    "regulation",
    "metadata",
}
USER_FIELDS = {"id", "organization_user_id", "metadata", "country", "last_seen_country"}
PURPOSE_FIELDS = {"id", "enabled", "enabled_li", "metadata", "channels", "preferences", "values"}
STATUSES = ("confirmed", "pending_approval")
_REGULATION = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")

# The purposes, v2 preferences and their values the sample organisation has (events/ and the demo use these).
SAMPLE_PURPOSES: dict[str, dict[str, set[str]]] = {
    "newsletter": {},
    "marketing": {},
    "offers": {"topics": {"sales", "news", "events"}},
    "product_updates": {"frequency": {"weekly", "monthly"}},
}


@dataclass
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: object
    status: int = 0
    fault: str | None = None


@dataclass
class Answer:
    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # the answer comes too late for the client (the change itself was applied)


def _error(status: int, name: str, message: str) -> Answer:
    """Didomi's documented error body: code, name, message, errors."""
    return Answer(status, {"code": status, "name": name, "message": message, "errors": {}})


class DidomiOrganization:
    def __init__(
        self,
        organization_id: str = "local-org",
        api_key: str = "local-didomi-key",
        api_secret: str = "local-didomi-secret",  # noqa: S107 (a local-only credential)
        purposes: dict[str, dict[str, set[str]]] | None = None,
        channels: tuple[str, ...] = ("email",),
        clock: Callable[[], float] = lambda: time.time(),
        page_size: int = PAGE_SIZE,
        hang_seconds: float = 2.0,
    ):
        self.organization_id = organization_id
        self.api_key, self.api_secret = api_key, api_secret
        self.purposes = SAMPLE_PURPOSES if purposes is None else purposes
        self.channels = set(channels)
        self.clock = clock
        self.page_size = page_size
        self.hang_seconds = hang_seconds
        # Didomi documents no header on a 429; set this to send HTTP's standard Retry-After with the 429 fault.
        self.retry_after: int | None = None
        self.requests: list[ReceivedRequest] = []
        self.events: dict[str, dict] = {}
        self.users: dict[str, dict] = {}  # Didomi user id -> ConsentUser
        self.notifications: list[dict] = []  # what the organisation's integrations (webhooks) would receive
        self.tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        self.window_use: dict[int, int] = {}
        self._faults: deque[tuple[str, str | None]] = deque()
        self._lock = threading.RLock()

    # -- control -------------------------------------------------------------------------------------------
    def fail_next(self, *faults: str, path: str | None = None) -> None:
        """Answer the next requests (to `path` only, when given) with these faults, one per request."""
        for fault in faults:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        with self._lock:
            self._faults.extend((fault, path) for fault in faults)

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (as after an hour)."""
        with self._lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    def user(self, organization_user_id: str, regulation: str = "gdpr") -> dict | None:
        with self._lock:
            for user in self.users.values():
                if user["organization_user_id"] == organization_user_id:
                    return self._view(user, regulation)
        return None

    def add_user(
        self,
        organization_user_id: str,
        consents: dict,
        regulation: str = "gdpr",
        version: int | None = None,
        updated_at: str | None = None,
    ) -> dict:
        """A user as if it had been collected by Didomi before (no event, no notification); `version` and
        `updated_at` as Didomi would hold them for a user changed since (default: just created, version 0)."""
        with self._lock:
            user = self._new_user(organization_user_id)
            user["_consents"][regulation] = copy.deepcopy(consents)
            if version is not None:
                user["version"] = version
            if updated_at is not None:
                user["updated_at"] = updated_at
            return self._view(user, regulation)

    def drain_notifications(self) -> list[dict]:
        with self._lock:
            out, self.notifications = self.notifications, []
        return out

    def sessions(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path == "/v1/sessions"]

    # -- behaviour -----------------------------------------------------------------------------------------
    def receive(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[ReceivedRequest, Answer]:
        path, _, query_text = target.partition("?")
        query = dict(urllib.parse.parse_qsl(query_text, keep_blank_values=True))
        request = ReceivedRequest(method, path, query, {k.lower(): v for k, v in headers.items()}, None)
        with self._lock:
            self.requests.append(request)
            answer = self._handle(request, raw)
        request.status = answer.status
        return request, answer

    def _handle(self, request: ReceivedRequest, raw: bytes) -> Answer:
        route = (request.method, request.path)
        known = {("POST", "/v1/sessions"), ("POST", "/v1/consents/events"), ("GET", "/v1/consents/users")}
        if route not in known:
            return _error(404, "NotFound", f"Page not found: {request.method} {request.path}")
        if self._rate_limited(request):
            return _error(429, "TooManyRequests", "Too many requests: 100 requests every 15 seconds per organization")
        fault = self._next_fault(request.path)
        request.fault = fault
        if fault == "429":
            answer = _error(429, "TooManyRequests", "Too many requests")
            if self.retry_after is not None:
                answer.headers["Retry-After"] = str(self.retry_after)
            return answer
        if fault in ("500", "502", "503"):
            return _error(int(fault), "GeneralError", "Internal server error")
        if request.path == "/v1/sessions":
            return self._session(request, raw, fault)
        if fault == "401" or not self._authorized(request):
            return _error(401, "NotAuthenticated", "Invalid or expired access token")
        organization = request.query.get("organization_id")
        if not organization:
            return _error(400, "BadRequest", "organization_id is required")
        if organization != self.organization_id:
            return _error(403, "Forbidden", "You are not allowed to access this organization")
        if request.path == "/v1/consents/users":
            return self._users(request)
        answer = self._create_event(request, raw)
        answer.hang = fault == "hang"
        return answer

    def _rate_limited(self, request: ReceivedRequest) -> bool:
        limited = not request.path.startswith("/v1/consents/") or request.query.get("$include_full_tree") == "true"
        if not limited:
            return False
        now = int(self.clock())
        start = now - now % RATE_WINDOW_SECONDS
        self.window_use[start] = self.window_use.get(start, 0) + 1
        return self.window_use[start] > RATE_LIMIT

    def _next_fault(self, path: str) -> str | None:
        for index, (fault, only) in enumerate(self._faults):
            if only is None or only == path:
                del self._faults[index]
                return fault
        return None

    def _session(self, request: ReceivedRequest, raw: bytes, fault: str | None) -> Answer:
        bad = _error(400, "BadRequest", "Invalid authentication information")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return bad
        try:
            body = json.loads(raw)
        except ValueError:
            return bad
        if fault == "401" or not isinstance(body, dict) or body.get("type") != "api-key":
            return bad
        if body.get("key") != self.api_key or body.get("secret") != self.api_secret:
            return bad
        request.body = {"type": "api-key", "key": "<redacted>", "secret": "<redacted>"}
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.clock() + TOKEN_SECONDS
        return Answer(200, {"type": "api-key", "key": self.api_key, "access_token": token})

    def _authorized(self, request: ReceivedRequest) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expires = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        return expires is not None and self.clock() < expires

    # -- consent users -------------------------------------------------------------------------------------
    def _users(self, request: ReceivedRequest) -> Answer:
        regulation = request.query.get("regulation", "gdpr")
        wanted = request.query.get("organization_user_id")
        users = [u for u in self.users.values() if wanted is None or u["organization_user_id"] == wanted]  # creation order
        offset = 0
        if "$cursor" in request.query:
            try:
                offset = int(base64.urlsafe_b64decode(request.query["$cursor"].encode()).decode())
            except ValueError:
                return _error(400, "BadRequest", "Invalid $cursor")
        page = users[offset : offset + self.page_size]
        following = offset + len(page)
        cursor = base64.urlsafe_b64encode(str(following).encode()).decode() if following < len(users) else None
        return Answer(200, {"data": [self._view(u, regulation) for u in page], "limit": len(page), "cursor": cursor})

    def _view(self, user: dict, regulation: str) -> dict:
        out = {k: copy.deepcopy(v) for k, v in user.items() if not k.startswith("_")}
        out["consents"] = copy.deepcopy(user["_consents"].get(regulation, {"purposes": [], "channels": [], "vendors": {}}))
        return out

    def _new_user(self, organization_user_id: str | None) -> dict:
        now = _iso(self.clock())
        user = {
            "id": str(uuid.uuid4()),
            "organization_id": self.organization_id,
            "organization_user_id": organization_user_id,
            "version": 0,
            "created_at": now,
            "updated_at": now,
            "metadata": {},
            "_consents": {},
        }
        self.users[user["id"]] = user
        return user

    # -- consent events ------------------------------------------------------------------------------------
    def _create_event(self, request: ReceivedRequest, raw: bytes) -> Answer:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(400, "BadRequest", "Content-Type must be application/json")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "BadRequest", "Invalid JSON body")
        request.body = body
        problem = self._event_problem(body)
        if problem:
            return _error(400, "BadRequest", problem)
        if body.get("id") in self.events:
            return _error(409, "Conflict", f"A consent event with id {body['id']} already exists")

        regulation = body.get("regulation", "gdpr")
        user_ids = body.get("user", {})
        user = self._find_user(user_ids)
        created = user is None
        if created:
            user = self._new_user(user_ids.get("organization_user_id"))
            if "id" in user_ids:
                del self.users[user["id"]]
                user["id"] = user_ids["id"]
                self.users[user["id"]] = user
        elif user["organization_user_id"] is None and user_ids.get("organization_user_id"):
            user["organization_user_id"] = user_ids["organization_user_id"]
        event = {
            "id": body.get("id") or str(uuid.uuid4()),
            "organization_id": self.organization_id,
            "created_at": body.get("created_at") or _iso(self.clock()),
            "status": body.get("status", "confirmed"),
            "regulation": regulation,
            "user": {"id": user["id"], "organization_user_id": user["organization_user_id"]},
            "consents": copy.deepcopy(body["consents"]),
        }
        for name in ("delegate", "metadata", "proofs_id"):
            if name in body:
                event[name] = copy.deepcopy(body[name])
        self.events[event["id"]] = event
        if event["status"] == "confirmed":
            old = self._view(user, regulation)
            _merge(user["_consents"].setdefault(regulation, {"purposes": [], "channels": [], "vendors": {}}), body["consents"])
            user["version"] += 1
            user["updated_at"] = _iso(self.clock())
            if isinstance(user_ids.get("metadata"), dict):
                user["metadata"].update(user_ids["metadata"])
            if request.query.get("$disable_integrations") != "true":
                self.notifications.append({"type": "event.created", "parameters": {"entity": copy.deepcopy(event)}})
                new = self._view(user, regulation)
                if created:
                    self.notifications.append({"type": "user.created", "parameters": {"entity": new}})
                else:
                    self.notifications.append(
                        {
                            "type": "user.updated",
                            "parameters": {"source": copy.deepcopy(event), "old_entity": old, "new_entity": new},
                        }
                    )
        return Answer(200, copy.deepcopy(event))

    def _find_user(self, ids: dict) -> dict | None:
        if "id" in ids and ids["id"] in self.users:
            return self.users[ids["id"]]
        wanted = ids.get("organization_user_id")
        if wanted:
            matches = [u for u in self.users.values() if u["organization_user_id"] == wanted]
            return max(matches, key=lambda u: u["updated_at"], default=None)
        return None

    def _event_problem(self, body: object) -> str | None:
        if not isinstance(body, dict):
            return "The body must be a consent event object"
        unknown = set(body) - EVENT_FIELDS
        if unknown:
            return f"Unknown propert{'ies' if len(unknown) > 1 else 'y'}: {', '.join(sorted(unknown))}"
        if "id" in body and (not isinstance(body["id"], str) or not body["id"]):
            return "id must be a non-empty string"
        if "organization_id" in body and body["organization_id"] != self.organization_id:
            return "organization_id does not match the organization_id query parameter"
        if "created_at" in body and not _is_iso(body["created_at"]):
            return "created_at must be an ISO 8601 date"
        if "status" in body and body["status"] not in STATUSES:
            return f"status must be one of {', '.join(STATUSES)}"
        if "regulation" in body and (not isinstance(body["regulation"], str) or not _REGULATION.match(body["regulation"])):
            return "regulation must be a regulation id such as gdpr or cpra"
        user = body.get("user")
        if not isinstance(user, dict):
            return "user is required and must be an object"
        if set(user) - USER_FIELDS:
            return f"Unknown user properties: {', '.join(sorted(set(user) - USER_FIELDS))}"
        for name in ("id", "organization_user_id"):
            if name in user and (not isinstance(user[name], str) or not user[name]):
                return f"user.{name} must be a non-empty string"
        if "metadata" in user and not isinstance(user["metadata"], dict):
            return "user.metadata must be an object"
        delegate = body.get("delegate")
        if delegate is not None:
            if not isinstance(delegate, dict) or not isinstance(delegate.get("id"), str) or not delegate["id"]:
                return "delegate.id is required and must be a string"
            if "name" in delegate and not isinstance(delegate["name"], str):
                return "delegate.name must be a string"
            if "metadata" in delegate and not isinstance(delegate["metadata"], dict):
                return "delegate.metadata must be an object"
        return self._consents_problem(body.get("consents"))

    def _consents_problem(self, consents: object) -> str | None:
        if not isinstance(consents, dict):
            return "consents is required and must be an object"
        unknown = set(consents) - {"purposes", "channels", "vendors", "tcfcs"}
        if unknown:
            return f"Unknown consents properties: {', '.join(sorted(unknown))}"
        purposes = consents.get("purposes", [])
        if not isinstance(purposes, list):
            return "consents.purposes must be an array"
        for i, purpose in enumerate(purposes):
            where = f"consents.purposes[{i}]"
            if not isinstance(purpose, dict) or not isinstance(purpose.get("id"), str) or not purpose["id"]:
                return f"{where}.id is required and must be a string"
            if set(purpose) - PURPOSE_FIELDS:
                return f"Unknown {where} properties: {', '.join(sorted(set(purpose) - PURPOSE_FIELDS))}"
            if purpose["id"] not in self.purposes:
                return f"{where}.id {purpose['id']!r} is not a purpose of this organization"
            for flag in ("enabled", "enabled_li"):
                if flag in purpose and purpose[flag] is not None and not isinstance(purpose[flag], bool):
                    return f"{where}.{flag} must be true, false or null"
            problem = self._values_problem(purpose["id"], purpose.get("values"), where)
            if problem:
                return problem
            problem = _preferences_problem(purpose.get("preferences"), where)
            if problem:
                return problem
        channels = consents.get("channels", [])
        if not isinstance(channels, list):
            return "consents.channels must be an array"
        for i, channel in enumerate(channels):
            if not isinstance(channel, dict) or not isinstance(channel.get("id"), str) or channel["id"] not in self.channels:
                return f"consents.channels[{i}].id must be a channel of this organization"
            if "enabled" in channel and channel["enabled"] is not None and not isinstance(channel["enabled"], bool):
                return f"consents.channels[{i}].enabled must be true, false or null"
        vendors = consents.get("vendors")
        if vendors is not None and not isinstance(vendors, dict):
            return "consents.vendors must be an object"
        return None

    def _values_problem(self, purpose_id: str, values: object, where: str) -> str | None:
        if values is None:
            return None
        if not isinstance(values, dict):
            return f"{where}.values must be an object"
        for preference, selection in values.items():
            allowed = self.purposes[purpose_id].get(preference)
            if allowed is None:
                return f"{where}.values.{preference} is not a preference of purpose {purpose_id!r}"
            if not isinstance(selection, dict) or set(selection) - {"value"}:
                return f'{where}.values.{preference} must be an object like {{"value": "a,b"}}'
            text = selection.get("value")
            if text is None:
                continue
            if not isinstance(text, str):
                return f"{where}.values.{preference}.value must be a comma-separated string"
            unknown = [v for v in (part.strip() for part in text.split(",")) if v and v not in allowed]
            if unknown:
                return f"{where}.values.{preference}.value: {', '.join(unknown)} is not a value of this preference"
        return None


def _preferences_problem(preferences: object, where: str) -> str | None:
    if preferences is None:
        return None
    if not isinstance(preferences, list):
        return f"{where}.preferences must be an array"
    for j, preference in enumerate(preferences):
        if not isinstance(preference, dict) or not isinstance(preference.get("id"), str) or not preference["id"]:
            return f"{where}.preferences[{j}].id is required and must be a string"
        if "enabled" in preference and preference["enabled"] is not None and not isinstance(preference["enabled"], bool):
            return f"{where}.preferences[{j}].enabled must be true, false or null"
    return None


def _merge(state: dict, change: dict) -> None:
    """A consent event "merged into the user consent status": what it carries replaces, the rest stays."""
    for purpose in change.get("purposes", []):
        mine = next((p for p in state["purposes"] if p["id"] == purpose["id"]), None)
        if mine is None:
            mine = {"id": purpose["id"]}
            state["purposes"].append(mine)
        for name in ("enabled", "enabled_li", "metadata"):
            if name in purpose:
                mine[name] = copy.deepcopy(purpose[name])
        if "values" in purpose:
            mine.setdefault("values", {}).update(copy.deepcopy(purpose["values"]))
        for preference in purpose.get("preferences") or []:
            prefs = mine.setdefault("preferences", [])
            theirs = next((p for p in prefs if p["id"] == preference["id"]), None)
            if theirs is None:
                prefs.append(copy.deepcopy(preference))
            else:
                theirs.update(copy.deepcopy(preference))
    for channel in change.get("channels", []):
        mine = next((c for c in state["channels"] if c["id"] == channel["id"]), None)
        if mine is None:
            state["channels"].append(copy.deepcopy(channel))
        else:
            mine.update(copy.deepcopy(channel))
    if isinstance(change.get("vendors"), dict):
        state["vendors"] = copy.deepcopy(change["vendors"])


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_iso(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


class DidomiEmulator(DidomiOrganization):
    """An organisation served over HTTP on 127.0.0.1."""

    _server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0) -> DidomiEmulator:
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="didomi-emulator", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> DidomiEmulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "emulator not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    owner: DidomiEmulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

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

    def log_message(self, format: str, *args) -> None:
        pass
