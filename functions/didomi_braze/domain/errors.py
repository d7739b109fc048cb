"""Domain errors. Each is turned into an answer in one place (the service layer)."""


class InvalidWebhook(Exception):
    """The request body is not a Didomi webhook this connector can act on (answered with 400)."""


class ConfigurationError(Exception):
    """The connector document or a setting is invalid. The message says what to fix, never a secret."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class MalformedRetryMessage(Exception):
    """A message on the retry queue that this connector did not write (or that was corrupted)."""


class StateUnavailable(Exception):
    """The state table could not be read or written: nothing may be sent, since its order cannot be checked."""


class DidomiUnavailable(Exception):
    """A Didomi call that did not succeed; `answer` says how (domain/didomi_api.py)."""

    def __init__(self, answer):
        self.answer = answer
        super().__init__(answer.reason)


class FileUnavailable(Exception):
    """A Currents file could not be read now (S3 unreachable, throttled): the message comes back."""


class UnreadableFile(Exception):
    """A Currents file that is gone or is not an Avro file this connector can read: parked with the reason."""
