"""The deployed stack as the operator's AWS credentials see it: its CloudFormation outputs name every resource
the commands use, so an operator only ever gives the stack's name."""

from __future__ import annotations

from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


class OperatorError(Exception):
    """A problem the operator can act on (bad input, a stack or secret that cannot be read): one line, exit 2."""


class Aws:
    """AWS clients from one session: credentials and region as the AWS CLI finds them, or `--region`."""

    def __init__(self, region: str | None = None):
        self._session = boto3.session.Session(region_name=region)
        self._clients: dict[str, object] = {}

    @property
    def region(self) -> str | None:
        return self._session.region_name

    def client(self, service: str):
        if service not in self._clients:
            try:
                self._clients[service] = self._session.client(service, config=Config(retries={"mode": "standard"}))
            except BotoCoreError as exc:  # no region configured, say
                raise OperatorError(f"cannot create an AWS {service} client: {exc} (set AWS_REGION or pass --region)") from None
        return self._clients[service]

    def insights(self):
        from .trace import CloudWatchLogsInsights

        return CloudWatchLogsInsights(self.client("logs"))


@dataclass(frozen=True)
class StackOutputs:
    stack: str
    values: dict[str, str]

    def __getitem__(self, key: str) -> str:
        value = self.values.get(key)
        if not value:
            raise OperatorError(
                f"stack {self.stack!r} has no output {key}: deploy this version of template.yaml first (sam deploy)"
            )
        return value


def stack_outputs(aws: Aws, stack: str) -> StackOutputs:
    try:
        found = aws.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except (ClientError, BotoCoreError) as exc:
        raise OperatorError(f"cannot read stack {stack!r}: {describe(exc)}") from None
    if not found:
        raise OperatorError(f"cannot read stack {stack!r}: no such stack")
    return StackOutputs(stack, {o["OutputKey"]: o.get("OutputValue", "") for o in found[0].get("Outputs", [])})


def describe(exc: Exception) -> str:
    """An AWS error in one line: the service's code and message (which name resources, never secret values)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return str(exc) or type(exc).__name__
