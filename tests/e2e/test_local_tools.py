"""The local tools users reach for before deploying, run as users run them: `python -m sandbox …`.

Each bad input gets one line on stderr and a non-zero exit, never a traceback."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
import urllib3
from moto.server import ThreadedMotoServer

from sandbox.cli import main
from tests.samples import EVENTS, http_event

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
        (["validate-config", "template.yaml"], "the connector document is not valid JSON"),
    ],
)
def test_bad_input_to_a_command_is_one_clear_line_and_exit_2(args, message):
    result = sandbox(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_validate_config_accepts_the_sample_and_explains_the_didomi_docs_example(tmp_path, capsys):
    assert main(["validate-config", str(EVENTS / "connector.json")]) == 0
    assert "valid connector document" in capsys.readouterr().out

    pasted = tmp_path / "pasted.json"
    pasted.write_text('{\n  "type_id": "braze",\n  "authentication": {"api_key": "k", // Braze key\n  "server": "EU-01",},\n}')
    assert main(["validate-config", str(pasted)]) == 2
    assert "line 3 has a // comment, as in Didomi's documentation example" in capsys.readouterr().err


def test_validate_config_names_every_problem(tmp_path, capsys):
    doc = tmp_path / "doc.json"
    doc.write_text(
        json.dumps({"type_id": "braze", "authentication": {"api_key": "secret-value-1", "server": "EU-09"}, "mappings": []})
    )
    assert main(["validate-config", str(doc)]) == 2
    err = capsys.readouterr().err
    assert "authentication.server 'EU-09'" in err and "mappings must be a non-empty list" in err and "secret-value-1" not in err


def test_preview_prints_the_exact_braze_request_without_network(capsys):
    assert main(["preview", str(EVENTS / "connector.json"), "-e", str(EVENTS / "webhook-user-updated.json")]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["url"] == "https://rest.fra-01.braze.eu/users/track"
    assert request["body"] == {
        "attributes": [{"external_id": "customer-42", "_update_existing_only": True, "email_subscribe": "unsubscribed"}]
    }
    assert "local-braze-api-key" not in json.dumps(request)


def test_preview_accepts_a_raw_didomi_body_and_says_when_nothing_is_sent(tmp_path, capsys):
    body = tmp_path / "body.json"
    body.write_text(http_event("event-created-cpra")["body"])
    assert main(["preview", str(EVENTS / "connector.json"), "-e", str(body)]) == 0
    assert capsys.readouterr().out.startswith("no Braze call: skipped (regulation_not_configured)")


def test_preview_rejects_a_malformed_event(capsys):
    assert main(["preview", str(EVENTS / "connector.json"), "-e", str(EVENTS / "webhook-wrong-shape.json")]) == 2
    assert "purposes[0].enabled must be true, false or null" in capsys.readouterr().err


@pytest.fixture
def moto_endpoint(monkeypatch):
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    yield boto3.client("secretsmanager", region_name="eu-central-1")
    server.stop()


def test_put_config_stores_a_valid_document_in_the_secret(moto_endpoint, capsys):
    arn = moto_endpoint.create_secret(Name=f"connector-{uuid.uuid4()}", SecretString="{}")["ARN"]
    assert main(["put-config", str(EVENTS / "connector.json"), "--secret-id", arn, "--region", "eu-central-1"]) == 0
    assert json.loads(moto_endpoint.get_secret_value(SecretId=arn)["SecretString"])["type_id"] == "braze"
    assert "local-braze-api-key" not in capsys.readouterr().out


def test_put_config_refuses_an_invalid_document_and_leaves_the_secret_unchanged(moto_endpoint, tmp_path, capsys):
    arn = moto_endpoint.create_secret(Name=f"connector-{uuid.uuid4()}", SecretString="{}")["ARN"]
    doc = json.loads((EVENTS / "connector.json").read_text())
    doc["authentication"]["server"] = "http://127.0.0.1:9300"  # fine locally, refused for a deployed stack
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    assert main(["put-config", str(tmp_path / "doc.json"), "--secret-id", arn, "--region", "eu-central-1"]) == 2
    assert "BRAZE_ALLOW_LOOPBACK" in capsys.readouterr().err
    assert moto_endpoint.get_secret_value(SecretId=arn)["SecretString"] == "{}"


def test_put_config_reports_an_aws_error_in_one_line(moto_endpoint, capsys):
    assert main(["put-config", str(EVENTS / "connector.json"), "--secret-id", "missing", "--region", "eu-central-1"]) == 2
    assert "could not store the document in missing" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
