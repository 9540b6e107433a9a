"""Corrections with a real Dovecot, and a model promoted under a running RabbitMQ worker."""

from __future__ import annotations

import email
import json
import shutil
import threading
from email.message import EmailMessage
from pathlib import Path

import pytest

from classifiers.registry import ModelRegistry
from classifiers.taxonomy import Taxonomy
from tests.conftest import make_prediction
from tests.integration.conftest import (
    Fleet,
    WorkerProcess,
    embedded_imap_configuration,
    imap_account,
    triaged_delivery,
    wait_until,
)
from tests.integration.dovecot import PASSWORD, Dovecot
from tests.integration.test_rabbitmq_worker import _corpus
from worker.delivery.imap_folder import ImapFolderDeliverer
from worker.feedback import FeedbackStore
from worker.feedback_imap import folder_departments, scan_account
from worker.imap import ImapSession
from worker.intake_imap import run_imap_intake
from worker.parsing import parse_email
from worker.routing import RoutingConfig, route

pytestmark = pytest.mark.integration

URGENCIES = ("critique", "haute", "normale", "basse")
FOLDERS = {"urbanisme": "INBOX/Urbanisme", "voirie": "INBOX/Voirie", "revue": "INBOX/Revue"}


def _imap_routing(routing_config: RoutingConfig) -> RoutingConfig:
    document = routing_config.model_dump()
    for name, folder in FOLDERS.items():
        document["destinations"][name] = {
            "type": "imap_folder",
            "account": "mairie",
            "folder": folder,
        }
    return RoutingConfig.model_validate(document)


def _mail(number: int, text: str) -> bytes:
    return (
        f"From: Paul Martin <paul.martin{number}@courriel.example>\r\n"
        f"To: contact@mairie.example\r\nSubject: Demande {number}\r\n"
        f"Message-ID: <feedback-{number}@courriel.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{text}\r\nJoignable au 06 12 34 56 78.\r\n"
    ).encode()


def _file(
    server: Dovecot,
    routing: RoutingConfig,
    taxonomy: Taxonomy,
    payload: bytes,
    department: str,
    confidence: float = 0.9,
) -> str:
    """Deliver one request to its IMAP folder as the worker does; return its id."""
    request = parse_email(payload)
    prediction = make_prediction(
        department, "normale", confidence=confidence, request_id=request.id, taxonomy=taxonomy
    )
    decision = route(prediction, routing)
    name = decision.primary
    session = ImapSession(imap_account(server), PASSWORD)
    deliverer = ImapFolderDeliverer(name, "mairie", session, FOLDERS[name])
    deliverer.deliver(triaged_delivery(payload, prediction, decision))
    session.close()
    return request.id


class TestImapMoves:
    """Agents' moves between service folders become corrections."""

    def test_moves_and_reviews_recorded_once(
        self,
        dovecot: Dovecot,
        tmp_path: Path,
        taxonomy: Taxonomy,
        routing_config: RoutingConfig,
    ) -> None:
        """A moved request and a filed review become corrections; a rescan adds nothing."""
        routing = _imap_routing(routing_config)
        moved = _file(
            dovecot, routing, taxonomy, _mail(1, "Un nid-de-poule rue Carnot."), "urbanisme"
        )
        reviewed = _file(
            dovecot, routing, taxonomy, _mail(2, "Le trottoir est défoncé."), "voirie", 0.2
        )
        kept = _file(dovecot, routing, taxonomy, _mail(3, "Permis de construire."), "urbanisme")
        client = dovecot.client()
        client.create_folder("INBOX/Voirie")
        client.select_folder("INBOX/Urbanisme")
        [uid] = client.search(["HEADER", "X-Triage-Request-Id", moved])
        client.remove_flags([uid], [b"$Triage_normale"])
        client.add_flags([uid], [b"$Triage_haute"])
        client.move([uid], "INBOX/Voirie")
        client.select_folder("INBOX/Revue")
        client.move(client.search(["ALL"]), "INBOX/Voirie")
        client.logout()

        store = FeedbackStore(tmp_path / "feedback.sqlite")
        folders = folder_departments(routing)["mairie"]
        session = ImapSession(imap_account(dovecot), PASSWORD)
        report = scan_account(session, folders, store, URGENCIES)
        found = {c.request_id: c for c in store.corrections()}
        assert set(found) == {moved, reviewed}
        assert kept not in found
        assert (found[moved].department, found[moved].urgency) == ("voirie", "haute")
        assert (found[moved].source, found[moved].predicted_department) == (
            "imap-move",
            "urbanisme",
        )
        assert found[moved].urgency_corrected
        assert (found[reviewed].department, found[reviewed].source) == ("voirie", "review")
        assert "nid-de-poule" in found[moved].text
        assert "06 12 34 56 78" not in found[moved].text  # pseudonymised before storing
        assert report.recorded == 2

        again = scan_account(session, folders, store, URGENCIES)
        session.close()
        assert (again.recorded, again.unchanged) == (0, 2)
        assert len(store.corrections()) == 2


class TestForwardBackThroughTheMailbox:
    """A forward-back arriving in the watched mailbox is re-routed and recorded."""

    def test_rerouted_and_recorded(
        self,
        dovecot: Dovecot,
        tmp_path: Path,
        baseline_model_dir: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The attached original reaches the named service; the correction is stored."""
        configuration = embedded_imap_configuration(
            monkeypatch,
            dovecot,
            tmp_path,
            baseline_model_dir,
            TRIAGE_OWN_ADDRESSES='["@mairie.example"]',
            TRIAGE_FEEDBACK__FORWARD_ADDRESS="corrections@mairie.example",
        )

        original = email.message_from_bytes(
            _mail(9, "Je voudrais un acte de naissance pour mon fils.")
        )
        original["X-Triage-Request-Id"] = "em-" + "9" * 24
        forward = EmailMessage()
        forward["From"] = "Agent Accueil <accueil@mairie.example>"
        forward["To"] = "corrections@mairie.example"
        forward["Subject"] = "TR: Demande 9"
        forward["Message-ID"] = "<forward-9@mairie.example>"
        forward.set_content("service: voirie\n\nCelle-ci est pour la voirie.\n")
        forward.add_attachment(original)
        dovecot.append("INBOX", forward.as_bytes())

        stop = threading.Event()
        runner = threading.Thread(
            target=run_imap_intake, args=(configuration, True, stop), daemon=True
        )
        runner.start()
        try:
            decisions = tmp_path / "decisions.jsonl"
            assert wait_until(lambda: decisions.exists() and decisions.read_text().strip(), 30)
        finally:
            stop.set()
            runner.join(15)
        [filed] = list((tmp_path / "maildir" / "voirie" / "new").iterdir())
        assert email.message_from_bytes(filed.read_bytes())["Subject"] == "Demande 9"
        store = FeedbackStore(tmp_path / "feedback.sqlite")
        [correction] = store.corrections()
        assert (correction.request_id, correction.department) == ("em-" + "9" * 24, "voirie")
        assert correction.source == "forward"
        assert correction.predicted_department == "etat_civil"  # what the model said
        assert "acte de naissance" in correction.text


class TestHotReload:
    """A promoted model reaches a running worker between batches, losing nothing."""

    def test_promotion_mid_stream(
        self, fleet: Fleet, tmp_path: Path, baseline_model_dir: Path
    ) -> None:
        """Requests before and after a promotion are each delivered once, by both models."""
        root = tmp_path / "models"
        shutil.copytree(baseline_model_dir, root / "default")
        shutil.copytree(baseline_model_dir, root / "v2")
        metadata_path = root / "v2" / "metadata.json"
        metadata = json.loads(metadata_path.read_text())
        metadata["version"] = "promoted-v2"
        metadata_path.write_text(json.dumps(metadata))
        items = _corpus(360)
        first, second = items[:300], items[300:]

        process = WorkerProcess(fleet.state, fleet.topology, baseline_model_dir)
        del process.env["TRIAGE_MODEL_DIR"]  # follow the registry instead of a pinned model
        process.env["TRIAGE_MODELS_ROOT"] = str(root)
        fleet.processes.append(process.start())
        assert fleet.admin.submit(first) == len(first)
        assert fleet.wait_delivered(40, timeout=60)
        ModelRegistry(root).promote("v2", reason="integration test")
        assert wait_until(lambda: '"model.reloaded"' in process.log.read_text("utf-8"), 20)
        assert fleet.delivered() < len(first), "the promotion came after the first wave"
        assert fleet.admin.submit(second) == len(second)  # while the first is still delivered
        assert fleet.wait_delivered(len(items), timeout=180)
        fleet.finish(process)

        fleet.assert_exactly_once({item[2] for item in items})
        lines = (fleet.state / "decisions.jsonl").read_text().splitlines()
        versions = {d["request_id"]: d.get("model_version") for d in map(json.loads, lines)}
        assert {versions[item[2]] for item in second} == {"promoted-v2"}
        assert "promoted-v2" not in {versions[item[2]] for item in first[:40]}
        assert "promoted-v2" in process.log.read_text(encoding="utf-8")
