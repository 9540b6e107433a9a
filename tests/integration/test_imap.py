"""IMAP intake and IMAP folder delivery against a real Dovecot."""

from __future__ import annotations

import email
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from tests.conftest import make_prediction
from tests.integration.conftest import imap_account, triaged_delivery, wait_until
from tests.integration.dovecot import PASSWORD, Dovecot
from tests.twins import KeywordClassifier
from worker.broker import Topology
from worker.config import BrokerSettings
from worker.decision_log import DecisionLog
from worker.delivery import build_deliverers
from worker.delivery.imap_folder import ImapFolderDeliverer
from worker.idempotency import DeliveryStore
from worker.imap import PROCESSED_KEYWORD, SKIPPED_KEYWORD, ImapSession
from worker.intake_imap import ImapIntake, IntakeState
from worker.intake_sinks import rabbit_sink
from worker.parsing import parse_email
from worker.pipeline import Pipeline, Status
from worker.rabbitmq import RabbitAdmin, RabbitBroker
from worker.request import RawRequest, Request
from worker.routing import RoutingConfig, route

pytestmark = pytest.mark.integration


class Crash(BaseException):
    """Stands for the process dying at a given point (not an error the code may catch)."""


def _mail(number: int, extra_headers: str = "", subject: str = "Lampadaire éteint") -> bytes:
    return (
        f"From: Habitant {number} <habitant{number}@courriel.example>\r\n"
        f"To: contact@mairie.example\r\nSubject: {subject} n°{number}\r\n"
        f"Message-ID: <intake-{number}@courriel.example>\r\n{extra_headers}"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Bonjour, le lampadaire du {number} rue des Lilas est éteint.\r\n"
    ).encode()


class RecordingSink:
    """Records what the intake hands over, in order."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.received: list[tuple[RawRequest, Request | None]] = []
        self.crash_after = crash_after

    def __call__(self, raw: RawRequest, request: Request | None) -> None:
        self.received.append((raw, request))
        if self.crash_after is not None and len(self.received) == self.crash_after:
            raise Crash

    def ids(self) -> Counter[str]:
        return Counter(request.id for _, request in self.received if request is not None)


def _intake(server: Dovecot, tmp: Path, sink: RecordingSink, **changes: object) -> ImapIntake:
    account = imap_account(server, **changes)
    return ImapIntake(
        "mairie",
        account,
        ImapSession(account, PASSWORD),
        IntakeState(tmp / "intake.sqlite"),
        sink,
        max_backoff=1.0,
    )


@contextmanager
def running(intake: ImapIntake) -> Iterator[ImapIntake]:
    thread = threading.Thread(target=intake.run, daemon=True)
    thread.start()
    try:
        yield intake
    finally:
        intake.stop.set()
        thread.join(15)


def _keywords(server: Dovecot, folder: str = "INBOX") -> list[tuple[bytes, ...]]:
    return [flags for _, flags in server.messages(folder).values()]


class TestImapIntake:
    """Each message is handed over once and marked, whatever happens to the intake."""

    def test_catch_up_then_idle(self, dovecot: Dovecot, tmp_path: Path) -> None:
        """25 messages waiting and 25 arriving under IDLE: each handed over once, each marked."""
        for number in range(25):
            dovecot.append("INBOX", _mail(number))
        sink = RecordingSink()
        intake = _intake(dovecot, tmp_path, sink)
        with running(intake):
            assert wait_until(lambda: len(sink.received) == 25, timeout=30)
            for number in range(25, 50):
                dovecot.append("INBOX", _mail(number))
            assert wait_until(lambda: len(sink.received) == 50, timeout=30)
        assert len(sink.ids()) == 50 and max(sink.ids().values()) == 1
        assert intake.counts["idle"] >= 1
        flags = _keywords(dovecot)
        assert len(flags) == 50
        assert all(PROCESSED_KEYWORD.encode() in f for f in flags)

    def test_polling_without_idle(self, dovecot: Dovecot, tmp_path: Path) -> None:
        """On a server without IDLE, the folder is polled and new mail still arrives."""
        sink = RecordingSink()
        intake = _intake(dovecot, tmp_path, sink, poll_interval=0.3)
        intake.session.supports_idle = lambda: False  # type: ignore[method-assign]
        with running(intake):
            dovecot.append("INBOX", _mail(1))
            assert wait_until(lambda: len(sink.received) == 1, timeout=20)
            dovecot.append("INBOX", _mail(2))
            assert wait_until(lambda: len(sink.received) == 2, timeout=20)
        assert intake.counts["idle"] == 0

    def test_crash_after_recording_before_marking(self, dovecot: Dovecot, tmp_path: Path) -> None:
        """Killed between publish and mark: on restart the message is marked, not republished."""
        dovecot.append("INBOX", _mail(1))
        sink = RecordingSink()
        first = _intake(dovecot, tmp_path, sink)
        first.session.connect()
        first.uidvalidity = first.session.select("INBOX")

        def die(*args: object) -> None:
            raise Crash

        first.session.add_keywords = die  # type: ignore[method-assign]
        with pytest.raises(Crash):
            first.catch_up()
        assert len(sink.received) == 1
        second = _intake(dovecot, tmp_path, sink)
        second.session.connect()
        second.uidvalidity = second.session.select("INBOX")
        second.catch_up()
        assert len(sink.received) == 1
        assert PROCESSED_KEYWORD.encode() in _keywords(dovecot)[0]

    def test_crash_before_recording_delivers_once(
        self,
        dovecot: Dovecot,
        tmp_path: Path,
        taxonomy: Taxonomy,
        safety_rules: SafetyRules,
        routing_config: RoutingConfig,
    ) -> None:
        """Killed right after publishing: handed over again, but delivered downstream once."""
        dovecot.append("INBOX", _mail(7))
        sink = RecordingSink(crash_after=1)
        first = _intake(dovecot, tmp_path, sink)
        first.session.connect()
        first.uidvalidity = first.session.select("INBOX")
        with pytest.raises(Crash):
            first.catch_up()
        sink.crash_after = None
        second = _intake(dovecot, tmp_path, sink)
        second.session.connect()
        second.uidvalidity = second.session.select("INBOX")
        second.catch_up()
        assert sink.ids() == Counter({sink.received[0][1].id: 2})  # type: ignore[union-attr]
        pipeline = Pipeline(
            KeywordClassifier(taxonomy),
            safety_rules,
            routing_config,
            build_deliverers(routing_config, tmp_path / "maildir"),
            DecisionLog(tmp_path / "decisions.jsonl"),
            store=DeliveryStore(tmp_path / "deliveries.sqlite"),
        )
        outcomes = pipeline.process([raw for raw, _ in sink.received])
        assert [outcome.status for outcome in outcomes] == [Status.DELIVERED, Status.DELIVERED]
        assert len(list((tmp_path / "maildir" / "voirie" / "new").iterdir())) == 1

    def test_server_restart(self, dovecot: Dovecot, tmp_path: Path) -> None:
        """The IMAP server restarts under the intake: it reconnects and goes on."""
        sink = RecordingSink()
        intake = _intake(dovecot, tmp_path, sink)
        with running(intake):
            dovecot.append("INBOX", _mail(1))
            assert wait_until(lambda: len(sink.received) == 1, timeout=20)
            dovecot.restart()
            dovecot.append("INBOX", _mail(2))
            assert wait_until(lambda: len(sink.received) == 2, timeout=30)
        assert intake.counts["reconnects"] >= 1

    def test_automated_mail_skipped(self, dovecot: Dovecot, tmp_path: Path) -> None:
        """Auto-replies, list mail, bulk mail and our own forwards are not triaged."""
        dovecot.append("INBOX", _mail(1, "Auto-Submitted: auto-replied\r\n"))
        dovecot.append("INBOX", _mail(2, "List-Id: <annonces.mairie.example>\r\n"))
        dovecot.append("INBOX", _mail(3, "Precedence: bulk\r\n"))
        dovecot.append("INBOX", _mail(4, "X-Triage-Request-Id: em-123\r\n"))
        dovecot.append("INBOX", _mail(5))
        sink = RecordingSink()
        intake = _intake(dovecot, tmp_path, sink)
        intake.session.connect()
        intake.uidvalidity = intake.session.select("INBOX")
        intake.catch_up()
        assert [request.subject for _, request in sink.received if request] == [
            "Lampadaire éteint n°5"
        ]
        flags = _keywords(dovecot)
        assert sum(SKIPPED_KEYWORD.encode() in f for f in flags) == 4

    def test_move_to_processed_folder(self, dovecot: Dovecot, tmp_path: Path) -> None:
        """With `processed: move`, handled messages leave INBOX for the processed folder."""
        for number in range(3):
            dovecot.append("INBOX", _mail(number))
        sink = RecordingSink()
        intake = _intake(dovecot, tmp_path, sink, processed="move")
        intake.session.connect()
        intake.uidvalidity = intake.session.select("INBOX")
        intake.catch_up()
        assert len(sink.received) == 3
        assert dovecot.messages("INBOX") == {}
        assert len(dovecot.messages("Traités")) == 3

    def test_uidvalidity_change(self, dovecot: Dovecot, tmp_path: Path) -> None:
        """A recreated folder (new UIDVALIDITY) does not republish what was already handed over."""
        for number in range(3):
            dovecot.append("Demandes", _mail(number))
        sink = RecordingSink()
        intake = _intake(dovecot, tmp_path, sink, folder="Demandes")
        intake.session.connect()
        first_validity = intake.uidvalidity = intake.session.select("Demandes")
        intake.catch_up()
        intake.session.close()
        client = dovecot.client()
        client.delete_folder("Demandes")
        client.logout()
        for number in range(3):
            dovecot.append("Demandes", _mail(number))
        intake.session.connect()
        intake.uidvalidity = intake.session.select("Demandes")
        assert intake.uidvalidity != first_validity
        intake.catch_up()
        assert len(sink.received) == 3
        assert all(PROCESSED_KEYWORD.encode() in f for f in _keywords(dovecot, "Demandes"))

    def test_published_to_rabbitmq(
        self, dovecot: Dovecot, tmp_path: Path, topology: Topology, rabbitmq: BrokerSettings
    ) -> None:
        """With the RabbitMQ sink, each message lands once in the intake queue, confirmed."""
        for number in range(5):
            dovecot.append("INBOX", _mail(number))
        broker = RabbitBroker(rabbitmq, topology)
        assert broker.start(wait=10)
        try:
            account = imap_account(dovecot)
            intake = ImapIntake(
                "mairie",
                account,
                ImapSession(account, PASSWORD),
                IntakeState(tmp_path / "intake.sqlite"),
                rabbit_sink(broker, topology),
            )
            intake.session.connect()
            intake.uidvalidity = intake.session.select("INBOX")
            assert intake.catch_up() == 5
            assert intake.catch_up() == 0
        finally:
            broker.close()
        depth = RabbitAdmin(rabbitmq, topology).depths([topology.intake])[topology.intake]
        assert depth == 5


class TestImapFolderDelivery:
    """Requests are filed into service folders, once, with an urgency keyword."""

    def test_append_once_with_keyword(
        self, dovecot: Dovecot, taxonomy: Taxonomy, routing_config: RoutingConfig
    ) -> None:
        """The folder is created, the message carries the triage headers and keyword, once."""
        payload = _mail(42)
        request = parse_email(payload)
        prediction = make_prediction(
            "urbanisme", "critique", request_id=request.id, taxonomy=taxonomy
        )
        delivery = triaged_delivery(payload, prediction, route(prediction, routing_config))
        account = imap_account(dovecot)
        deliverer = ImapFolderDeliverer(
            "urbanisme", "mairie", ImapSession(account, PASSWORD), "INBOX/Urbanisme"
        )
        first = deliverer.deliver(delivery)
        second = deliverer.deliver(delivery)
        assert (first.duplicate, second.duplicate) == (False, True)
        [(body, flags)] = dovecot.messages("INBOX/Urbanisme").values()
        filed = email.message_from_bytes(body)
        assert filed["X-Triage-Request-Id"] == request.id
        assert filed["X-Triage-Department"] == "urbanisme"
        assert filed["X-Triage-Urgency"] == "critique"
        assert b"$Triage_critique" in flags
        assert body.endswith(payload.split(b"\r\n\r\n", 1)[1])
