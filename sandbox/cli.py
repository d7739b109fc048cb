"""`python -m sandbox COMMAND`: the local tools (the Makefile wraps each one).

  demo                      the scripted end-to-end scenario on loopback
  serve                     the local stack until Ctrl-C, for your own payloads
  invoke FUNCTION -e FILE   run a function from template.yaml with an event file, like `sam local invoke`
  validate-config FILE      check a connector document before putting it in the secret
  preview FILE -e EVENT     the exact Braze request one event would produce, with no network
  put-config FILE --secret-id ID   validate, then store the document in the deployed secret

Every error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from didomi_braze.domain.braze import TRACK_PATH, attributes_object
from didomi_braze.domain.connector import ConnectorConfig, parse_connector_document
from didomi_braze.domain.didomi import parse_webhook
from didomi_braze.domain.errors import ConfigurationError, InvalidWebhook
from didomi_braze.domain.mapping import Skip, desired, plan, values_of


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit code 2."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, ConfigurationError, InvalidWebhook) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the scripted end-to-end scenario")
    demo.set_defaults(run=_demo)

    serve = commands.add_parser("serve", help="run the local stack until Ctrl-C")
    serve.add_argument("--port", type=int, default=3000, help="webhook port on 127.0.0.1 (default 3000)")
    serve.add_argument("--connector", type=Path, help="connector document to use (default events/connector.json)")
    serve.add_argument("--retry-delays", default=None, help="RETRY_DELAYS_SECONDS for the local run (default: the template's)")
    serve.set_defaults(run=_serve)

    invoke = commands.add_parser("invoke", help="invoke a function from template.yaml with an event file")
    invoke.add_argument("function", help="logical id in template.yaml, e.g. WebhookFunction")
    invoke.add_argument("-e", "--event", type=Path, required=True, help="event file, e.g. events/webhook-user-created.json")
    invoke.add_argument("--connector", type=Path, help="connector document to use (default events/connector.json)")
    invoke.set_defaults(run=_invoke)

    validate = commands.add_parser("validate-config", help="validate a connector document")
    validate.add_argument("file", type=Path)
    validate.set_defaults(run=_validate)

    preview = commands.add_parser("preview", help="show the Braze request an event would produce (no network)")
    preview.add_argument("file", type=Path, help="connector document")
    preview.add_argument("-e", "--event", type=Path, required=True, help="Didomi webhook body, or an HTTP API event from events/")
    preview.set_defaults(run=_preview)

    put = commands.add_parser("put-config", help="validate a connector document and store it in the deployed secret")
    put.add_argument("file", type=Path)
    put.add_argument("--secret-id", required=True, help="the stack's ConnectorSecretArn output")
    put.add_argument("--region", default=None)
    put.set_defaults(run=_put_config)
    return parser


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({type(exc).__name__})") from None


def _config(path: Path, allow_loopback: bool = False) -> ConnectorConfig:
    return parse_connector_document(_read(path), allow_loopback=allow_loopback)


def _didomi_body(path: Path) -> object:
    try:
        data = json.loads(_read(path))
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and data.get("version") == "2.0" and "body" in data:  # an HTTP API event from events/
        try:
            return json.loads(data["body"] or "")
        except ValueError:
            raise InvalidWebhook("the event's body is not valid JSON") from None
    return data


def _validate(args) -> int:
    config = _config(args.file, allow_loopback=True)
    groups = ", ".join(f"{gid} <- {value}" for gid, value in config.subscription_groups) or "none"
    print(f"{args.file}: valid connector document")
    print(f"  server:            {config.server}")
    print(f"  regulations:       {', '.join(sorted(config.regulations))}")
    print(f"  user identifier:   {config.user_identifier}   upsert_mode: {str(config.upsert_mode).lower()}")
    print(f"  OPTED_IN:          {config.email_opted_in or 'not mapped'}")
    print(f"  UNSUBSCRIBED:      {config.email_unsubscribed or 'not mapped'}")
    print(f"  subscription groups: {groups}")
    if config.server.startswith("http://"):
        print("  note: a loopback server works only locally (BRAZE_ALLOW_LOOPBACK=true); the deployed stack refuses it")
    return 0


def _preview(args) -> int:
    config = _config(args.file, allow_loopback=True)
    decision = plan(parse_webhook(_didomi_body(args.event)), config)
    if isinstance(decision, Skip):
        print(f"no Braze call: skipped ({decision.reason}): {decision.detail}")
        return 0
    # Without the deployed state table, the user is taken to be new: the connector then sends every field the
    # event's consents call for. A known user gets only what changes in their merged state.
    fields = desired(values_of(decision.inputs), config)
    if not fields:
        print("no Braze call: the consents this event sets call for no Braze field on their own")
        return 0
    request = {
        "method": "POST",
        "url": config.server + TRACK_PATH,
        "headers": {"Authorization": "Bearer <api key from the connector document>", "Content-Type": "application/json"},
        "body": {"attributes": [attributes_object(decision.identity, fields, config.upsert_mode)]},
    }
    print("for a user the connector has not seen before (a known user gets only what changes):", file=sys.stderr)
    print(json.dumps(request, indent=2))
    return 0


def _put_config(args) -> int:
    text = _read(args.file)
    parse_connector_document(text)  # the deployed functions refuse loopback: so does this
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.client("secretsmanager", region_name=args.region)
        version = client.put_secret_value(SecretId=args.secret_id, SecretString=text)["VersionId"]
    except (BotoCoreError, ClientError) as exc:
        raise UsageError(f"could not store the document in {args.secret_id}: {exc}") from None
    print(
        f"stored in {args.secret_id} (version {version}); the functions pick it up within 5 minutes, "
        "or at once after a Braze 401/403"
    )
    return 0


def _invoke(args) -> int:
    from .lambda_runtime import function_output_to, invoke
    from .stack import CONNECTOR_EXAMPLE, LocalStack

    event = _didomi_event(args.event)
    with LocalStack(connector_path=args.connector or CONNECTOR_EXAMPLE, with_gateway=False, with_poller=False) as stack:
        try:
            spec = stack.function(args.function)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
        with function_output_to(sys.stderr):  # logs and metrics on stderr, the result on stdout, as sam does
            result = invoke(spec, event, environment=spec.environment)
        print(json.dumps(result, indent=2), flush=True)
        for request in stack.braze.track_requests():
            print(f"Braze received POST {request.path} -> {request.status}: {json.dumps(request.body)}")
        if not stack.braze.track_requests():
            print("Braze received no request")
    return 0


def _didomi_event(path: Path) -> dict:
    try:
        event = json.loads(_read(path))
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(event, dict):
        raise UsageError(f"{path}: an event file holds a JSON object")
    return event


def _serve(args) -> int:
    from .stack import CONNECTOR_EXAMPLE, LocalStack

    stack = LocalStack(connector_path=args.connector or CONNECTOR_EXAMPLE, retry_delays=args.retry_delays, webhook_port=args.port)
    try:
        stack.start()
    except OSError as exc:
        raise UsageError(f"cannot start the local stack: {exc} (is port {args.port} free? try --port)") from None
    try:
        print("Local stack running (Ctrl-C to stop)")
        print(f"  webhook:        {stack.gateway.url}")
        print(f"  token:          {stack.webhook_token}")
        print(f"  Braze emulator: {stack.braze.url}   AWS (moto): {stack.moto_url}")
        print("  try:")
        print(f"    curl -s -X POST {stack.gateway.url} -H 'Authorization: Bearer {stack.webhook_token}' \\")
        print(
            "      -H 'Content-Type: application/json' -d \"$(python3 -c 'import json; "
            'print(json.load(open("events/webhook-user-created.json"))["body"])\')"',
            flush=True,
        )
        while True:
            time.sleep(3600)
    finally:
        stack.stop()
        print("stopped; nothing left running", flush=True)


def _demo(args) -> int:
    from .demo import run

    return run()
