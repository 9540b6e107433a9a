"""The RabbitMQ worker against the real broker: faults, retries, shutdown, scale-out, priority."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from classifiers.taxonomy import Taxonomy
from tests.conftest import CONFIG_DIR, DATA_DIR
from tests.integration.conftest import Fleet, InProcess, primary_deliveries, wait_until
from tests.twins import FlakyDeliverer, RecordingDeliverer, SlowClassifier
from worker import exit_codes
from worker.broker import Topology, UnroutableError
from worker.cli import main
from worker.config import BrokerSettings
from worker.errors import TransientError
from worker.parsing import parse_raw, read_raw
from worker.rabbitmq import RabbitAdmin, RabbitBroker
from worker.routing import RoutingConfig

pytestmark = pytest.mark.integration


def _corpus(count: int) -> list[tuple[bytes, str, str, str]]:
    """`count` distinct labelled requests of the corpus, ready for `RabbitAdmin.submit`."""
    paths = sorted((DATA_DIR / "train").rglob("*.eml")) + sorted(
        (DATA_DIR / "train").rglob("*.json")
    )
    paths += sorted((DATA_DIR / "validation").rglob("*.eml"))
    paths += sorted((DATA_DIR / "validation").rglob("*.json"))
    items = []
    for path in paths[:count]:
        raw = read_raw(path)
        request = parse_raw(raw)
        items.append((raw.payload, raw.content_type, request.id, raw.channel.value))
    assert len({item[2] for item in items}) == count
    return items


def _email(subject: str, body: str, message_id: str) -> tuple[bytes, str, str, str]:
    data = (
        f"From: Jeanne <jeanne@courriel.example>\nTo: contact@mairie.example\nSubject: {subject}\n"
        f"Message-ID: <{message_id}@courriel.example>\nContent-Type: text/plain; charset=utf-8\n\n"
        f"{body}\n"
    ).encode()
    request = parse_raw(read_raw_bytes(data))
    return data, "message/rfc822", request.id, "email"


def read_raw_bytes(data: bytes):  # type: ignore[no-untyped-def]
    from worker.request import Channel, RawRequest

    return RawRequest(payload=data, channel=Channel.EMAIL)


class TestCrashAndRestart:
    """No loss and no duplicate when the worker or its connection dies mid-run."""

    def test_sigkill_mid_run(self, fleet: Fleet) -> None:
        """500 requests, the worker SIGKILLed mid-run and restarted: each delivered exactly once."""
        items = _corpus(500)
        assert fleet.admin.submit(items) == 500
        first = fleet.start()
        assert fleet.wait_delivered(100, timeout=60)
        first.signal(signal.SIGKILL)
        first.wait(10)
        assert fleet.delivered() < 500, "the kill came too late to test anything"
        second = fleet.start()
        assert fleet.wait_delivered(500, timeout=120)
        fleet.finish(second)
        fleet.assert_exactly_once({item[2] for item in items})

    def test_connection_closed_by_server(self, fleet: Fleet) -> None:
        """The broker closes every connection mid-batch: the worker reconnects and finishes."""
        items = _corpus(300)
        fleet.admin.submit(items)
        process = fleet.start()
        assert fleet.wait_delivered(50, timeout=60)
        subprocess.run(
            ["rabbitmqctl", "close_all_connections", "integration test"],
            check=True,
            capture_output=True,
        )
        assert fleet.wait_delivered(300, timeout=120)
        assert "broker.disconnected" in process.log.read_text(encoding="utf-8")
        fleet.finish(process)
        fleet.assert_exactly_once({item[2] for item in items})

    def test_sigterm_requeues_or_finishes(self, fleet: Fleet) -> None:
        """SIGTERM mid-run: everything is delivered or back in a queue; a restart finishes."""
        items = _corpus(400)
        fleet.admin.submit(items)
        process = fleet.start()
        assert fleet.wait_delivered(50, timeout=60)
        fleet.finish(process)
        delivered = fleet.delivered()
        topology = fleet.topology
        depths = fleet.admin.depths([topology.intake, topology.deliver, topology.dead])
        assert depths[topology.dead] == 0
        assert delivered + (depths[topology.intake] or 0) + (depths[topology.deliver] or 0) >= 400
        assert delivered < 400, "SIGTERM came after the end: nothing was in flight"
        restarted = fleet.start()
        assert fleet.wait_delivered(400, timeout=120)
        fleet.finish(restarted)
        fleet.assert_exactly_once({item[2] for item in items})

    def test_two_worker_processes(self, fleet: Fleet) -> None:
        """Two worker processes on one queue process every request once."""
        items = _corpus(300)
        fleet.admin.submit(items)
        workers = [fleet.start(), fleet.start()]
        assert fleet.wait_delivered(300, timeout=120)
        for process in workers:
            fleet.finish(process)
        fleet.assert_exactly_once({item[2] for item in items})
        logs = [process.log.read_text(encoding="utf-8") for process in workers]
        assert all("request.delivered" in log for log in logs), "one worker did all the work"


class TestRetriesAndDeadLetters:
    """Transient failures are retried through delay queues; the rest is dead-lettered."""

    def test_flaky_target_delivered_after_two_retries(self, in_process: InProcess) -> None:
        """A target that fails twice then recovers gets the request after two retries."""
        flaky = FlakyDeliverer(in_process.deliverer("voirie"), failures=2, error=TransientError)
        with in_process.running(voirie=flaky):
            in_process.admin.submit([_email("Lampadaire", "Le lampadaire est éteint.", "r1")])
            assert wait_until(lambda: len(primary_deliveries(in_process.root)) == 1, timeout=20)
        assert flaky.calls == 3
        assert in_process.admin.dead_letters() == []

    def test_failures_dead_lettered_and_consumption_goes_on(self, in_process: InProcess) -> None:
        """An always-failing target and a malformed payload end in the DLQ; others still flow."""
        broken = FlakyDeliverer(in_process.deliverer("voirie"), failures=99, error=TransientError)
        with in_process.running(voirie=broken):
            in_process.admin.submit(
                [
                    _email("Lampadaire", "Le lampadaire est éteint.", "d1"),
                    (b"\x00\x01 not a mail", "message/rfc822", "bad-1", "email"),
                    (b'{"form_id": "x"}', "application/json", "bad-2", "form"),
                    _email("Mairie", "Quels sont vos horaires ?", "d2"),
                ]
            )
            assert wait_until(lambda: len(in_process.admin.dead_letters()) == 3, timeout=30)
            assert wait_until(lambda: "accueil" in primary_deliveries_names(in_process), 10)
        letters = {letter.request_id: letter for letter in in_process.admin.dead_letters()}
        assert broken.calls == 4
        delivery = letters[_email("Lampadaire", "Le lampadaire est éteint.", "d1")[2]]
        assert (delivery.stage, delivery.error_class, delivery.attempts) == (
            "deliver",
            "TransientError",
            4,
        )
        assert "delivery failed 4 times" in delivery.reason
        parse_failures = [letter for letter in letters.values() if letter.stage == "parse"]
        assert len(parse_failures) == 2
        reasons = sorted(letter.reason for letter in parse_failures)
        assert reasons == [
            "not an email: the input does not start with a header field",
            "submitted_at: Field required",
        ]

    def test_replay_after_fix(self, in_process: InProcess) -> None:
        """A dead letter replayed after the target is fixed is delivered."""
        broken = FlakyDeliverer(in_process.deliverer("voirie"), failures=99, error=TransientError)
        request = _email("Lampadaire", "Le lampadaire est éteint.", "p1")
        with in_process.running(voirie=broken):
            in_process.admin.submit([request])
            assert wait_until(lambda: len(in_process.admin.dead_letters()) == 1, timeout=20)
        with in_process.running():
            assert in_process.admin.replay() == 1
            assert wait_until(lambda: request[2] in primary_deliveries(in_process.root), 20)
        assert in_process.admin.dead_letters() == []


def primary_deliveries_names(in_process: InProcess) -> set[str]:
    root = in_process.root
    return {folder.name for folder in root.iterdir() if any((folder / "new").iterdir())}


class TestConnectionAndPriority:
    """Heartbeats survive a long model call; critique requests overtake a backlog."""

    def test_long_classification_keeps_connection(
        self, in_process: InProcess, taxonomy: Taxonomy
    ) -> None:
        """A model call of 2.5 heartbeat intervals does not drop the connection."""
        in_process.broker_settings = in_process.broker_settings.model_copy(update={"heartbeat": 2})
        in_process.classifier = SlowClassifier(taxonomy, seconds=5.0)
        with in_process.running() as broker:
            in_process.admin.submit([_email("Lampadaire", "Éteint.", "h1")])
            assert wait_until(lambda: len(primary_deliveries(in_process.root)) == 1, timeout=30)
            assert broker.reconnects == 0
            assert broker.connected.is_set()

    def test_critique_overtakes_backlog(self, in_process: InProcess) -> None:
        """A critique request submitted behind 200 normale ones is delivered before most."""
        slow_voirie = RecordingDeliverer(in_process.deliverer("voirie"), delay=0.02)
        backlog = [_email("Lampadaire", f"Lampadaire {i} éteint.", f"n{i}") for i in range(200)]
        critique = _email("Trottoir", "Danger : trottoir effondré devant l'école.", "c1")
        in_process.admin.submit([*backlog, critique])
        with in_process.running(voirie=slow_voirie):
            assert wait_until(lambda: len(slow_voirie.order) == 201, timeout=60)
        position = slow_voirie.order.index(critique[2])
        print(f"critique delivered at position {position} of 201")
        assert position < 100, f"critique delivered at position {position} of 201"


class TestServiceQueuesAndOperations:
    """Per-service queues, mandatory publishing and the operator commands."""

    def test_service_queue_destination(self, in_process: InProcess) -> None:
        """A `type: queue` destination receives the triaged request on its service queue."""
        document = yaml.safe_load((CONFIG_DIR / "routing.yaml").read_text(encoding="utf-8"))
        document["destinations"]["voirie_queue"] = {"type": "queue", "department": "voirie"}
        document["departments"]["voirie"]["destinations"] = ["voirie_queue"]
        in_process.routing = RoutingConfig.model_validate(document)
        request = _email("Lampadaire", "Le lampadaire est éteint.", "q1")
        service = in_process.topology.service("voirie")
        with in_process.running():
            in_process.admin.submit([request])
            assert wait_until(lambda: in_process.admin.depths([service])[service] == 1, 20)
        assert primary_deliveries(in_process.root) == Counter()
        in_process.admin.delete_topology(["voirie"])

    def test_unroutable_publish_is_an_error(
        self, rabbitmq: BrokerSettings, topology: Topology
    ) -> None:
        """A mandatory publish that no queue is bound for raises UnroutableError."""
        broker = RabbitBroker(rabbitmq, topology)
        assert broker.start(wait=10)
        try:
            with pytest.raises(UnroutableError):
                broker.publish(topology.intake, "nowhere", b"x")
            broker.publish(topology.intake, "intake", b"still usable")
        finally:
            broker.close()
        assert RabbitAdmin(rabbitmq, topology).depths([topology.intake])[topology.intake] == 1

    def test_submit_status_and_dlq_commands(
        self,
        topology: Topology,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`triage submit` refuses bad files, `status` shows depths, `dlq` lists and purges."""
        monkeypatch.setenv("TRIAGE_BROKER__PREFIX", topology.prefix)
        monkeypatch.setenv("TRIAGE_WORKER__RETRY_DELAYS", "[0.3,0.3,0.3]")
        monkeypatch.setenv("TRIAGE_STATE_DIR", str(tmp_path))
        folder = tmp_path / "in"
        folder.mkdir()
        for name in ("04_remerciements_accueil.eml", "06_formulaire_bac_tri_vole.json"):
            (folder / name).write_bytes((DATA_DIR / "samples" / name).read_bytes())
        (folder / "broken.json").write_text('{"form_id": "x"}', encoding="utf-8")
        assert main(["submit", str(folder)]) == exit_codes.SOME_INPUTS_FAILED
        captured = capsys.readouterr()
        assert "2 confirmed, 1 refused" in captured.out
        assert "broken.json" in captured.err and "submitted_at" in captured.err
        assert main(["status"]) == exit_codes.OK
        lines = capsys.readouterr().out.splitlines()
        assert any(line.split() == [topology.intake, "2"] for line in lines)
        admin = RabbitAdmin(BrokerSettings(), topology)
        admin_publish_dead(admin, (b"garbage", "message/rfc822", "g1", "email"))
        assert main(["dlq", "list"]) == exit_codes.OK
        listing = capsys.readouterr().out
        assert "1 dead-lettered requests" in listing and "g1" in listing
        assert main(["dlq", "purge"]) == exit_codes.USAGE  # no terminal, no --yes: refused
        assert main(["dlq", "purge", "--yes"]) == exit_codes.OK
        assert "1 purged" in capsys.readouterr().out
        assert admin.dead_letters() == []


def admin_publish_dead(admin: RabbitAdmin, item: tuple[bytes, str, str, str]) -> None:
    """Put one message straight into the dead-letter queue, as the worker would."""
    broker = RabbitBroker(admin.settings, admin.topology)
    assert broker.start(wait=10)
    try:
        body, content_type, request_id, channel = item
        broker.publish(
            "",
            admin.topology.dead,
            body,
            headers={
                "x-triage-request-id": request_id,
                "x-triage-channel": channel,
                "x-triage-reason": "not an email",
                "x-triage-error-class": "ParseError",
                "x-triage-stage": "parse",
            },
            content_type=content_type,
        )
    finally:
        broker.close()
