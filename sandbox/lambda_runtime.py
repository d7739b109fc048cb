"""A Docker-free stand-in for what Lambda and API Gateway do around our functions.

- `invoke`: import the function's `Handler` from its `CodeUri` (as Lambda does) and call it with an event.
- `WebhookGateway`: an HTTP server that turns a request into an HTTP API payload 2.0 event, like
  `sam local start-api`, and the function's result back into an HTTP response.
- `RetryQueuePoller`: drains an SQS queue into a function the way Lambda's SQS event source does: gathers a batch
  until it is full or the batching window has passed, deletes what succeeded, leaves reported failures to their
  visibility timeout.

Functions share this process, where Lambda gives each its own. Given an `environment`, each call of a function
runs with that environment over the process's (`didomi_braze.runtime.function_environment`), so each function
gets its own settings and its own dependencies, as in its own container. Without one, calls see the process's
environment, and functions called in one process share one container's dependencies (what in-process tests use
to inject faults).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TextIO

from .template import ROOT, FunctionSpec


@contextlib.contextmanager
def function_output_to(stream: TextIO):
    """Send the functions' structured logs and EMF metrics to a file, keeping the terminal for people."""
    from didomi_braze.observability import logger

    handler = logger.registered_handler
    previous = handler.setStream(stream)
    with contextlib.redirect_stdout(stream):
        try:
            yield
        finally:
            handler.setStream(previous)


@dataclass
class LambdaContext:
    function_name: str
    timeout_seconds: int
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"

    def __post_init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:local:123456789012:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@contextlib.contextmanager
def environment_of(variables: Mapping[str, str] | None) -> Iterator[None]:
    """Run what is inside with a function's own environment (None: the process's)."""
    if variables is None:
        yield
        return
    from didomi_braze.runtime import function_environment

    with function_environment(variables):
        yield


def load_handler(spec: FunctionSpec, environment: Mapping[str, str] | None = None) -> Callable[[dict, object], dict]:
    code_dir = str((ROOT / spec.code_uri).resolve())
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)  # Lambda puts the function's code directory on the path
    module_name, _, attribute = spec.handler.rpartition(".")
    with environment_of(environment):  # the init phase (the module's import) runs with the function's environment
        handler = getattr(importlib.import_module(module_name), attribute)

    def call(event: dict, context: object) -> dict:
        with environment_of(environment):
            return handler(event, context)

    return call


def invoke(spec: FunctionSpec, event: dict, environment: Mapping[str, str] | None = None) -> dict:
    return load_handler(spec, environment)(event, LambdaContext(spec.name, spec.timeout))


def http_api_event(method: str, path: str, query: str, headers: dict[str, str], body: bytes, source_ip: str) -> dict:
    """The HTTP API payload format 2.0 event API Gateway would send for this request."""
    try:
        text, is_base64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode(), True
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "timeEpoch": int(now * 1000),
        },
        "body": text if body else None,
        "isBase64Encoded": is_base64,
    }


class WebhookGateway:
    """Serves one function on one route over HTTP on 127.0.0.1."""

    MAX_BODY = 10 * 1024 * 1024  # API Gateway's own payload limit

    def __init__(
        self,
        spec: FunctionSpec,
        method: str = "POST",
        path: str = "/webhooks/didomi",
        port: int = 0,
        environment: Mapping[str, str] | None = None,
    ):
        self.spec, self.method, self.path = spec, method, path
        self._handler = load_handler(spec, environment)
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, format: str, *args) -> None:
                pass

            def __getattr__(self, name: str):
                # Every method (`do_<METHOD>`) reaches the gateway; like API Gateway, anything but the route is a 404.
                if name.startswith("do_"):
                    return lambda: gateway._serve(self, name[3:])
                raise AttributeError(name)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="webhook-gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def start(self) -> WebhookGateway:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        path, _, query = request.path.partition("?")
        length = int(request.headers.get("content-length") or 0)
        if length > self.MAX_BODY:
            return self._reply(request, 413, {"message": "Request Entity Too Large"}, {})
        body = request.rfile.read(length) if length else b""
        if method != self.method or path != self.path:
            return self._reply(request, 404, {"message": "Not Found"}, {})
        event = http_api_event(method, path, query, dict(request.headers.items()), body, request.client_address[0])
        try:
            result = self._handler(event, LambdaContext(self.spec.name, self.spec.timeout))
        except Exception:  # what API Gateway answers when the function fails; Lambda logs the traceback
            traceback.print_exc(file=sys.stderr)
            return self._reply(request, 500, {"message": "Internal Server Error"}, {})
        self._reply(request, int(result.get("statusCode", 200)), result.get("body", ""), result.get("headers") or {})

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, body: object, headers: dict) -> None:
        payload = (body if isinstance(body, str) else json.dumps(body)).encode()
        request.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)


class RetryQueuePoller:
    """Lambda's SQS event source, in a thread: gather a batch, invoke, delete all but the reported failures.

    Like the event source, it keeps receiving until the batch is full (`BatchSize`) or the batching window
    (`MaximumBatchingWindowInSeconds`) has passed since it received the first message of the batch, which it
    holds, invisible, meanwhile. Time is read from `clock`, so tests can move it."""

    def __init__(
        self,
        sqs,
        queue_url: str,
        spec: FunctionSpec,
        region: str,
        wait_seconds: int = 1,
        batching_window: float | None = None,
        environment: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.sqs, self.queue_url, self.spec, self.region = sqs, queue_url, spec, region
        self.batch_size = spec.sqs_batch_size or 10
        self.batching_window = spec.sqs_batching_window if batching_window is None else batching_window
        self.wait_seconds = wait_seconds
        self.clock = clock or (lambda: time.time())  # looked up per call: tests move the clock
        self._handler = load_handler(spec, environment)
        self._held: list[dict] = []  # received, waiting for the batch to fill or the window to pass
        self._gathering_since = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retry-poller", daemon=True)

    def start(self) -> RetryQueuePoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.wait_seconds + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                if self._held:  # gathering: look again shortly rather than spin
                    self._stop.wait(min(0.1, max(self.window_left(), 0.01)))
            except Exception as exc:  # keep polling, as Lambda would; say what went wrong
                print(f"retry poller: {type(exc).__name__}: {exc}", file=sys.stderr)
                self._stop.wait(1)

    def window_left(self) -> float:
        return self._gathering_since + self.batching_window - self.clock() if self._held else 0.0

    def poll_once(self, wait_seconds: int | None = None) -> int:
        """One step: receive what is visible, up to the batch size; invoke the function once the batch is full or
        the window has passed. Returns how many messages were handed to the function (0 while gathering)."""
        wait = self.wait_seconds if wait_seconds is None else wait_seconds
        while len(self._held) < self.batch_size:
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(self._held)),
                WaitTimeSeconds=wait if not self._held else 0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                break
            if not self._held:
                self._gathering_since = self.clock()
            self._held.extend(got)
        if not self._held or (len(self._held) < self.batch_size and self.window_left() > 0):
            return 0
        messages, self._held = self._held, []
        arn = f"arn:aws:sqs:{self.region}:123456789012:{self.queue_url.rsplit('/', 1)[-1]}"
        event = {"Records": [sqs_record(m, arn, self.region) for m in messages]}
        result = self._handler(event, LambdaContext(self.spec.name, self.spec.timeout))
        failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])],
            )
        return len(messages)


def sqs_record(message: dict, queue_arn: str, region: str) -> dict:
    """An SQS message as Lambda's event source presents it to the function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {"stringValue": a.get("StringValue"), "dataType": a.get("DataType")}
            for name, a in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
