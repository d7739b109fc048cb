"""Didomi Platform API client: sessions cached per container, consent events, consent users page by page.

What to send and what Didomi's answers mean is decided in `domain/didomi_api.py`; this module only makes the
calls. The API key and secret are read from their Secrets Manager secret (never from the environment or argv),
sent only in the body of `POST /sessions`, and never logged: nothing here logs, and no answer or exception carries
a header or a request body.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping

import urllib3

from .. import __version__
from ..domain.didomi_api import (
    EVENTS_PATH,
    RETRYABLE,
    SESSIONS_PATH,
    UNAUTHORIZED,
    USERS_PATH,
    DidomiAnswer,
    DidomiCredentials,
    Session,
    classify,
    classify_session,
    parse_didomi_secret,
    session_body,
    transport_failure,
    users_page,
)
from ..domain.errors import DidomiUnavailable

USER_AGENT = f"didomi-braze-preference-sync/{__version__}"
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a page of 100 users with their consents


class TransportError(Exception):
    """The call did not get an answer (timeout, connection refused or reset). Its text never holds a header."""


# (method, url, headers, body) -> (status, headers, body)
Transport = Callable[[str, str, Mapping[str, str], bytes | None], tuple[int, Mapping[str, str], bytes]]


class Urllib3Transport:
    """HTTP over one pooled urllib3 manager, short timeouts, no hidden retries (ours are scheduled on SQS)."""

    def __init__(self, connect_timeout: float = 2.0, read_timeout: float = 10.0, pool: urllib3.PoolManager | None = None):
        self._pool = pool or urllib3.PoolManager(num_pools=2, maxsize=16, retries=False)
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout, total=connect_timeout + read_timeout)

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        try:
            response = self._pool.request(
                method, url, body=body, headers=dict(headers), timeout=self._timeout, retries=False, preload_content=False
            )
            try:
                data = response.read(MAX_RESPONSE_BYTES)
            finally:
                response.release_conn()
        except urllib3.exceptions.TimeoutError:
            raise TransportError("timed out") from None
        except urllib3.exceptions.HTTPError as exc:
            raise TransportError(type(exc).__name__) from None
        return response.status, response.headers, data


class DidomiCredentialsSource:
    """The Didomi secret `{"key", "secret", "organization_id"}`, read through the cached secret store."""

    def __init__(self, store, secret_id: str):
        self._store = store
        self._secret_id = secret_id
        self._parsed: tuple[str, DidomiCredentials] | None = None

    def load(self, force: bool = False) -> DidomiCredentials:
        text = self._store.read(self._secret_id, force=force)
        if self._parsed is None or self._parsed[0] != text:
            self._parsed = (text, parse_didomi_secret(text, self._secret_id))
        return self._parsed[1]


class DidomiClient:
    """The `DidomiApi` port. Thread-safe: one session is shared by the invocation's threads."""

    def __init__(
        self,
        credentials: Callable[[bool], DidomiCredentials],
        base_url: str,
        transport: Transport,
        clock: Callable[[], float] = time.time,
    ):
        self._credentials = credentials
        self._base = base_url
        self._transport = transport
        self._clock = clock
        self._session: Session | None = None
        self._reread_secret = False
        self._lock = threading.Lock()
        self.sessions_created = 0  # observed by tests and benchmarks: sessions are rate limited (100 per 15 s)

    # -- the port ------------------------------------------------------------------------------------------------
    def create_event(self, body: dict, disable_integrations: bool = False) -> DidomiAnswer:
        """Create a consent event. With an `id` in the body, Didomi's "already exists" counts as WRITTEN."""
        query = {"$disable_integrations": "true"} if disable_integrations else {}
        payload = json.dumps(body, separators=(",", ":")).encode()
        return self._call("POST", EVENTS_PATH, query, payload, creating="id" in body)

    def users(self, organization_user_id: str | None = None, regulation: str | None = None) -> Iterator[dict]:
        """Every consent user of the organisation (or those with this organization_user_id), page after page, with
        their consents under `regulation` (Didomi's default: GDPR)."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page, following = self.user_page(cursor, regulation, organization_user_id)
            yield from page
            if following is None:
                return
            if following in seen:
                raise DidomiUnavailable(DidomiAnswer(RETRYABLE, "didomi answered the same cursor twice", 200))
            seen.add(following)
            cursor = following

    def user_page(
        self, cursor: str | None = None, regulation: str | None = None, organization_user_id: str | None = None
    ) -> tuple[list[dict], str | None]:
        """One page of consent users (Didomi's pages hold 100) from `cursor` (None: the first), and the next page's
        cursor (None: this was the last). Raises DidomiUnavailable with Didomi's answer."""
        query = {"organization_user_id": organization_user_id} if organization_user_id is not None else {}
        if regulation is not None:
            query["regulation"] = regulation
        if cursor is not None:
            query["$cursor"] = cursor
        answer = self._call("GET", USERS_PATH, query, None)
        if not answer.succeeded:
            raise DidomiUnavailable(answer)
        try:
            return users_page(answer.data)
        except ValueError as exc:
            raise DidomiUnavailable(
                DidomiAnswer(RETRYABLE, f"didomi answered an unreadable page of users: {exc}", answer.status)
            ) from None

    # -- calls -----------------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, query: dict[str, str], body: bytes | None, creating: bool = False) -> DidomiAnswer:
        credentials = self._load()  # ConfigurationError: the secret is unreadable or unfilled, the caller fails loudly
        failed_token: str | None = None
        answer: DidomiAnswer | None = None
        for _ in range(2):  # a 401 gets one new session, then counts as a failure
            token = self._token(credentials, failed_token)
            if isinstance(token, DidomiAnswer):
                return token
            url = f"{self._base}{path}?{urllib.parse.urlencode({'organization_id': credentials.organization_id, **query})}"
            headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT, "Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            try:
                status, answer_headers, raw = self._transport(method, url, headers, body)
            except TransportError as exc:
                return transport_failure(str(exc))
            answer = classify(status, answer_headers, raw, self._clock(), creating)
            if answer.kind != UNAUTHORIZED:
                return answer
            failed_token = token
        assert answer is not None
        self._reread_secret = True  # the key may have been disabled or rotated
        return DidomiAnswer(RETRYABLE, f"{answer.reason}; a new session did not help", answer.status, refresh_credentials=True)

    def _load(self) -> DidomiCredentials:
        force, self._reread_secret = self._reread_secret, False
        return self._credentials(force)

    def _token(self, credentials: DidomiCredentials, failed: str | None) -> str | DidomiAnswer:
        """The cached session's token, or a new one: when there is none, it is old, it belongs to another key, or it
        is the one that just got a 401 (another thread may have renewed it meanwhile)."""
        with self._lock:
            session, now = self._session, self._clock()
            if session is not None and session.usable(credentials.key_ref, now) and session.token != failed:
                return session.token
            try:
                status, headers, raw = self._transport(
                    "POST",
                    self._base + SESSIONS_PATH,
                    {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Accept": "application/json"},
                    session_body(credentials),
                )
            except TransportError as exc:
                return transport_failure(str(exc))
            token, problem = classify_session(status, raw)
            if token is None:
                answer = problem or classify(status, headers, raw, now)
                if answer.refresh_credentials:
                    self._reread_secret = True
                return answer
            self._session = Session(token, credentials.key_ref, now)
            self.sessions_created += 1
            return token
