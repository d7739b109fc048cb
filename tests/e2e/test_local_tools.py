"""The local tools users reach for before deploying, run as users run them: `python -m sandbox …`.

Each bad input gets one line on stderr and a non-zero exit, never a traceback."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import urllib3

from tests.samples import http_event

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}{os.pathsep}{ROOT}"}


def sandbox(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.e2e
def test_make_demo_runs_the_whole_scenario_and_exits_0():
    started = time.monotonic()
    result = sandbox("demo")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "compressed for the demo (production default: 30,45,55,65,75 s and 5 s)" in out
    assert "webhook answered 200 delivered" in out
    assert "webhook answered 200 skipped: pending" in out
    assert "retry 2 delivered it to Braze" in out
    assert "parked in the dead-letter queue: retries exhausted after 5 retries" in out
    assert "webhook answered 401 unauthorized" in out and "webhook answered 400 rejected" in out
    assert "external_id:customer-42      email_subscribe=unsubscribed" in out
    assert "external_id:customer-9       email_subscribe=opted_in" in out
    assert "Dead-letter queue: 1 message(s)" in out and "Retry queue: 0 message(s) left" in out
    # The flow back: the unsubscribe made in Braze reaches Didomi once, and nothing comes back.
    assert "1 consent event written to Didomi; customer-7 newsletter is now false in Didomi" in out
    assert "5 echo" in out
    assert "event.created -> webhook answered 200 skipped: from_braze" in out
    assert "user.updated -> webhook answered 200 skipped: from_braze" in out
    assert "Braze calls caused by Didomi's notifications: 0" in out
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60


@pytest.mark.e2e
def test_serve_answers_on_its_port_and_stops_cleanly_on_ctrl_c():
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--port", str(port)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        banner = [process.stdout.readline() for _ in range(6)]
        assert any(f"http://127.0.0.1:{port}/webhooks/didomi" in line for line in banner), banner
        assert any("curl -s -X POST" in line for line in banner), banner
        event = http_event("user-created")
        response = urllib3.request(
            "POST",
            f"http://127.0.0.1:{port}/webhooks/didomi",
            body=event["body"].encode(),
            headers={"Authorization": event["headers"]["authorization"], "Content-Type": "application/json"},
        )
        assert (response.status, response.json()) == (200, {"status": "delivered"})
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "stopped; nothing left running" in out
    assert "Traceback" not in err
    with socket.socket() as probe:  # nothing listens on the port any more: nothing was left behind
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


@pytest.mark.e2e
def test_invoke_runs_a_template_function_with_an_event_file():
    result = sandbox("invoke", "WebhookFunction", "-e", "events/webhook-user-updated.json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout[: result.stdout.index("\n}\n") + 2])
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == {"status": "delivered"}
    assert '"email_subscribe": "unsubscribed"' in result.stdout


@pytest.mark.e2e
def test_invoke_runs_the_ingest_function_with_the_sample_currents_notification():
    result = sandbox("invoke", "IngestFunction", "-e", "events/ingest-batch.json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.split("\nDidomi received")[0]) == {"batchItemFailures": []}
    assert "Didomi received POST /v1/consents/events -> 200" in result.stdout
    assert '"delegate": {"id": "didomi-braze-preference-sync"' in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_invoke_runs_the_retry_worker_with_an_sqs_event():
    result = sandbox("invoke", "RetryFunction", "-e", "events/retry-batch.json")
    assert result.returncode == 0, result.stderr
    assert '"batchItemFailures": []' in result.stdout and "-> 201" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["invoke", "NoSuchFunction", "-e", "events/webhook-user-created.json"],
            "template.yaml has no function 'NoSuchFunction'",
        ),
        (["invoke", "WebhookFunction", "-e", "events/missing.json"], "events/missing.json: no such file"),
    ],
)
def test_bad_input_to_a_command_is_one_clear_line_and_exit_2(args, message):
    result = sandbox(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
