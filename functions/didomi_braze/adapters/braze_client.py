"""Braze REST client: one pooled urllib3 connection pool per container, short timeouts, no hidden retries."""

from __future__ import annotations

import urllib3

from .. import __version__
from ..domain.braze import TRACK_PATH, BrazeOutcome, classify_response, track_body, transport_failure

USER_AGENT = f"didomi-braze-preference-sync/{__version__}"
ANSWER_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
MAX_RESPONSE_BYTES = 64 * 1024


class BrazeClient:
    def __init__(self, connect_timeout: float = 2.0, read_timeout: float = 5.0, pool: urllib3.PoolManager | None = None):
        # Retries are ours to schedule (SQS), never urllib3's: a hidden retry would hold the webhook open.
        self._pool = pool or urllib3.PoolManager(num_pools=4, maxsize=10, retries=False)
        # `total` bounds the whole call, so that a lease taken for it reliably outlives it.
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout, total=connect_timeout + read_timeout)

    def track(self, server: str, api_key: str, objects: list[dict]) -> BrazeOutcome:
        """POST the attributes objects to `/users/track` and classify the answer."""
        try:
            response = self._pool.request(
                "POST",
                server + TRACK_PATH,
                body=track_body(objects),
                headers={
                    "Authorization": f"Bearer {api_key}",
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                },
                timeout=self._timeout,
                retries=False,
                preload_content=False,
            )
            try:
                # A body whose announced length is within the limit is read in one go; `read(amt)` reads once more
                # to find the end. Any other body is read up to the limit.
                length = response.length_remaining
                body = (
                    response.read() if length is not None and length <= MAX_RESPONSE_BYTES else response.read(MAX_RESPONSE_BYTES)
                )
            finally:
                response.release_conn()
        except urllib3.exceptions.TimeoutError:
            return transport_failure("timed out")
        except urllib3.exceptions.HTTPError as exc:
            # The exception text can hold the URL but never the headers, so the key cannot leak through it.
            return transport_failure(type(exc).__name__)
        # Only the headers the classification reads (urllib3's header dict is case-insensitive; a plain dict is not).
        headers = {name: value for name in ANSWER_HEADERS if (value := response.headers.get(name)) is not None}
        return classify_response(response.status, headers, body, len(objects))
