"""SQS: the retry queue (delayed redelivery) and the dead-letter queue (parked with a reason)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeadLetter:
    """Why a message is parked: these become SQS message attributes, readable without opening the body."""

    reason: str
    attempts: int
    first_failure_at: str
    last_braze_status: int | None = None
    event_id: str | None = None

    def attributes(self) -> dict:
        attrs = {
            "reason": self.reason[:1000],
            "attempts": str(self.attempts),
            "first_failure_at": self.first_failure_at,
            "last_braze_status": str(self.last_braze_status) if self.last_braze_status is not None else "none",
        }
        if self.event_id:
            attrs["event_id"] = self.event_id[:500]
        return {
            name: {"DataType": "Number" if name == "attempts" else "String", "StringValue": value}
            for name, value in attrs.items()
        }


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

    def enqueue_retry(self, body: str, delay_seconds: int) -> None:
        self._sqs.send_message(QueueUrl=self._retry_url, MessageBody=body, DelaySeconds=delay_seconds)

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        self._sqs.change_message_visibility(QueueUrl=self._retry_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds)

    def delete_retry(self, receipt_handle: str) -> None:
        self._sqs.delete_message(QueueUrl=self._retry_url, ReceiptHandle=receipt_handle)

    def dead_letter(self, body: str, why: DeadLetter) -> None:
        self._sqs.send_message(QueueUrl=self._dlq_url, MessageBody=body, MessageAttributes=why.attributes())
