"""The Logs Insights adapter trace uses: the saved query looked up by name (paged), a query started and polled
until it completes, its rows as field → value, and every way it can fail as one clear error."""

import json
import time
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from didomi_braze_ops.aws import OperatorError
from didomi_braze_ops.trace import CloudWatchLogsInsights

REGION = "eu-central-1"
QUERY = 'fields @timestamp, @log, @message\n| filter user_ref = "0123456789abcdef"\n| sort @timestamp asc\n| limit 10000'


def _stubbed():
    client = boto3.client("logs", region_name=REGION)
    return client, Stubber(client)


def test_the_saved_query_is_found_by_its_exact_name_across_pages():
    client, stub = _stubbed()
    stub.add_response(
        "describe_query_definitions",
        {"queryDefinitions": [{"name": "prod/what-happened-to-a-user-old", "queryString": "x"}], "nextToken": "t"},
        {"queryDefinitionNamePrefix": "prod/what-happened-to-a-user", "maxResults": 1000},
    )
    stub.add_response(
        "describe_query_definitions",
        {"queryDefinitions": [{"name": "prod/what-happened-to-a-user", "queryString": "q", "logGroupNames": ["a", "b"]}]},
        {"queryDefinitionNamePrefix": "prod/what-happened-to-a-user", "maxResults": 1000, "nextToken": "t"},
    )
    with stub:
        saved = CloudWatchLogsInsights(client).saved_query("prod/what-happened-to-a-user")
    assert (saved.query, saved.log_groups) == ("q", ("a", "b"))


def test_a_missing_saved_query_says_to_deploy():
    client, stub = _stubbed()
    stub.add_response("describe_query_definitions", {"queryDefinitions": []})
    with stub, pytest.raises(OperatorError, match="deploy this version of template.yaml"):
        CloudWatchLogsInsights(client).saved_query("prod/what-happened-to-a-user")


def test_a_query_is_polled_until_complete_without_sleeping_for_real():
    client, stub = _stubbed()
    naps = []
    stub.add_response(
        "start_query",
        {"queryId": "q-1"},
        {"logGroupNames": ["a", "b"], "startTime": 100, "endTime": 200, "queryString": QUERY, "limit": 10000},
    )
    stub.add_response("get_query_results", {"status": "Scheduled", "results": []}, {"queryId": "q-1"})
    stub.add_response("get_query_results", {"status": "Running", "results": []}, {"queryId": "q-1"})
    stub.add_response(
        "get_query_results",
        {
            "status": "Complete",
            "results": [[{"field": "@timestamp", "value": "2026-05-04 12:00:00.000"}, {"field": "@message", "value": "{}"}]],
        },
        {"queryId": "q-1"},
    )
    with stub:
        rows = CloudWatchLogsInsights(client, sleep=naps.append).run(QUERY, ["a", "b"], 100, 200)
    assert rows == [{"@timestamp": "2026-05-04 12:00:00.000", "@message": "{}"}] and naps == [1.0, 1.0]


@pytest.mark.parametrize("status", ["Failed", "Cancelled", "Timeout", "Unknown"])
def test_a_query_that_does_not_complete_is_one_error(status):
    client, stub = _stubbed()
    stub.add_response("start_query", {"queryId": "q-1"})
    stub.add_response("get_query_results", {"status": status, "results": []})
    with stub, pytest.raises(OperatorError, match=f"the Logs Insights query ended {status}"):
        CloudWatchLogsInsights(client, sleep=lambda s: None).run(QUERY, ["a"], 100, 200)


def test_a_query_that_never_finishes_is_stopped():
    client, stub = _stubbed()
    stub.add_response("start_query", {"queryId": "q-1"})
    for _ in range(3):
        stub.add_response("get_query_results", {"status": "Running", "results": []})
    stub.add_response("stop_query", {"success": True}, {"queryId": "q-1"})
    with stub, pytest.raises(OperatorError, match="took longer than 3 s"):
        CloudWatchLogsInsights(client, sleep=lambda s: None, patience=3).run(QUERY, ["a"], 100, 200)
    stub.assert_no_pending_responses()


def test_an_aws_error_is_one_line():
    client, stub = _stubbed()
    stub.add_client_error("start_query", "ResourceNotFoundException", "Log group does not exist")
    with stub, pytest.raises(OperatorError, match="ResourceNotFoundException: Log group does not exist"):
        CloudWatchLogsInsights(client).run(QUERY, ["a"], 100, 200)


def test_against_cloudwatch_logs_on_moto_rows_come_back_as_fields():
    # moto runs the query without its filter: the point here is the API round trip and the shape of the rows.
    with mock_aws():
        logs = boto3.client("logs", region_name=REGION)
        logs.create_log_group(logGroupName="webhook")
        logs.create_log_stream(logGroupName="webhook", logStreamName="s")
        now = int(time.time() * 1000)
        line = json.dumps({"message": "event delivered to Braze", "user_ref": "0123456789abcdef"})
        logs.put_log_events(logGroupName="webhook", logStreamName="s", logEvents=[{"timestamp": now, "message": line}])
        start = int(datetime.now(UTC).timestamp()) - 60
        rows = CloudWatchLogsInsights(logs, sleep=lambda s: None).run(QUERY, ["webhook"], start, start + 120)
    assert [(row["@log"], row["@message"]) for row in rows] == [("webhook", line)]
