"""Secrets Manager: the webhook token and the connector document, cached per container with a TTL."""

from __future__ import annotations

from aws_lambda_powertools.utilities.parameters import SecretsProvider

from ..domain.connector import ConnectorConfig, parse_connector_document
from ..domain.errors import ConfigurationError


class SecretStore:
    """Reads secret strings through Powertools' provider, which caches them for `max_age` seconds."""

    def __init__(self, client, max_age: int):
        self._provider = SecretsProvider(boto3_client=client)
        self._max_age = max_age

    def read(self, secret_id: str, force: bool = False) -> str:
        try:
            value = self._provider.get(secret_id, max_age=self._max_age, force_fetch=force)
        except Exception as exc:  # Powertools wraps every SDK error in GetParameterError
            # The SDK's message names the secret and the error code, never the secret's value.
            raise ConfigurationError(f"cannot read secret {secret_id}: {exc}") from None
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
