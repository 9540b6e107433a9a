"""Agents' corrections of the triage, and the requests they may correct: the feedback store.

The worker remembers each triaged request (its pseudonymised classifier text and what the model
predicted) so that an agent who later corrects that request by id turns it into a training example.
Corrections come from several channels (a message moved to another service's folder, the review
queue, a forward, the command line, a CSV file); one correction is kept per request id, the latest
agent decision winning.

Every text passes through `pseudonymise` before it is written, whatever the caller passed: nothing
unpseudonymised ever reaches the file. The store is SQLite (WAL mode, like the delivery store), its
timestamps ISO 8601 UTC strings of a fixed width so that they compare in time order. Labels are
stored as given: callers validate them against the taxonomy.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import structlog

from classifiers.pseudonymise import pseudonymise
from worker.errors import TriageError
from worker.sqlite_files import open_database

log = structlog.get_logger("worker.feedback")

CorrectionSource = Literal["imap-move", "review", "forward", "cli", "csv"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    department TEXT NOT NULL,
    urgency TEXT NOT NULL,
    model_version TEXT NOT NULL,
    channel TEXT NOT NULL,
    destinations TEXT NOT NULL,
    review INTEGER NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_seen_at ON requests (seen_at);
CREATE TABLE IF NOT EXISTS corrections (
    request_id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    department TEXT NOT NULL,
    urgency TEXT NOT NULL,
    urgency_corrected INTEGER NOT NULL,
    predicted_department TEXT,
    predicted_urgency TEXT,
    model_version TEXT,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS corrections_created_at ON corrections (created_at);
"""

_REQUEST_COLUMNS = (
    "request_id, text, department, urgency, model_version, channel, destinations, review, seen_at"
)
_CORRECTION_COLUMNS = (
    "request_id, text, department, urgency, urgency_corrected, predicted_department, "
    "predicted_urgency, model_version, source, created_at"
)


class UnknownRequestError(TriageError):
    """A correction of a request the store does not remember, given without its text."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"no remembered request {request_id!r} and no text given")


@dataclass(frozen=True)
class RememberedRequest:
    """A triaged request as the store keeps it: pseudonymised text, prediction and routing."""

    request_id: str
    text: str
    department: str
    urgency: str
    model_version: str
    channel: str
    destinations: tuple[str, ...]
    review: bool
    seen_at: datetime


@dataclass(frozen=True)
class Correction:
    """An agent's decision about one request, ready to become a training example.

    `urgency` is the agent's urgency when `urgency_corrected`, else the predicted one kept.
    """

    request_id: str
    text: str
    department: str
    urgency: str
    urgency_corrected: bool
    predicted_department: str | None
    predicted_urgency: str | None
    model_version: str | None
    source: CorrectionSource
    created_at: datetime


@dataclass(frozen=True)
class PurgeReport:
    """How many rows a purge deleted, and the time before which they were deleted."""

    requests: int
    corrections: int
    cutoff: datetime


def _timestamp(moment: datetime | None) -> str:
    """`moment` (default: now) as a fixed-width UTC string; a naive datetime is refused."""
    if moment is None:
        moment = datetime.now(UTC)
    elif moment.tzinfo is None:
        raise ValueError("feedback times must be timezone-aware")
    # Fixed width (microseconds always present): string order in SQLite is then time order.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _remembered(row: tuple[object, ...]) -> RememberedRequest:
    rid, text, department, urgency, version, channel, destinations, review, seen_at = row
    return RememberedRequest(
        request_id=str(rid),
        text=str(text),
        department=str(department),
        urgency=str(urgency),
        model_version=str(version),
        channel=str(channel),
        destinations=tuple(json.loads(str(destinations))),
        review=bool(review),
        seen_at=_moment(str(seen_at)),
    )


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _correction(row: tuple[object, ...]) -> Correction:
    rid, text, department, urgency, corrected, pred_dep, pred_urg, version, source, at = row
    return Correction(
        request_id=str(rid),
        text=str(text),
        department=str(department),
        urgency=str(urgency),
        urgency_corrected=bool(corrected),
        predicted_department=_optional(pred_dep),
        predicted_urgency=_optional(pred_urg),
        model_version=_optional(version),
        source=str(source),  # type: ignore[arg-type]  # only CorrectionSource values are written
        created_at=_moment(str(at)),
    )


class FeedbackStore:
    """Remembered requests and agents' corrections in one SQLite file, safe to share by threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_database(path)
        # Purged texts must not linger in free pages of the file.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)

    def remember(
        self,
        request_id: str,
        text: str,
        *,
        department: str,
        urgency: str,
        model_version: str,
        channel: str,
        destinations: Sequence[str],
        review: bool,
        at: datetime | None = None,
    ) -> None:
        """Keep a triaged request's pseudonymised text and prediction, replacing any earlier one."""
        row = (
            request_id,
            pseudonymise(text),
            department,
            urgency,
            model_version,
            channel,
            json.dumps(list(destinations)),
            int(review),
            _timestamp(at),
        )
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO requests ({_REQUEST_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def remembered(self, request_id: str) -> RememberedRequest | None:
        """The remembered request with that id, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
        return _remembered(row) if row else None

    def correct(
        self,
        request_id: str,
        *,
        department: str,
        urgency: str | None = None,
        source: CorrectionSource,
        text: str | None = None,
        predicted_department: str | None = None,
        predicted_urgency: str | None = None,
        model_version: str | None = None,
        at: datetime | None = None,
    ) -> Correction | None:
        """Record an agent's correction of a request; None when the same one is already stored.

        `text`, the predictions and the model version default to the remembered request's; with
        neither a remembered request nor `text`, `UnknownRequestError` is raised. `urgency` None
        keeps the predicted urgency (`urgency_corrected` False; a `ValueError` when none is
        known); an urgency given is the agent's decision, even when equal to the prediction. A
        correction replaces the request's earlier one unless it has the same labels and source.
        """
        given_text = None if text is None else pseudonymise(text)
        created_at = _timestamp(at)
        with self._lock:
            # One write transaction: another process must not slip in between read and write.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                correction = self._correct_locked(
                    request_id,
                    department=department,
                    urgency=urgency,
                    source=source,
                    text=given_text,
                    predicted=(predicted_department, predicted_urgency, model_version),
                    created_at=created_at,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        if correction is not None:
            log.info(
                "feedback.recorded",
                request_id=request_id,
                source=source,
                department=department,
                urgency_corrected=correction.urgency_corrected,
            )
        return correction

    def _correct_locked(
        self,
        request_id: str,
        *,
        department: str,
        urgency: str | None,
        source: CorrectionSource,
        text: str | None,
        predicted: tuple[str | None, str | None, str | None],
        created_at: str,
    ) -> Correction | None:
        row = self._db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE request_id = ?", (request_id,)
        ).fetchone()
        known = _remembered(row) if row else None
        predicted_department, predicted_urgency, model_version = predicted
        if known is not None:
            # Remembered texts were pseudonymised when written.
            text = known.text if text is None else text
            predicted_department = predicted_department or known.department
            predicted_urgency = predicted_urgency or known.urgency
            model_version = model_version or known.model_version
        if text is None:
            raise UnknownRequestError(request_id)
        urgency_corrected = urgency is not None
        final_urgency = urgency if urgency is not None else predicted_urgency
        if final_urgency is None:
            raise ValueError(f"request {request_id!r}: no urgency given and none predicted")
        earlier = self._db.execute(
            "SELECT department, urgency, urgency_corrected, source FROM corrections "
            "WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        if earlier == (department, final_urgency, int(urgency_corrected), source):
            return None
        correction = Correction(
            request_id=request_id,
            text=text,
            department=department,
            urgency=final_urgency,
            urgency_corrected=urgency_corrected,
            predicted_department=predicted_department,
            predicted_urgency=predicted_urgency,
            model_version=model_version,
            source=source,
            created_at=_moment(created_at),
        )
        self._db.execute(
            f"INSERT OR REPLACE INTO corrections ({_CORRECTION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                request_id,
                text,
                department,
                final_urgency,
                int(urgency_corrected),
                predicted_department,
                predicted_urgency,
                model_version,
                source,
                created_at,
            ),
        )
        return correction

    def corrections(self, *, since: datetime | None = None) -> list[Correction]:
        """The stored corrections made at or after `since` (default: all), oldest first."""
        start = _timestamp(since) if since is not None else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_CORRECTION_COLUMNS} FROM corrections WHERE created_at >= ? "
                "ORDER BY created_at, request_id",
                (start,),
            ).fetchall()
        return [_correction(row) for row in rows]

    def purge(self, older_than_days: int, *, now: datetime | None = None) -> PurgeReport:
        """Delete remembered requests seen, and corrections made, before `now - older_than_days`.

        `older_than_days` must be at least 1 (a `ValueError` otherwise): a purge never empties
        the store of what was written today.
        """
        if older_than_days < 1:
            raise ValueError(f"older_than_days must be at least 1, got {older_than_days}")
        moment = now if now is not None else datetime.now(UTC)
        cutoff = _timestamp(moment - timedelta(days=older_than_days))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                requests = self._db.execute("DELETE FROM requests WHERE seen_at < ?", (cutoff,))
                corrections = self._db.execute(
                    "DELETE FROM corrections WHERE created_at < ?", (cutoff,)
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            # Old page images stay in the write-ahead log until a checkpoint copies it back.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        report = PurgeReport(requests.rowcount, corrections.rowcount, _moment(cutoff))
        log.info(
            "feedback.purged",
            requests=report.requests,
            corrections=report.corrections,
            cutoff=cutoff,
        )
        return report

    def counts(self) -> dict[str, int]:
        """How many requests are remembered and how many corrections are stored."""
        with self._lock:
            requests = self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
            corrections = self._db.execute("SELECT COUNT(*) FROM corrections").fetchone()[0]
        return {"requests": int(requests), "corrections": int(corrections)}

    def close(self) -> None:
        with self._lock:
            self._db.close()
