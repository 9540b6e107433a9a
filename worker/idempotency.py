"""Which (request, destination) pairs were delivered: the worker's guard against redelivery.

RabbitMQ delivers at least once, so a request may come back after a crash or a lost connection.
Before delivering to a destination the worker asks this store; after delivering it records the
pair. The store is SQLite (WAL mode, so several worker processes on one machine can share it) and
survives restarts. It holds ids and destination names only, no content.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from worker.sqlite_files import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    request_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    delivered_at TEXT NOT NULL,
    location TEXT NOT NULL,
    PRIMARY KEY (request_id, destination)
)
"""


class DeliveryStore:
    """A durable set of delivered (request id, destination) pairs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_database(path)
        self._db.execute(_SCHEMA)

    def delivered(self, request_id: str, destination: str) -> str | None:
        """Where the request was delivered to that destination, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT location FROM deliveries WHERE request_id = ? AND destination = ?",
                (request_id, destination),
            ).fetchone()
        return str(row[0]) if row else None

    def record(self, request_id: str, destination: str, location: str) -> None:
        """Remember a delivery; recording the same pair twice keeps the first."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?)",
                (request_id, destination, datetime.now(UTC).isoformat(), location),
            )

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
