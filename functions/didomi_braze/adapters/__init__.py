"""Adapters to the outside world: Braze over HTTP, SQS, Secrets Manager."""
