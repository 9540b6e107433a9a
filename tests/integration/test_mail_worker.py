"""Mail through the whole worker: SMTP retries and refusals via RabbitMQ, embedded IMAP intake."""

from __future__ import annotations

import email
import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONFIG_DIR
from tests.integration.conftest import InProcess, embedded_imap_configuration, wait_until
from tests.integration.dovecot import Dovecot
from tests.smtp_server import RefusingHandler, smtp_server
from worker.delivery.smtp import SmtpSender
from worker.intake_imap import run_imap_intake
from worker.parsing import parse_raw
from worker.request import Channel, RawRequest
from worker.routing import RoutingConfig

pytestmark = pytest.mark.integration


def _voirie_by_smtp() -> RoutingConfig:
    document = yaml.safe_load((CONFIG_DIR / "routing.yaml").read_text(encoding="utf-8"))
    document["destinations"]["voirie_mail"] = {"type": "smtp", "to": "voirie@mairie.example"}
    document["departments"]["voirie"]["destinations"] = ["voirie_mail"]
    return RoutingConfig.model_validate(document)


def _lamp(message_id: str) -> tuple[bytes, str, str, str]:
    data = (
        "From: Jeanne <jeanne@courriel.example>\r\nTo: contact@mairie.example\r\n"
        f"Subject: Lampadaire\r\nMessage-ID: <{message_id}@courriel.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nLe lampadaire est éteint.\r\n"
    ).encode()
    raw = RawRequest(payload=data, channel=Channel.EMAIL)
    return data, "message/rfc822", parse_raw(raw).id, "email"


class TestSmtpThroughTheWorker:
    """The worker's retry path and dead-letter queue apply to SMTP answers."""

    def test_451_then_250_delivered_after_a_retry(self, in_process: InProcess) -> None:
        """A relay answering 451 once, then 250, receives the forward after one retry."""
        handler = RefusingHandler("RCPT", "451 4.3.0 Try again later", times=1)
        in_process.routing = _voirie_by_smtp()
        request = _lamp("smtp-451")
        with smtp_server(handler) as settings:
            in_process.smtp = SmtpSender(settings)
            with in_process.running():
                in_process.admin.submit([request])
                assert wait_until(lambda: len(handler.received) == 1, timeout=20)
        assert handler.refusals == 1
        forward = email.message_from_bytes(handler.received[0].content)
        assert forward["X-Triage-Request-Id"] == request[2]
        assert forward["X-Triage-Department"] == "voirie"
        assert handler.received[0].rcpt_tos == ("voirie@mairie.example",)
        assert in_process.admin.dead_letters() == []

    def test_550_dead_lettered(self, in_process: InProcess) -> None:
        """A relay answering 550 sends the request to the dead-letter queue with the reason."""
        handler = RefusingHandler("RCPT", "550 5.1.1 No such user")
        in_process.routing = _voirie_by_smtp()
        request = _lamp("smtp-550")
        with smtp_server(handler) as settings:
            in_process.smtp = SmtpSender(settings)
            with in_process.running():
                in_process.admin.submit([request])
                assert wait_until(lambda: len(in_process.admin.dead_letters()) == 1, 20)
        [letter] = in_process.admin.dead_letters()
        assert letter.request_id == request[2]
        assert (letter.stage, letter.attempts) == ("deliver", 1)
        assert "550" in letter.reason
        assert handler.received == []


class TestEmbeddedImapIntake:
    """Without RabbitMQ, `triage intake imap --embedded` feeds the pipeline directly."""

    def test_mailbox_to_maildir(
        self,
        dovecot: Dovecot,
        tmp_path: Path,
        baseline_model_dir: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Mail in the watched mailbox is classified and delivered to the service maildirs."""
        configuration = embedded_imap_configuration(
            monkeypatch, dovecot, tmp_path, baseline_model_dir
        )
        for number, text in enumerate(
            ["Le lampadaire de la rue des Lilas est éteint.", "Je voudrais un acte de naissance."]
        ):
            dovecot.append(
                "INBOX",
                (
                    f"From: Habitant <h{number}@courriel.example>\r\nSubject: Demande {number}\r\n"
                    f"Message-ID: <embedded-{number}@courriel.example>\r\n\r\n{text}\r\n"
                ).encode(),
            )
        stop = threading.Event()
        runner = threading.Thread(
            target=run_imap_intake, args=(configuration, True, stop), daemon=True
        )
        runner.start()
        try:
            decisions = tmp_path / "decisions.jsonl"
            assert wait_until(
                lambda: decisions.exists() and len(decisions.read_text().splitlines()) == 2, 30
            )
        finally:
            stop.set()
            runner.join(15)
        delivered = sorted(p.parent.parent.name for p in (tmp_path / "maildir").glob("*/new/*"))
        assert delivered == ["etat_civil", "voirie"]
