"""The template's operations resources against the code: every alarm, dashboard widget and saved query refers to a
metric the functions count or a field they log (read from functions/ by tests/code_scan.py, not from a list), every
alarm reaches the alarm topic and has a runbook line, and the parameters refuse what the code refuses."""

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from didomi_braze.domain.access import AccessPolicy
from didomi_braze.domain.errors import ConfigurationError
from didomi_braze.domain.schedule import RetrySchedule
from didomi_braze_ops import trace
from sandbox.template import load_template
from tests.code_scan import scan

TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
EMITTED = scan()
NAMESPACE = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
SERVICE = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]


def of_type(type_name: str) -> dict[str, dict]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == type_name}


ALARMS = of_type("AWS::CloudWatch::Alarm")
FILTERS = of_type("AWS::Logs::MetricFilter")
FILTER_METRICS = {t["MetricName"] for f in FILTERS.values() for t in f["Properties"]["MetricTransformations"]}


def test_the_scan_finds_the_functions_metrics_and_log_fields():
    # A scan that found nothing would make every check below pass: it must see what the code obviously emits.
    assert {"EventsReceived", "EventsDelivered", "EventsDeadLettered", "WebhookUnavailable"} <= set(EMITTED.metrics)
    assert EMITTED.metrics["EventsSkipped"] == {"reason"} and EMITTED.metrics["WebhookUnavailable"] == {"cause"}
    assert {"user_ref", "event_id", "outcome", "reason", "braze_status"} <= EMITTED.log_fields


# -- alarms ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALARMS))
def test_each_alarm_watches_a_metric_that_exists(name):
    props = ALARMS[name]["Properties"]
    if props["Namespace"] != NAMESPACE:
        assert props["Namespace"].startswith("AWS/")
        return
    dimensions = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
    if props["MetricName"] in FILTER_METRICS:
        assert dimensions == {}  # metric filters publish without dimensions
    else:
        assert props["MetricName"] in EMITTED.metrics, f"{name}: no code counts {props['MetricName']}"
        assert dimensions == {"service": SERVICE}  # the total, which Powertools publishes under `service` alone


@pytest.mark.parametrize("name", sorted(ALARMS))
def test_each_alarm_notifies_the_alarm_topic_and_has_a_runbook_line(name):
    props = ALARMS[name]["Properties"]
    topic = {"Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]}
    assert props["AlarmActions"] == topic and props["OKActions"] == topic
    assert props["TreatMissingData"] == "notBreaching"
    runbook = README[README.index("### Alarms") :]
    assert f"**{name}**" in runbook, f"README's Alarms section has no runbook line for {name}"
    assert name in props["AlarmDescription"]


def test_the_issue_s_silent_loss_cases_each_have_an_alarm():
    watched = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in ALARMS.values()}
    assert (NAMESPACE, "WebhookUnavailable") in watched
    assert ("AWS/Lambda", "Errors") in watched and ("AWS/Lambda", "Throttles") in watched
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage") in watched
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in watched
    assert ("AWS/ApiGateway", "5xx") in watched and (NAMESPACE, "ApiThrottled") in watched
    throttled = {
        a["Properties"]["Dimensions"][0]["Value"]["Ref"] for a in ALARMS.values() if a["Properties"]["MetricName"] == "Throttles"
    }
    assert throttled == {"WebhookFunction", "RetryFunction"}


def test_the_alarm_topic_uses_a_key_cloudwatch_may_use():
    topic = RESOURCES["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}  # not alias/aws/sns, whose policy CloudWatch cannot use
    key = RESOURCES["AlarmTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    [statement] = [s for s in key["KeyPolicy"]["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(statement["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_the_access_log_metric_filters_read_a_field_the_access_log_writes():
    access_log = json.loads(RESOURCES["WebhookStage"]["Properties"]["AccessLogSettings"]["Format"].replace("\n", ""))
    for name, metric_filter in FILTERS.items():
        assert metric_filter["Properties"]["LogGroupName"] == {"Ref": "ApiAccessLogGroup"}
        for field in re.findall(r"\$\.(\w+)", metric_filter["Properties"]["FilterPattern"]):
            assert field in access_log, f"{name} filters on {field}, which the access log does not write"


# -- the dashboard ----------------------------------------------------------------------------------------------------
DASHBOARDS = of_type("AWS::CloudWatch::Dashboard")  # the connector's, and the flow back's (with EnableBrazeCurrents)


def dashboard(name: str = "Dashboard") -> dict:
    body = RESOURCES[name]["Properties"]["DashboardBody"]["Fn::Sub"]
    return json.loads(re.sub(r"\$\{[^}]+\}", lambda m: "1" if m.group(0) == "${RetryQueueAgeAlarmSeconds}" else "x", body))


def dashboard_metrics() -> list[tuple[str, str, dict]]:
    """(namespace, metric, dimensions) of every metric the dashboards draw, SEARCH expressions included."""
    found = []
    for widget in (w for name in DASHBOARDS for w in dashboard(name)["widgets"]):
        for metric in widget.get("properties", {}).get("metrics", []):
            if isinstance(metric[0], dict):
                expression = metric[0]["expression"]
                schema = re.search(r"\{([^}]+)\}", expression).group(1).split(",")
                name = re.search(r'MetricName="(\w+)"', expression).group(1)
                found.append((schema[0], name, dict.fromkeys(schema[1:], "*")))
            else:
                parts = [p for p in metric if not isinstance(p, dict)]
                found.append((parts[0], parts[1], dict(zip(parts[2::2], parts[3::2], strict=True))))
    return found


def test_every_metric_on_the_dashboard_is_one_the_code_emits_with_its_dimensions():
    for namespace, name, dimensions in dashboard_metrics():
        if namespace != NAMESPACE:
            continue
        if name in FILTER_METRICS:
            assert dimensions == {}
            continue
        assert name in EMITTED.metrics, f"the dashboard draws {name}, which no code counts"
        assert dimensions.pop("service") in (SERVICE, "*")
        assert set(dimensions) <= EMITTED.metrics[name], f"{name} is not counted by {set(dimensions)}"


def test_the_dashboard_shows_what_the_issue_asks_for():
    drawn = {(namespace, name, tuple(sorted(d))) for namespace, name, d in dashboard_metrics()}
    for name in ("EventsReceived", "EventsDelivered", "EventsQueued", "DeliveredAfterRetry", "BrazeRequests", "BrazeRateLimited"):
        assert (NAMESPACE, name, ("service",)) in drawn
    assert (NAMESPACE, "EventsSkipped", ("reason", "service")) in drawn
    assert (NAMESPACE, "EventsDeadLettered", ("reason", "service")) in drawn
    for name in ("ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"):
        assert ("AWS/SQS", name, ("QueueName",)) in drawn
    for name in ("Errors", "Throttles", "Duration"):
        assert ("AWS/Lambda", name, ("FunctionName",)) in drawn
    latency = [m for w in dashboard()["widgets"] for m in w.get("properties", {}).get("metrics", []) if "Latency" in m]
    assert {m[-1]["stat"] for m in latency} == {"p50", "p99"}
    # Each dashboard shows the alarms that exist with it: the flow back's are on its own, created with it.
    for name, resource in DASHBOARDS.items():
        [alarms] = [w for w in dashboard(name)["widgets"] if w["type"] == "alarm"]
        exist_with_it = [a for a, r in ALARMS.items() if r.get("Condition") == resource.get("Condition")]
        assert len(alarms["properties"]["alarms"]) == len(exist_with_it), name


def test_the_dashboard_counts_every_metric_the_code_emits():
    drawn = {name for namespace, name, _ in dashboard_metrics() if namespace == NAMESPACE}
    assert set(EMITTED.metrics) <= drawn, f"not on the dashboard: {set(EMITTED.metrics) - drawn}"


# -- the saved query and the timeline ---------------------------------------------------------------------------------
def test_the_saved_query_filters_on_a_field_every_user_line_carries():
    query = RESOURCES["TraceQuery"]["Properties"]
    filtered = re.findall(r"filter\s+(\w+)\s*=", query["QueryString"])
    assert filtered == ["user_ref"] and set(filtered) <= EMITTED.log_fields
    assert trace.PLACEHOLDER in query["QueryString"] and query["Parameters"][0]["Name"] == "user_ref"
    assert query["LogGroupNames"] == [{"Ref": "WebhookLogGroup"}, {"Ref": "RetryLogGroup"}]
    assert re.findall(r"fields\s+(.+)", query["QueryString"])[0].split(", ") == ["@timestamp", "@log", "@message"]


def test_the_timeline_reads_only_fields_and_outcomes_the_code_logs():
    assert set(trace.FIELDS_READ) <= EMITTED.log_fields, set(trace.FIELDS_READ) - EMITTED.log_fields
    assert set(trace.OUTCOMES) == EMITTED.outcomes


def test_the_functions_log_to_the_groups_the_query_searches():
    for function, group in (("WebhookFunction", "WebhookLogGroup"), ("RetryFunction", "RetryLogGroup")):
        assert RESOURCES[function]["Properties"]["LoggingConfig"]["LogGroup"] == {"Ref": group}


# -- parameters refuse what the code refuses ----------------------------------------------------------------------------
def pattern(name: str) -> re.Pattern:
    return re.compile(TEMPLATE["Parameters"][name]["AllowedPattern"])


@settings(max_examples=100, deadline=None)
@given(st.from_regex(pattern("RetryDelaysSeconds"), fullmatch=True))
def test_every_retry_schedule_the_template_accepts_the_code_accepts(text):
    assert 5 <= RetrySchedule.parse(text).retries <= 9


@pytest.mark.parametrize(
    "text", ["30,45,55,65", "0,45,55,65,75", "30,45,55,65,901", "30,45,55,65,75,1,1,1,1,1", "30, 45,55,65,75", ""]
)
def test_retry_schedules_the_code_refuses_are_refused(text):
    assert not pattern("RetryDelaysSeconds").fullmatch(text)


@settings(max_examples=100, deadline=None)
@given(st.from_regex(pattern("AllowedSourceCidrs"), fullmatch=True))
def test_every_allow_list_the_template_accepts_the_code_accepts(text):
    AccessPolicy.parse("bearer", text, None)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.ip_addresses().flatmap(lambda a: st.tuples(st.just(a), st.integers(0, a.max_prefixlen))), min_size=1, max_size=3)
)
def test_every_well_formed_address_or_block_is_accepted(networks):
    text = ",".join(f"{address}/{prefix}" if prefix % 2 else str(address) for address, prefix in networks)
    assert pattern("AllowedSourceCidrs").fullmatch(text), text


@pytest.mark.parametrize(
    "text", ["1.2.3.4/33", "256.1.1.1", "1.2.3", "35.159.1.63/32;", "::g", "1::2::3", "10.0.0.0/8,", "2001:db8::/129"]
)
def test_malformed_allow_lists_are_refused_by_both(text):
    assert not pattern("AllowedSourceCidrs").fullmatch(text)
    if not text.endswith(","):  # the code skips an empty entry; the template is stricter
        with pytest.raises(ConfigurationError):
            AccessPolicy.parse("bearer", text, None)


def test_an_existing_secret_must_be_named_by_its_full_arn():
    arn = pattern("ExistingConnectorSecretArn")
    assert arn.fullmatch("arn:aws:secretsmanager:eu-central-1:123456789012:secret:didomi/connector-AbC123")
    assert arn.fullmatch("")
    assert not arn.fullmatch("arn:aws:secretsmanager:eu-central-1:123456789012:secret:connector")  # partial ARN
    assert not arn.fullmatch("didomi/connector")


def test_a_customer_managed_key_is_granted_through_secrets_manager_only():
    assert pattern("ConnectorSecretKmsKeyArn").fullmatch(
        "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    )
    assert not pattern("ConnectorSecretKmsKeyArn").fullmatch("alias/connector")
    for function in ("WebhookFunction", "RetryFunction"):
        [grant] = [p for p in RESOURCES[function]["Properties"]["Policies"] if "Fn::If" in p]
        condition, policy, otherwise = grant["Fn::If"]
        assert condition == "HasConnectorKmsKey" and otherwise == {"Ref": "AWS::NoValue"}
        [statement] = policy["Statement"]
        assert statement["Action"] == "kms:Decrypt" and statement["Resource"] == {"Ref": "ConnectorSecretKmsKeyArn"}
        assert statement["Condition"]["StringEquals"]["kms:ViaService"] == {
            "Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"
        }


def test_the_oauth_user_pool_is_on_a_deliberate_feature_plan():
    assert RESOURCES["OAuthUserPool"]["Properties"]["UserPoolTier"] == "LITE"


def test_the_worker_runs_enough_invocations_at_once_to_drain_a_burst_handed_off_at_5000_a_second():
    # Each invocation takes a batch of 100 messages and about a second for it: a burst of 5,000 webhooks a second,
    # mostly handed to the worker, needs about 50 at once to be drained within a minute of its end (the burst
    # simulation: at 10 it drained four minutes after the burst).
    source = RESOURCES["RetryFunction"]["Properties"]["Events"]["Retries"]["Properties"]
    assert source["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "RetryMaximumConcurrency"}
    assert source["BatchSize"] * TEMPLATE["Parameters"]["RetryMaximumConcurrency"]["Default"] >= 5000
    assert "`RetryMaximumConcurrency` | `50`" in README
