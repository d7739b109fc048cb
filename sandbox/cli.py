"""`python -m sandbox COMMAND`: the local simulation (the Makefile wraps each one).

  demo                      the scripted end-to-end scenario on loopback
  serve                     the local stack until Ctrl-C, for your own payloads
  invoke FUNCTION -e FILE   run a function from template.yaml with an event file, like `sam local invoke`
                            (IngestFunction: the flow back, with the Didomi emulator and sample Currents files)

The commands for a deployed stack (validate-config, preview, put-config, trace, replay) are the operator's:
`didomi-braze` (didomi_braze_ops). Every error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from didomi_braze.domain.errors import ConfigurationError, InvalidWebhook


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

    return parser


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({type(exc).__name__})") from None


def _invoke(args) -> int:
    from .lambda_runtime import function_output_to, invoke
    from .stack import CONNECTOR_EXAMPLE, LocalStack

    event = _didomi_event(args.event)
    flow_back = args.function == "IngestFunction"
    connector = args.connector or CONNECTOR_EXAMPLE
    with LocalStack(connector_path=connector, with_gateway=False, with_poller=False, with_currents=flow_back) as stack:
        try:
            spec = stack.function(args.function)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
        if flow_back:
            event = _with_local_currents(stack, event)
        with function_output_to(sys.stderr):  # logs and metrics on stderr, the result on stdout, as sam does
            result = invoke(spec, event, environment=spec.environment)
        print(json.dumps(result, indent=2), flush=True)
        if flow_back:
            for request in stack.didomi.requests:
                if request.path == "/v1/consents/events":
                    print(f"Didomi received POST {request.path} -> {request.status}: {json.dumps(request.body)}")
        for request in stack.braze.track_requests():
            print(f"Braze received POST {request.path} -> {request.status}: {json.dumps(request.body)}")
        if not stack.braze.track_requests():
            print("Braze received no request")
    return 0


def _with_local_currents(stack, event: dict) -> dict:
    """The ingest event pointed at the local Currents bucket, whose files it names are written (if missing) from
    events/currents-records.json, as Braze would have written them."""
    import urllib.parse

    from didomi_braze.domain.currents import event_type_of

    from .currents import SCHEMAS, avro_file
    from .template import ROOT

    samples = json.loads((ROOT / "events" / "currents-records.json").read_text())
    bucket = stack.stack.bucket_names["CurrentsBucket"]
    for record in event.get("Records", []):
        try:
            body = json.loads(record.get("body") or "")
        except ValueError:
            continue
        for notified in body.get("Records", []) if isinstance(body, dict) else []:
            s3 = notified.get("s3", {})
            s3.setdefault("bucket", {})["name"] = bucket
            key = urllib.parse.unquote_plus(s3.get("object", {}).get("key", ""))
            event_type = event_type_of(key)
            if event_type in SCHEMAS and "Contents" not in stack.s3.list_objects_v2(Bucket=bucket, Prefix=key):
                stack.s3.put_object(Bucket=bucket, Key=key, Body=avro_file(event_type, samples[event_type]))
        record["body"] = json.dumps(body)
    return event


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
