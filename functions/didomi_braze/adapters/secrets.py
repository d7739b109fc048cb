"""Secrets Manager: the webhook token and the connector document, cached per container with a TTL."""

from __future__ import annotations

import time

from botocore.exceptions import BotoCoreError, ClientError

from ..domain.connector import ConnectorConfig, parse_connector_document
from ..domain.errors import ConfigurationError


class SecretStore:
    """Reads secret strings, each cached for `max_age` seconds (what Powertools' SecretsProvider does, without
    importing its parameters package, which loads every provider it has, into the webhook's cold start)."""

    def __init__(self, client, max_age: int):
        self._client = client
        self._max_age = max_age
        self._cache: dict[str, tuple[str | bytes, float]] = {}  # secret id -> (value, epoch seconds it expires)

    def read(self, secret_id: str, force: bool = False) -> str:
        cached = self._cache.get(secret_id)
        if cached is not None and not force and cached[1] >= time.time():
            value = cached[0]
        else:
            try:
                answer = self._client.get_secret_value(SecretId=secret_id)
                value = answer["SecretString"] if "SecretString" in answer else answer["SecretBinary"]
            except Exception as exc:
                # The SDK's message names the secret and the error code, never the secret's value.
                raise ConfigurationError(f"cannot read secret {secret_id}: {exc}") from None
            if self._max_age > 0:
                self._cache[secret_id] = (value, time.time() + self._max_age)
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"secret {secret_id} has no SecretString")
        return value


class ConnectorSource:
    """The connector document from its secret, parsed once per distinct document text."""

    def __init__(self, store: SecretStore, secret_id: str, allow_loopback: bool):
        self._store = store
        self._secret_id = secret_id
        self._allow_loopback = allow_loopback
        self._parsed: tuple[str, ConnectorConfig] | None = None

    def load(self, force: bool = False) -> ConnectorConfig:
        text = self._store.read(self._secret_id, force=force)
        if self._parsed is None or self._parsed[0] != text:
            try:
                config = parse_connector_document(text, allow_loopback=self._allow_loopback)
            except ConfigurationError as exc:
                raise ConfigurationError([f"connector secret {self._secret_id}: {p}" for p in exc.problems]) from None
            self._parsed = (text, config)
        return self._parsed[1]


class WebhookTokens:
    """The webhook token in `AWSCURRENT` and, for `grace_seconds` after a rotation, the one in `AWSPREVIOUS`.

    Rotating is `put-secret-value` with a new token: Secrets Manager moves the old one to AWSPREVIOUS, so Didomi's
    deliveries with the old token keep working while its header is updated. A token that matches none is
    re-read at most every `refresh_interval` seconds, so a container picks a rotation up without waiting for the
    cache to expire, and bad requests cannot turn into a stream of secret reads.
    """

    def __init__(self, client, secret_id: str, max_age: int, grace_seconds: int, refresh_interval: int = 30):
        self._client = client
        self._secret_id = secret_id
        self._max_age = max_age
        self._grace = grace_seconds
        self._refresh_interval = refresh_interval
        self._tokens: tuple[str, ...] = ()
        self._fetched_at = float("-inf")

    def valid(self) -> tuple[str, ...]:
        if time.monotonic() - self._fetched_at > self._max_age:
            self._fetch()
        return self._tokens

    def refresh_after_miss(self) -> bool:
        """Re-read the secret if the copy is old enough; True when it was re-read."""
        if time.monotonic() - self._fetched_at < self._refresh_interval:
            return False
        self._fetch()
        return True

    def _fetch(self) -> None:
        try:
            current = self._client.get_secret_value(SecretId=self._secret_id)
            tokens = [current.get("SecretString") or ""]
            created = current.get("CreatedDate")
            if self._grace > 0 and created is not None and time.time() - created.timestamp() < self._grace:
                tokens.append(self._previous())
        except (ClientError, BotoCoreError) as exc:
            raise ConfigurationError(f"cannot read secret {self._secret_id}: {type(exc).__name__}: {_code(exc)}") from None
        if not tokens[0]:
            raise ConfigurationError(f"secret {self._secret_id} has no SecretString")
        self._tokens = tuple(t for t in tokens if t)
        self._fetched_at = time.monotonic()

    def _previous(self) -> str:
        try:
            return self._client.get_secret_value(SecretId=self._secret_id, VersionStage="AWSPREVIOUS").get("SecretString") or ""
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":  # never rotated: there is no previous version
                return ""
            raise


def _code(exc: Exception) -> str:
    return exc.response.get("Error", {}).get("Code", "error") if isinstance(exc, ClientError) else "connection"
