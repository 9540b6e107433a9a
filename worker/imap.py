"""IMAP through imapclient: the only module that imports it.

`ImapSession` is a small, synchronous view of one account: select a folder, list what the intake
has not handled yet, fetch raw bytes, mark (keyword or move), wait with IDLE, append to a folder.
Foreign errors become `ImapUnavailableError` (transient: network, timeouts, server restart) or
`ImapRefusedError` (permanent: authentication, a command the server rejects) here.
"""

from __future__ import annotations

import email.parser
import imaplib
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from worker.config import ImapAccount
from worker.errors import ConfigError, PermanentError, TransientError

T = TypeVar("T")

TRIAGE_FIELDS = (
    b"X-TRIAGE-REQUEST-ID",
    b"X-TRIAGE-DEPARTMENT",
    b"X-TRIAGE-URGENCY",
    b"X-TRIAGE-REVIEW",
    b"X-TRIAGE-MODEL",
)

PROCESSED_KEYWORD = "$Triaged"
SKIPPED_KEYWORD = "$TriageSkipped"


@dataclass(frozen=True)
class TriagedMessage:
    """A message we filed, as it sits now: its folder, triage headers and IMAP keywords."""

    uid: int
    folder: str
    headers: dict[str, str]  # lower-case names
    keywords: frozenset[str]


class ImapUnavailableError(TransientError):
    """The IMAP server could not be reached or dropped the connection."""


class ImapRefusedError(PermanentError):
    """The IMAP server refused a login or a command."""


def account_password(name: str, account: ImapAccount) -> str:
    """The account's password, from the environment variable the settings name."""
    password = os.environ.get(account.password_env)
    if not password:
        raise ConfigError(
            "environment", account.password_env, f"no password for IMAP account {name!r}"
        )
    return password


def urgency_keyword(urgency: str) -> str:
    """The IMAP keyword carrying a triage urgency (an atom: letters, digits, '$', '_')."""
    return f"$Triage_{urgency}"


class ImapSession:
    """One authenticated connection to an account; not thread-safe (hold a lock to share it)."""

    def __init__(self, account: ImapAccount, password: str) -> None:
        self.account = account
        self._password = password
        self._client: IMAPClient | None = None
        self.selected: str | None = None

    # -- connection ----------------------------------------------------------------------------

    def _guard(self, work: Callable[[], T]) -> T:
        try:
            return work()
        except LoginError as exc:
            raise ImapRefusedError(f"IMAP login refused for {self.account.username!r}") from exc
        except (TimeoutError, IMAPClientAbortError, imaplib.IMAP4.abort, OSError) as exc:
            self.close(quiet=True)
            raise ImapUnavailableError(f"IMAP connection lost ({type(exc).__name__})") from exc
        except (IMAPClientError, imaplib.IMAP4.error) as exc:
            raise ImapRefusedError(f"IMAP command refused ({type(exc).__name__})") from exc

    def connect(self) -> None:
        account = self.account

        def work() -> None:
            context = ssl.create_default_context()
            client = IMAPClient(
                account.host,
                port=account.port,
                ssl=account.security == "ssl",
                ssl_context=context if account.security == "ssl" else None,
                timeout=account.timeout,
            )
            if account.security == "starttls":
                client.starttls(context)
            client.login(account.username, self._password)
            self._client = client

        self._guard(work)
        self.selected = None

    def close(self, quiet: bool = False) -> None:
        client, self._client = self._client, None
        self.selected = None
        if client is not None:
            try:
                client.logout()
            except Exception:
                if not quiet:
                    raise

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            self.connect()
        assert self._client is not None
        return self._client

    def supports_idle(self) -> bool:
        return bool(self._guard(lambda: self.client.has_capability("IDLE")))

    def noop(self) -> None:
        """A round trip: raises `ImapUnavailableError` on a connection that died silently."""
        self._guard(lambda: self.client.noop())

    # -- folders -------------------------------------------------------------------------------

    def select(self, folder: str) -> int:
        """Select `folder` (read-write) and return its UIDVALIDITY."""

        def work() -> int:
            status = self.client.select_folder(folder)
            self.selected = folder
            return int(status[b"UIDVALIDITY"])

        return self._guard(work)

    def ensure_folder(self, folder: str) -> None:
        def work() -> None:
            if not self.client.folder_exists(folder):
                self.client.create_folder(folder)

        self._guard(work)

    def unprocessed(self) -> list[int]:
        """UIDs of the selected folder without the processed or skipped keyword, ascending."""
        criteria = ["NOT", "KEYWORD", PROCESSED_KEYWORD, "NOT", "KEYWORD", SKIPPED_KEYWORD]
        return sorted(self._guard(lambda: self.client.search(criteria)))

    def fetch_raw(self, uid: int) -> bytes | None:
        """The whole message, without setting \\Seen; None if it vanished meanwhile."""

        def work() -> bytes | None:
            data = self.client.fetch([uid], ["BODY.PEEK[]"])
            entry = data.get(uid)
            return bytes(entry[b"BODY[]"]) if entry and b"BODY[]" in entry else None

        return self._guard(work)

    def add_keywords(self, uids: Sequence[int], keywords: Sequence[str]) -> None:
        self._guard(lambda: self.client.add_flags(list(uids), [k.encode() for k in keywords]))

    def move(self, uids: Sequence[int], folder: str) -> None:
        """Move messages (MOVE, or COPY + delete + expunge on servers without it)."""

        def work() -> None:
            if not self.client.folder_exists(folder):
                self.client.create_folder(folder)
            if self.client.has_capability("MOVE"):
                self.client.move(list(uids), folder)
            else:
                self.client.copy(list(uids), folder)
                self.client.delete_messages(list(uids))
                self.client.expunge(list(uids))

        self._guard(work)

    def idle_wait(self, timeout: float) -> bool:
        """IDLE up to `timeout` seconds; True when the server announced a change."""

        def work() -> bool:
            client = self.client
            client.idle()
            try:
                responses: list[Any] = client.idle_check(timeout=timeout)
            finally:
                client.idle_done()
            return bool(responses)

        return self._guard(work)

    # -- delivery ------------------------------------------------------------------------------

    def find_header(self, folder: str, header: str, value: str) -> list[int]:
        """UIDs of `folder` whose `header` contains `value`."""

        def work() -> list[int]:
            self.client.select_folder(folder)
            self.selected = folder
            return list(self.client.search(["HEADER", header, value]))

        return self._guard(work)

    def folders(self) -> list[str]:
        """Names of every folder of the account."""
        return self._guard(lambda: [str(entry[2]) for entry in self.client.list_folders()])

    def triaged(self, folder: str) -> list[TriagedMessage]:
        """Messages of `folder` carrying our triage headers, with their keywords (read-only)."""

        def work() -> list[TriagedMessage]:
            self.client.select_folder(folder, readonly=True)
            self.selected = None  # read-only: the intake must select again before marking
            uids = list(self.client.search(["HEADER", "X-Triage-Request-Id", ""]))
            if not uids:
                return []
            fields = b"BODY.PEEK[HEADER.FIELDS (" + b" ".join(TRIAGE_FIELDS) + b")]"
            fetched = self.client.fetch(uids, [fields, b"FLAGS"])
            found = []
            for uid, data in sorted(fetched.items()):
                # The reply's key echoes the request in the server's own spelling: match loosely.
                block = next((bytes(v) for k, v in data.items() if k.startswith(b"BODY[")), b"")
                headers = email.parser.BytesHeaderParser().parsebytes(block)
                flags = {bytes(flag).decode("ascii", "replace") for flag in data.get(b"FLAGS", ())}
                found.append(
                    TriagedMessage(
                        uid=int(uid),
                        folder=folder,
                        headers={
                            name.lower(): str(value).strip() for name, value in headers.items()
                        },
                        keywords=frozenset(flags),
                    )
                )
            return found

        return self._guard(work)

    def fetch_from(self, folder: str, uid: int) -> bytes | None:
        """One message of `folder`, read-only; None if it vanished meanwhile."""

        def work() -> bytes | None:
            self.client.select_folder(folder, readonly=True)
            self.selected = None
            entry = self.client.fetch([uid], ["BODY.PEEK[]"]).get(uid)
            return bytes(entry[b"BODY[]"]) if entry and b"BODY[]" in entry else None

        return self._guard(work)

    def append(self, folder: str, message: bytes, keywords: Sequence[str] = ()) -> None:
        self._guard(
            lambda: self.client.append(folder, message, flags=[k.encode() for k in keywords])
        )
