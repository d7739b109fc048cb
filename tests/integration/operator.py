"""A deployed stack as the operator commands see it, on moto: a CloudFormation stack whose outputs are the
template's own Outputs, resolved against the resources provisioned from the template; the functions' log lines
shipped to their log groups as Lambda ships them; and Logs Insights' saved query, which moto does not store, read
from the template and run over those log groups with tests/logs_insights.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import datetime

import boto3

from didomi_braze_ops.aws import Aws, OperatorError
from didomi_braze_ops.cli import main
from didomi_braze_ops.trace import SavedQuery
from tests import logs_insights
from tests.integration.conftest import REGION, LocalAws

FUNCTION_LOG_GROUPS = {"WebhookFunction": "WebhookLogGroup", "RetryFunction": "RetryLogGroup"}


def deploy(aws: LocalAws) -> str:
    """Create the CloudFormation stack the commands read; returns its name."""
    stack = aws.stack
    outputs = {
        key: stack.resolve(output["Value"])
        for key, output in stack.template["Outputs"].items()
        if "Condition" not in output or stack.condition(output["Condition"])
    }
    body = {
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {key: {"Value": str(value)} for key, value in outputs.items()},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(StackName=stack.name, TemplateBody=json.dumps(body))
    return stack.name


def ship_logs(aws: LocalAws, captured: io.StringIO) -> int:
    """Put the functions' log lines (captured from Powertools) into their log groups, as Lambda does."""
    logs = boto3.client("logs", region_name=REGION)
    by_group: dict[str, list[dict]] = {}
    for text in captured.getvalue().splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if "function_name" not in line or "timestamp" not in line:
            continue  # metrics (EMF) and lines written outside an invocation
        group = aws.stack.log_group_names[FUNCTION_LOG_GROUPS[line["function_name"]]]
        at = datetime.strptime(line["timestamp"], "%Y-%m-%d %H:%M:%S,%f%z")
        by_group.setdefault(group, []).append({"timestamp": int(at.timestamp() * 1000), "message": text})
    for group, events in by_group.items():
        logs.create_log_stream(logGroupName=group, logStreamName="2026/05/04/[$LATEST]local")
        logs.put_log_events(logGroupName=group, logStreamName="2026/05/04/[$LATEST]local", logEvents=events)
    return sum(len(events) for events in by_group.values())


class TemplateInsights:
    """The `LogsInsights` port: the saved query as the template declares it, run over moto's log groups."""

    def __init__(self, aws: LocalAws):
        self.aws = aws
        self.queries: list[str] = []

    def saved_query(self, name: str) -> SavedQuery:
        definition = self.aws.stack.resolve(self.aws.stack.template["Resources"]["TraceQuery"]["Properties"])
        if definition["Name"] != name:
            raise OperatorError(f"no saved Logs Insights query named {name!r}")
        return SavedQuery(name, definition["QueryString"], tuple(definition["LogGroupNames"]))

    def run(self, query: str, log_groups: Sequence[str], start: int, end: int) -> list[dict[str, str]]:
        self.queries.append(query)
        logs = boto3.client("logs", region_name=REGION)
        events = [
            logs_insights.LogEvent(event["timestamp"], group, event["message"])
            for group in log_groups
            for event in logs.filter_log_events(logGroupName=group, startTime=start * 1000, endTime=end * 1000)["events"]
        ]
        return logs_insights.run(query, events)


class OperatorAws(Aws):
    """The operator's AWS (moto), with Logs Insights from the template."""

    def __init__(self, aws: LocalAws, region: str | None = None, clients: dict | None = None):
        super().__init__(region or REGION)
        self.insights_port = TemplateInsights(aws)
        self._clients.update(clients or {})

    def insights(self):
        return self.insights_port


def run(aws_factory, *argv: str, capsys) -> tuple[int, str, str]:
    capsys.readouterr()  # what the functions printed before (metrics) is not the command's output
    code = main(list(argv), aws=aws_factory)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
