"""Local maildir delivery: the embedded default destination.

Writes follow the maildir convention (a file is written in `tmp/`, synced, then renamed into
`new/`), so a reader never sees half a message. The file name carries a digest of the request id,
so delivering a request twice to the same maildir is detected and leaves one copy, even after an
agent's mail client moved it to `cur/` and added flags. The check and the write hold an exclusive
`flock` on a dot-file of the maildir, so threads and processes sharing it cannot both deliver.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import time
from pathlib import Path

from worker.delivery.base import Delivery, Receipt
from worker.errors import PermanentError, TransientError

LOCK_FILE = ".triage-delivery.lock"
_PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR})


def _token(request_id: str) -> str:
    return "T" + hashlib.sha256(request_id.encode()).hexdigest()[:20]


class MaildirDeliverer:
    """Delivers messages into one maildir (`<path>/{tmp,new,cur}`), once per request id."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")

    def _existing(self, token: str) -> Path | None:
        for sub in ("new", "cur"):
            folder = self.path / sub
            if folder.is_dir():
                for entry in os.scandir(folder):
                    if f".{token}." in entry.name:
                        return Path(entry.path)
        return None

    def deliver(self, delivery: Delivery) -> Receipt:
        """Write the message unless this maildir already holds the request."""
        token = _token(delivery.request_id)
        try:
            for sub in ("tmp", "new", "cur"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            with (self.path / LOCK_FILE).open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                existing = self._existing(token)
                if existing is not None:
                    return Receipt(self.name, str(existing), duplicate=True)
                name = f"{time.time_ns() // 1000}.{token}.{self._host}"
                temporary = self.path / "tmp" / name
                with temporary.open("xb") as handle:
                    handle.write(delivery.message)
                    handle.flush()
                    os.fsync(handle.fileno())
                final = self.path / "new" / name
                temporary.rename(final)
                return Receipt(self.name, str(final), duplicate=False)
        except OSError as exc:
            error = PermanentError if exc.errno in _PERMANENT_ERRNOS else TransientError
            raise error(f"maildir {self.name}: {exc.strerror or type(exc).__name__}") from exc
