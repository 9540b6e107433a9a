"""Delivery into a folder of a shared mailbox (`INBOX/Urbanisme`), created if missing.

The triaged message (the original with X-Triage headers) is appended with an urgency keyword
(`$Triage_critique`, ...) so agents can sort and filter by it in their mail client. Before
appending, the folder is searched for the request's `X-Triage-Request-Id`: a request is never
filed twice, even when the worker's own store was lost.
"""

from __future__ import annotations

import threading

from worker.delivery.base import Delivery, Receipt
from worker.errors import TransientError
from worker.imap import ImapSession, urgency_keyword


class ImapFolderDeliverer:
    """Appends to one folder over a shared, lazily (re)connected session."""

    def __init__(self, name: str, account_name: str, session: ImapSession, folder: str) -> None:
        self.name = name
        self.session = session
        self.folder = folder
        self.location = f"imap:{account_name}/{folder}"
        self._lock = threading.Lock()  # one session, used by several delivery threads

    def deliver(self, delivery: Delivery) -> Receipt:
        keywords = (
            [urgency_keyword(delivery.prediction.urgency.label)] if delivery.prediction else []
        )
        with self._lock:
            try:
                return self._deliver(delivery, keywords)
            except TransientError:
                self.session.close(quiet=True)  # the next delivery reconnects
                raise

    def _deliver(self, delivery: Delivery, keywords: list[str]) -> Receipt:
        self.session.ensure_folder(self.folder)
        if self.session.find_header(self.folder, "X-Triage-Request-Id", delivery.request_id):
            return Receipt(self.name, self.location, duplicate=True)
        self.session.append(self.folder, delivery.message, keywords)
        return Receipt(self.name, self.location)
