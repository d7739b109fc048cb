"""Reads `template.yaml` and provisions its queues, table, secrets, log groups and (with the flow back) the Currents
bucket and its notifications on a moto endpoint, so the local stack and the tests run against the template's own
resource definitions rather than a hand-written copy.

Only the intrinsic functions the template uses are resolved (Ref, GetAtt, If, Equals, Not, Sub, Join, Select,
Split); anything else is an error, so the template cannot silently drift from what this reads.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
_NO_VALUE = object()


class _CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when PyYAML has it: ~20x faster
    pass


def _intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict:
    """The template as data; parsed once per file version (tests provision a stack for every test)."""
    return copy.deepcopy(_parsed(path, path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _parsed(path: Path, mtime_ns: int) -> dict:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 (SafeLoader subclass)


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    handler: str
    code_uri: str
    timeout: int
    environment: dict[str, str]
    sqs_batch_size: int | None = None
    sqs_batching_window: float = 0.0  # MaximumBatchingWindowInSeconds of its SQS event source


@dataclass
class Stack:
    """What provisioning created, by logical id, plus the functions as the template declares them."""

    template: dict
    parameters: dict[str, str]
    region: str
    account: str = "123456789012"
    name: str = "local"  # the stack's name (AWS::StackName)
    stack_id: str = "arn:aws:cloudformation:eu-central-1:123456789012:stack/local/4c1f7a52-0d3e-4b8a-9c61-2e5f0a7b8d13"
    queue_urls: dict[str, str] = field(default_factory=dict)
    secret_arns: dict[str, str] = field(default_factory=dict)
    table_names: dict[str, str] = field(default_factory=dict)
    bucket_names: dict[str, str] = field(default_factory=dict)
    log_group_names: dict[str, str] = field(default_factory=dict)

    @property
    def retry_queue_url(self) -> str:
        return self.queue_urls["RetryQueue"]

    @property
    def dead_letter_queue_url(self) -> str:
        return self.queue_urls["DeadLetterQueue"]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((name, arg),) = value.items()
            if name == "Ref":
                return self._ref(arg)
            if name == "Fn::GetAtt":
                return self._get_att(*arg)
            if name == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if name == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if name == "Fn::Not":
                return not self.resolve(arg[0])
            if name == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if name == "Condition":
                return self.condition(arg)
            if name == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(self._sub(m.group(1))), arg)
            if name == "Fn::Join":
                return arg[0].join(str(part) for part in self.resolve(arg[1]))
            if name == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if name == "Fn::Split":
                return str(self.resolve(arg[1])).split(arg[0])
            if name.startswith("Fn::"):
                raise ValueError(f"template uses {name}, which the local stack does not resolve")
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not _NO_VALUE}

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def resources(self, type_name: str) -> dict[str, dict]:
        out = {}
        for logical_id, resource in self.template["Resources"].items():
            if resource["Type"] == type_name and ("Condition" not in resource or self.condition(resource["Condition"])):
                out[logical_id] = resource
        return out

    def function(self, logical_id: str) -> FunctionSpec:
        functions = self.resources("AWS::Serverless::Function")
        if logical_id not in functions:
            raise KeyError(f"template.yaml has no function {logical_id!r} (it has {', '.join(functions)})")
        globals_ = self.template.get("Globals", {}).get("Function", {})
        props = functions[logical_id]["Properties"]
        env = {
            **self.resolve(globals_.get("Environment", {}).get("Variables", {})),
            **self.resolve(props.get("Environment", {}).get("Variables", {})),
        }
        batch_size, window = None, 0.0
        for event in props.get("Events", {}).values():
            if event["Type"] == "SQS":
                batch_size = int(event["Properties"].get("BatchSize", 10))
                window = float(event["Properties"].get("MaximumBatchingWindowInSeconds", 0))
        return FunctionSpec(
            name=logical_id,
            handler=props["Handler"],
            code_uri=props.get("CodeUri", globals_.get("CodeUri")),
            timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
            environment={k: str(v) for k, v in env.items()},
            sqs_batch_size=batch_size,
            sqs_batching_window=window,
        )

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name == "AWS::Region":
            return self.region
        if name == "AWS::AccountId":
            return self.account
        if name == "AWS::StackId":
            return self.stack_id
        if name == "AWS::Partition":
            return "aws"
        if name == "AWS::URLSuffix":
            return "amazonaws.com"
        if name == "AWS::StackName":
            return self.name
        if name == "AWS::Partition":
            return "aws"
        if name in self.parameters:
            return self.parameters[name]
        if name in self.queue_urls:
            return self.queue_urls[name]
        if name in self.secret_arns:
            return self.secret_arns[name]
        if name in self.table_names:
            return self.table_names[name]
        if name in self.bucket_names:
            return self.bucket_names[name]
        if name in self.log_group_names:
            return self.log_group_names[name]
        return name  # a resource the local stack does not create: its logical id stands in

    def _get_att(self, resource: str, attribute: str) -> str:
        if resource in self.bucket_names and attribute == "Arn":
            return f"arn:aws:s3:::{self.bucket_names[resource]}"
        if resource in self.table_names and attribute == "Arn":
            return f"arn:aws:dynamodb:{self.region}:{self.account}:table/{self.table_names[resource]}"
        if resource in self.queue_urls:
            queue_name = self.queue_urls[resource].rsplit("/", 1)[-1]
            if attribute == "Arn":
                return f"arn:aws:sqs:{self.region}:{self.account}:{queue_name}"
            if attribute == "QueueName":
                return queue_name
            if attribute == "QueueUrl":
                return self.queue_urls[resource]
        raise ValueError(f"the local stack cannot resolve !GetAtt {resource}.{attribute}")

    def _sub(self, expression: str) -> Any:
        if "." in expression:
            return self._get_att(*expression.split(".", 1))
        return self._ref(expression)


def provision(
    sqs,
    secretsmanager,
    dynamodb,
    *,
    webhook_token: str,
    connector_document: str,
    region: str,
    parameters: dict[str, str] | None = None,
    prefix: str = "",
    template_path: Path = TEMPLATE,
    secret_values: dict[str, str] | None = None,
    s3=None,
    logs=None,
    stack_name: str = "local",
) -> Stack:
    """Create the template's queues, table and secrets (and log groups, given a Logs client) with boto3 clients
    pointed at moto; return the stack.

    `secret_values` gives a secret's value by logical id (the Didomi credentials, say); otherwise a generated
    secret is the webhook token and a secret with a string is the connector document. Buckets (and their queue
    notifications) need an `s3` client."""
    template = load_template(template_path)
    params = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    params.update(parameters or {})
    stack = Stack(template=template, parameters=params, region=region, name=stack_name)

    queues = stack.resources("AWS::SQS::Queue")
    for logical_id in queues:  # create every queue first: redrive policies point at each other
        stack.queue_urls[logical_id] = sqs.create_queue(QueueName=f"{prefix}{logical_id}")["QueueUrl"]
    for logical_id, resource in queues.items():
        props = stack.resolve(resource.get("Properties", {}))
        attributes = {
            key: json.dumps(value) if isinstance(value, dict) else str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in props.items()
            if key
            in (
                "VisibilityTimeout",
                "MessageRetentionPeriod",
                "DelaySeconds",
                "RedrivePolicy",
                "ReceiveMessageWaitTimeSeconds",
                "MaximumMessageSize",
                "SqsManagedSseEnabled",
            )
        }
        if attributes:
            sqs.set_queue_attributes(QueueUrl=stack.queue_urls[logical_id], Attributes=attributes)

    for logical_id, resource in stack.resources("AWS::DynamoDB::Table").items():
        props = stack.resolve(resource["Properties"])
        name = f"{prefix}{logical_id}"
        dynamodb.create_table(
            TableName=name,
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
        )
        if "TimeToLiveSpecification" in props:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"])
        stack.table_names[logical_id] = name

    for logical_id, resource in stack.resources("AWS::SecretsManager::Secret").items():
        props = resource.get("Properties", {})
        # A generated secret is the webhook token; a secret with a string is the connector document.
        value = webhook_token if "GenerateSecretString" in props else connector_document
        value = (secret_values or {}).get(logical_id, value)
        arn = secretsmanager.create_secret(Name=f"{prefix}{logical_id}", SecretString=value)["ARN"]
        stack.secret_arns[logical_id] = arn

    buckets = stack.resources("AWS::S3::Bucket")
    if buckets and s3 is None:
        raise ValueError("the template creates S3 buckets: provision() needs an s3 client")
    for logical_id, resource in buckets.items():
        props = stack.resolve(resource["Properties"])
        name = f"{prefix}{props.get('BucketName', logical_id)}".lower()
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        stack.bucket_names[logical_id] = name
        notifications = props.get("NotificationConfiguration", {}).get("QueueConfigurations", [])
        if notifications:
            s3.put_bucket_notification_configuration(
                Bucket=name,
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {
                            "QueueArn": n["Queue"],
                            "Events": [n["Event"]],
                            "Filter": {"Key": {"FilterRules": n["Filter"]["S3Key"]["Rules"]}},
                        }
                        for n in notifications
                    ]
                },
            )
    for logical_id in stack.resources("AWS::Logs::LogGroup") if logs is not None else ():
        logs.create_log_group(logGroupName=f"{prefix}{logical_id}")
        stack.log_group_names[logical_id] = f"{prefix}{logical_id}"
    return stack
