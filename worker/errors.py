"""The project's own exceptions.

Foreign errors (from the email package, json, pydantic, the file system, later pika, imapclient and
smtplib) are translated into these at the module that meets them, so that callers decide what to
do from one small hierarchy: a `ParseError` or a `PermanentError` dead-letters the request at once,
a `TransientError` is worth retrying.
"""

from __future__ import annotations


class TriageError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(TriageError):
    """Configuration that cannot be used; the message names the file, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class ParseError(TriageError):
    """Input that is not a usable request. `reason` is safe to log: it never quotes the content."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class DeliveryError(TriageError):
    """A delivery that did not happen. Subclasses say whether trying again may help."""

    transient = False


class TransientError(DeliveryError):
    """A failure that may go away by itself (target down, disk full, broker hiccup)."""

    transient = True


class PermanentError(DeliveryError):
    """A failure that retrying will not fix (target refuses the message, bad configuration)."""


class ModelError(TriageError):
    """A model directory that cannot be loaded or a model that cannot be trained."""


def safe_reason(error: BaseException) -> str:
    """What may be logged and kept about an error: our own messages never quote content, a
    foreign exception's text might, so it is reduced to its class."""
    return str(error) if isinstance(error, TriageError) else type(error).__name__
