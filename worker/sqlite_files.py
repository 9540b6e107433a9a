"""The SQLite files the worker keeps (deliveries, intake state, feedback), opened one way."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_database(path: Path) -> sqlite3.Connection:
    """A connection shared by threads (callers hold a lock), in autocommit, WAL mode.

    WAL lets readers in other processes (the CLI beside a running worker) work without blocking;
    `synchronous=NORMAL` is durable across application crashes, which is what the stores need.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    database = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("PRAGMA synchronous=NORMAL")
    return database
