"""The connector document: check it, preview what one event sends, store it in the deployed secret, read it back."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError

from didomi_braze.domain.braze import TRACK_PATH, attributes_object
from didomi_braze.domain.connector import ConnectorConfig, parse_connector_document
from didomi_braze.domain.didomi import parse_webhook
from didomi_braze.domain.errors import InvalidWebhook
from didomi_braze.domain.mapping import Skip, desired, plan, values_of

from .aws import Aws, OperatorError, describe


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OperatorError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise OperatorError(f"{path}: cannot read it ({type(exc).__name__})") from None


def validate(path: Path, out: TextIO) -> int:
    config = parse_connector_document(read_text(path), allow_loopback=True)
    groups = ", ".join(f"{gid} <- {value}" for gid, value in config.subscription_groups) or "none"
    print(f"{path}: valid connector document", file=out)
    print(f"  server:            {config.server}", file=out)
    print(f"  regulations:       {', '.join(sorted(config.regulations))}", file=out)
    print(f"  user identifier:   {config.user_identifier}   upsert_mode: {str(config.upsert_mode).lower()}", file=out)
    print(f"  OPTED_IN:          {config.email_opted_in or 'not mapped'}", file=out)
    print(f"  UNSUBSCRIBED:      {config.email_unsubscribed or 'not mapped'}", file=out)
    print(f"  subscription groups: {groups}", file=out)
    if config.server.startswith("http://"):
        print("  note: a loopback server works only locally (BRAZE_ALLOW_LOOPBACK=true); the deployed stack refuses it", file=out)
    return 0


def preview(path: Path, event: Path, out: TextIO) -> int:
    config = parse_connector_document(read_text(path), allow_loopback=True)
    decision = plan(parse_webhook(_didomi_body(event)), config)
    if isinstance(decision, Skip):
        print(f"no Braze call: skipped ({decision.reason}): {decision.detail}", file=out)
        return 0
    # Without the deployed state table, the user is taken to be new: the connector then sends every field the
    # event's consents call for. A known user gets only what changes in their merged state.
    fields = desired(values_of(decision.inputs), config)
    if not fields:
        print("no Braze call: the consents this event sets call for no Braze field on their own", file=out)
        return 0
    request = {
        "method": "POST",
        "url": config.server + TRACK_PATH,
        "headers": {"Authorization": "Bearer <api key from the connector document>", "Content-Type": "application/json"},
        "body": {"attributes": [attributes_object(decision.identity, fields, config.upsert_mode)]},
    }
    print("for a user the connector has not seen before (a known user gets only what changes):", file=sys.stderr)
    print(json.dumps(request, indent=2), file=out)
    return 0


def deployable(path: Path) -> str:
    """The document's text, once it is valid as the deployed functions read it (they refuse loopback servers)."""
    text = read_text(path)
    parse_connector_document(text)
    return text


def store(aws: Aws, text: str, secret_id: str, out: TextIO) -> int:
    try:
        version = aws.client("secretsmanager").put_secret_value(SecretId=secret_id, SecretString=text)["VersionId"]
    except (BotoCoreError, ClientError) as exc:
        raise OperatorError(f"could not store the document in {secret_id}: {describe(exc)}") from None
    print(
        f"stored in {secret_id} (version {version}); the functions pick it up within 5 minutes, or at once after a Braze 401/403",
        file=out,
    )
    return 0


def deployed_document(aws: Aws, secret_id: str) -> str:
    """The connector document as the functions read it."""
    try:
        text = aws.client("secretsmanager").get_secret_value(SecretId=secret_id).get("SecretString")
    except (BotoCoreError, ClientError) as exc:
        raise OperatorError(f"cannot read the connector secret {secret_id}: {describe(exc)}") from None
    if not text:
        raise OperatorError(f"the connector secret {secret_id} has no SecretString")
    return text


def deployed_config(aws: Aws, secret_id: str) -> ConnectorConfig:
    """The deployed connector document, parsed as the functions parse it (ConfigurationError when they refuse it)."""
    return parse_deployed(deployed_document(aws, secret_id))


def parse_deployed(text: str) -> ConnectorConfig:
    # As the functions do: a loopback Braze only where BRAZE_ALLOW_LOOPBACK=true (the local stack and the tests).
    return parse_connector_document(text, allow_loopback=os.environ.get("BRAZE_ALLOW_LOOPBACK", "").strip().lower() == "true")


def _didomi_body(path: Path) -> object:
    try:
        data = json.loads(read_text(path))
    except ValueError as exc:
        raise OperatorError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and data.get("version") == "2.0" and "body" in data:  # an HTTP API event from events/
        try:
            return json.loads(data["body"] or "")
        except ValueError:
            raise InvalidWebhook("the event's body is not valid JSON") from None
    return data
