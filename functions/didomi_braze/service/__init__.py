"""Use cases: one webhook delivery, one batch of retries. They wire the domain to the adapters."""
