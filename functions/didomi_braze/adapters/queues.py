"""SQS: the `RetryQueue` port. The retry queue (delayed redelivery) and the dead-letter queue (parked with a reason)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..domain.ports import DeadLetter


class Queues:
    """Both queues. The SQS client is created on first use: only failures need it, so the cold start does not."""

    def __init__(self, client_factory: Callable[[], Any], retry_queue_url: str, dead_letter_queue_url: str):
        self._factory = client_factory
        self._client = None
        self._retry_url = retry_queue_url
        self._dlq_url = dead_letter_queue_url

    @property
    def _sqs(self):
        if self._client is None:
            self._client = self._factory()
        return self._client

    def enqueue(self, body: str, delay_seconds: int) -> None:
        self._sqs.send_message(QueueUrl=self._retry_url, MessageBody=body, DelaySeconds=delay_seconds)

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        self._sqs.change_message_visibility(QueueUrl=self._retry_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds)

    def dead_letter(self, body: str, why: DeadLetter) -> None:
        attributes = {
            name: {"DataType": "Number" if name == "attempts" else "String", "StringValue": value}
            for name, value in why.attributes().items()
        }
        self._sqs.send_message(QueueUrl=self._dlq_url, MessageBody=body, MessageAttributes=attributes)
