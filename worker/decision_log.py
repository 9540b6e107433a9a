"""The decision log: one JSON line per request, holding labels and routes but no content.

It answers "what did the worker decide about request X, and why" without storing anything a
citizen wrote: no subject, body, name or address, only ids, labels, probabilities and reasons.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class DecisionRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    time: datetime
    channel: str
    outcome: str
    model_version: str | None = None
    department: str | None = None
    urgency: str | None = None
    model_urgency: str | None = None
    confidence: dict[str, float] = {}
    probabilities: dict[str, dict[str, float]] = {}
    safety_rules: tuple[str, ...] = ()
    destinations: tuple[str, ...] = ()
    needs_review: bool | None = None
    escalated: bool | None = None
    reasons: tuple[str, ...] = ()
    error: str | None = None
    error_class: str | None = None


class DecisionLog:
    """Appends records to a JSONL file; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, record: DecisionRecord) -> None:
        line = json.dumps(record.model_dump(mode="json"), ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def read(self) -> list[DecisionRecord]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [DecisionRecord.model_validate_json(line) for line in handle if line.strip()]
