"""The connector-document commands as an operator runs them (`didomi-braze …`): validate, preview, put-config.

Each bad input gets one line on stderr and exit 2, never a traceback, and changes nothing."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from didomi_braze_ops.cli import main
from tests.integration.operator import OperatorAws, deploy, run
from tests.samples import EVENTS, http_event

ROOT = Path(__file__).resolve().parents[2]


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
def secrets():
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-central-1")


def test_put_config_stores_a_valid_document_in_the_secret(secrets, capsys):
    arn = secrets.create_secret(Name=f"connector-{uuid.uuid4()}", SecretString="{}")["ARN"]
    assert main(["put-config", str(EVENTS / "connector.json"), "--secret-id", arn, "--region", "eu-central-1"]) == 0
    assert json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])["type_id"] == "braze"
    assert "local-braze-api-key" not in capsys.readouterr().out


def test_put_config_finds_the_secret_from_the_stack_s_outputs(aws, braze, capsys):
    stack = deploy(aws)
    code, out, _ = run(
        lambda region: OperatorAws(aws), "put-config", str(EVENTS / "connector.json"), "--stack", stack, capsys=capsys
    )
    assert code == 0 and f"stored in {aws.stack.secret_arns['ConnectorSecret']}" in out
    stored = aws.secrets.get_secret_value(SecretId=aws.stack.secret_arns["ConnectorSecret"])["SecretString"]
    assert json.loads(stored)["authentication"]["server"] == "EU-01"


def test_put_config_refuses_an_invalid_document_and_leaves_the_secret_unchanged(secrets, tmp_path, capsys):
    arn = secrets.create_secret(Name=f"connector-{uuid.uuid4()}", SecretString="{}")["ARN"]
    doc = json.loads((EVENTS / "connector.json").read_text())
    doc["authentication"]["server"] = "http://127.0.0.1:9300"  # fine locally, refused for a deployed stack
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    assert main(["put-config", str(tmp_path / "doc.json"), "--secret-id", arn, "--region", "eu-central-1"]) == 2
    assert "BRAZE_ALLOW_LOOPBACK" in capsys.readouterr().err
    assert secrets.get_secret_value(SecretId=arn)["SecretString"] == "{}"


def test_put_config_checks_the_document_before_it_reads_the_stack(tmp_path, capsys):
    (tmp_path / "doc.json").write_text("{")
    reached = []
    assert main(["put-config", str(tmp_path / "doc.json"), "--stack", "prod"], aws=lambda region: reached.append(region)) == 2
    assert reached == [] and "not valid JSON" in capsys.readouterr().err


def test_put_config_reports_an_aws_error_in_one_line(secrets, capsys):
    assert main(["put-config", str(EVENTS / "connector.json"), "--secret-id", "missing", "--region", "eu-central-1"]) == 2
    err = capsys.readouterr().err
    assert "could not store the document in missing: ResourceNotFoundException" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate-config", "template.yaml"], "the connector document is not valid JSON"),
        (["validate-config", "missing.json"], "missing.json: no such file"),
        (["put-config", "events/connector.json"], "one of the arguments --stack --secret-id is required"),
        (["put-config", "events/connector.json", "--stack", "a", "--secret-id", "b"], "not allowed with argument"),
        (["replay"], "the following arguments are required: --stack"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_the_console_command_answers_bad_input_with_one_line_and_exit_2(args, message):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}{os.pathsep}{ROOT}"}
    result = subprocess.run(
        [sys.executable, "-m", "didomi_braze_ops", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_the_console_script_is_declared_for_the_operator_package_only():
    import importlib
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, _, function = project["project"]["scripts"]["didomi-braze"].partition(":")
    assert getattr(importlib.import_module(module), function) is main
    found = project["tool"]["setuptools"]["packages"]["find"]
    assert found["where"] == ["functions", "."] and "didomi_braze_ops" in found["include"]
    assert not any(name.startswith(("sandbox", "tests")) for name in found["include"])  # never the simulation
