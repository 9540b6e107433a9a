"""structlog set-up: JSON lines for daemons, a console renderer on a terminal.

Logs are events with ids and labels. As a last line of defence, values under keys that would hold
personal data (subject, body, sender, address...) are replaced before rendering, so a careless
call cannot write a citizen's words or address into a log file.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

PERSONAL_KEYS = frozenset(
    {
        "subject", "body", "text", "full_text", "classifier_text", "sender", "from_addr",
        "to_addr", "email", "address", "name", "phone", "message", "content", "payload",
    }
)  # fmt: skip
REDACTED = "[redacted]"


def redact_personal_data(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that blanks the values of keys that may carry personal data."""
    for key in PERSONAL_KEYS.intersection(event):
        event[key] = REDACTED
    return event


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of the write (it may be replaced)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process; `fmt` is 'auto', 'json' or 'console'."""
    output: TextIO | _CurrentStderr = stream or _CurrentStderr()
    use_console = fmt == "console" or (fmt == "auto" and output.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=output),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
