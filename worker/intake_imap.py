"""`triage intake imap`: watch shared mailboxes and hand each new message to the worker.

For each message not yet marked: fetch its bytes, publish them (confirmed) to the intake queue, or
run them through the embedded pipeline, record that in a durable state, then mark the message on
the server (the `$Triaged` keyword, or a move to the processed folder). The state, kept per
(mailbox, UIDVALIDITY, UID) and per request id, makes a crash at any point safe:

- after publishing and recording, before marking: on restart the message is marked, not
  published again;
- after publishing, before recording (a window of one SQLite write): it is published again with
  the same request id, and the worker's idempotency store delivers it once;
- a UIDVALIDITY change (a folder recreated) renumbers messages: the request id (a digest of the
  Message-ID) still recognises those already published.

Machine-sent mail (auto-replies, lists, bulk, our own forwards) gets `$TriageSkipped` instead,
unless the account says `skip_automated: false`. IDLE is used when the server offers it,
re-issued every `idle_timeout` seconds (well before the 29-minute limit of RFC 2177) and followed
by a NOOP that detects a connection that died silently; otherwise the folder is polled.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import structlog

from worker import exit_codes
from worker.config import ImapAccount
from worker.daemon import install_stop_signals
from worker.errors import ConfigError, ParseError, PermanentError, TransientError
from worker.feedback import FeedbackStore
from worker.imap import PROCESSED_KEYWORD, SKIPPED_KEYWORD, ImapSession, account_password
from worker.intake_sinks import Sink, pipeline_sink, rabbit_sink
from worker.parsing import ParseLimits, parse_email
from worker.rabbitmq import RabbitBroker
from worker.request import Channel, RawRequest, Request
from worker.routing import queue_departments
from worker.runtime import Configuration, build_pipeline, topology_of

log = structlog.get_logger("worker.intake_imap")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (mailbox, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS by_request ON messages (mailbox, request_id);
"""


class IntakeState:
    """Durable record of what the intake did with each message (SQLite, WAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=30.0, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def state(self, mailbox: str, uidvalidity: int, uid: int) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT state FROM messages WHERE mailbox=? AND uidvalidity=? AND uid=?",
                (mailbox, uidvalidity, uid),
            ).fetchone()
        return str(row[0]) if row else None

    def published(self, mailbox: str, request_id: str) -> bool:
        """Whether a message with this request id was already handed over from this mailbox."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM messages WHERE mailbox=? AND request_id=? AND state!='skipped'",
                (mailbox, request_id),
            ).fetchone()
        return row is not None

    def record(self, mailbox: str, uidvalidity: int, uid: int, request_id: str, state: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (mailbox, uidvalidity, uid) DO UPDATE SET state=excluded.state, "
                "at=excluded.at",
                (mailbox, uidvalidity, uid, request_id, state, datetime.now(UTC).isoformat()),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ImapIntake:
    """Watches one account's folder until `stop` is set."""

    def __init__(
        self,
        name: str,
        account: ImapAccount,
        session: ImapSession,
        state: IntakeState,
        sink: Sink,
        *,
        limits: ParseLimits | None = None,
        stop: threading.Event | None = None,
        max_backoff: float = 60.0,
    ) -> None:
        self.name = name
        self.account = account
        self.session = session
        self.state = state
        self.sink = sink
        self.limits = limits or ParseLimits()
        self.stop = stop or threading.Event()
        self.max_backoff = max_backoff
        self.uidvalidity: int | None = None
        self.counts = {"published": 0, "skipped": 0, "remarked": 0, "reconnects": 0, "idle": 0}

    @property
    def mailbox(self) -> str:
        return f"{self.name}:{self.account.folder}"

    def run(self) -> None:
        """Connect, catch up, then wait for new mail; reconnect with backoff on failures."""
        delay = 1.0
        while not self.stop.is_set():
            try:
                self.session.connect()
                self.uidvalidity = self.session.select(self.account.folder)
                log.info("intake.imap_connected", account=self.name, folder=self.account.folder)
                delay = 1.0
                self.catch_up()
                self._watch()
            except TransientError as exc:
                self.session.close(quiet=True)
                self.counts["reconnects"] += 1
                log.warning(
                    "intake.imap_disconnected",
                    account=self.name,
                    error_class=type(exc).__name__,
                    retry_in=delay,
                )
                self.stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)
            except PermanentError as exc:
                log.error("intake.imap_refused", account=self.name, error=str(exc))
                self.stop.wait(self.max_backoff)
        self.session.close(quiet=True)

    def _watch(self) -> None:
        idle = self.session.supports_idle()
        while not self.stop.is_set():
            if idle:
                self.session.idle_wait(self.account.idle_timeout)
                self.counts["idle"] += 1
                self.session.noop()  # a dead connection shows here, not in a silent IDLE
            else:
                self.stop.wait(self.account.poll_interval)
            if not self.stop.is_set():
                self.catch_up()

    def catch_up(self) -> int:
        """Handle every unmarked message of the folder; returns how many were handed over."""
        handed = 0
        for uid in self.session.unprocessed():
            if self.stop.is_set():
                break
            handed += self.process(uid)
        return handed

    def process(self, uid: int) -> int:
        """Handle one message by UID: hand it over once, then mark it."""
        assert self.uidvalidity is not None
        mailbox, validity = self.mailbox, self.uidvalidity
        known = self.state.state(mailbox, validity, uid)
        if known in ("published", "marked"):
            self._mark(uid)
            self.counts["remarked"] += 1
            return 0
        payload = self.session.fetch_raw(uid)
        if payload is None:
            return 0
        raw = RawRequest(payload=payload, channel=Channel.EMAIL, origin=f"imap:{mailbox}/{uid}")
        try:
            request: Request | None = parse_email(payload, self.limits)
        except ParseError:
            request = None  # handed over anyway: the worker dead-letters it with the reason
        request_id = request.id if request else raw.fallback_id
        if request is not None and request.automated and self.account.skip_automated:
            self.session.add_keywords([uid], [SKIPPED_KEYWORD])
            self.state.record(mailbox, validity, uid, request_id, "skipped")
            self.counts["skipped"] += 1
            log.info(
                "intake.skipped", account=self.name, request_id=request_id, why=request.automated
            )
            return 0
        if self.state.published(mailbox, request_id):
            log.info("intake.already_published", account=self.name, request_id=request_id)
        else:
            self.sink(raw, request)
            self.counts["published"] += 1
            log.info("intake.published", account=self.name, request_id=request_id)
        self.state.record(mailbox, validity, uid, request_id, "published")
        self._mark(uid)
        self.state.record(mailbox, validity, uid, request_id, "marked")
        return 1

    def _mark(self, uid: int) -> None:
        if self.account.processed == "move":
            self.session.move([uid], self.account.processed_folder)
        else:
            self.session.add_keywords([uid], [PROCESSED_KEYWORD])


def run_until(intakes: list[ImapIntake], stop: threading.Event) -> None:
    """Run each intake on its own thread until `stop` is set."""
    threads = [
        threading.Thread(target=intake.run, name=f"imap-{intake.name}", daemon=True)
        for intake in intakes
    ]
    for thread in threads:
        thread.start()
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join(timeout=30)


def run_imap_intake(
    configuration: Configuration, embedded: bool, stop: threading.Event | None = None
) -> int:
    """Watch every account of `intake.imap_accounts` until stopped; returns an exit code."""
    settings = configuration.settings
    names = settings.intake.imap_accounts
    if not names:
        raise ConfigError("settings", "intake.imap_accounts", "no IMAP account to watch")
    broker: RabbitBroker | None = None
    feedback: FeedbackStore | None = None
    if embedded:  # the pipeline runs here: it keeps texts and corrections as the worker does
        feedback = FeedbackStore(settings.feedback_path)
        sink = pipeline_sink(build_pipeline(configuration, feedback=feedback))
    else:
        topology = topology_of(settings)
        broker = RabbitBroker(settings.broker, topology, queue_departments(configuration.routing))
        if not broker.start(wait=settings.broker.connect_timeout):
            broker.close()
            return exit_codes.CANNOT_CONNECT
        sink = rabbit_sink(broker, topology)
    state = IntakeState(settings.intake_state_path)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_signals(stop)
    intakes = [
        ImapIntake(
            name,
            settings.imap[name],
            ImapSession(settings.imap[name], account_password(name, settings.imap[name])),
            state,
            sink,
            limits=settings.limits,
            stop=stop,
        )
        for name in names
    ]
    log.info("intake.imap_ready", accounts=list(names), mode="embedded" if embedded else "rabbitmq")
    run_until(intakes, stop)
    state.close()
    if feedback is not None:
        feedback.close()
    if broker is not None:
        broker.close()
    return exit_codes.OK
