"""Real services for integration tests: RabbitMQ on 127.0.0.1:5672 (guest/guest).

If the broker does not answer, the set-up starts it (`rabbitmq-server -detached`) and waits.
When it still cannot be reached the tests fail under CI=true and are skipped elsewhere.
Each test gets a topology under a prefix of its own, deleted afterwards.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from classifiers.base import Prediction
from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from tests.integration.dovecot import PASSWORD as DOVECOT_PASSWORD
from tests.integration.dovecot import USER as DOVECOT_USER
from tests.integration.dovecot import Dovecot
from tests.twins import KeywordClassifier
from worker.broker import BrokerError, Topology
from worker.config import PROJECT_ROOT, BrokerSettings, ImapAccount, load_settings
from worker.consumer import TriageWorker, WorkerOptions
from worker.decision_log import DecisionLog
from worker.delivery import build_deliverers
from worker.delivery.base import Deliverer, Delivery
from worker.delivery.message import render_triaged
from worker.delivery.smtp import SmtpSender
from worker.idempotency import DeliveryStore
from worker.parsing import parse_email
from worker.pipeline import Pipeline
from worker.rabbitmq import RabbitAdmin, RabbitBroker
from worker.request import Channel, RawRequest
from worker.routing import RoutingConfig, RoutingDecision, queue_departments
from worker.runtime import Configuration, load_configuration

BROKER = BrokerSettings(url="amqp://guest:guest@127.0.0.1:5672/%2F", heartbeat=10)
RETRY_DELAYS = (0.3, 0.3, 0.3)


def _answers() -> bool:
    try:
        RabbitAdmin(BROKER, Topology("triage-probe")).depths([])
    except BrokerError:
        return False
    return True


@pytest.fixture(scope="session")
def rabbitmq() -> BrokerSettings:
    """The broker's settings, once it answers; starts it if needed."""
    if not _answers() and shutil.which("rabbitmq-server"):
        subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _answers():
            time.sleep(1)
    if not _answers():
        message = "RabbitMQ is not answering on 127.0.0.1:5672 and could not be started"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return BROKER


@pytest.fixture
def topology(rabbitmq: BrokerSettings) -> Iterator[Topology]:
    """A topology of this test's own, removed afterwards."""
    topology = Topology(f"t{uuid.uuid4().hex[:10]}", RETRY_DELAYS)
    admin = RabbitAdmin(rabbitmq, topology)
    admin.declare()
    yield topology
    admin.delete_topology()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def delivered_ids(maildir_root: Path) -> dict[str, Counter[str]]:
    """Per destination folder, how many files hold each X-Triage-Request-Id."""
    found: dict[str, Counter[str]] = {}
    if not maildir_root.is_dir():
        return found
    for folder in sorted(maildir_root.iterdir()):
        counts: Counter[str] = Counter()
        for sub in ("new", "cur"):
            directory = folder / sub
            if directory.is_dir():
                for path in directory.iterdir():
                    with path.open("rb") as handle:
                        head = email.message_from_bytes(handle.read(4096))
                    counts[str(head["X-Triage-Request-Id"])] += 1
        found[folder.name] = counts
    return found


def primary_deliveries(maildir_root: Path) -> Counter[str]:
    """Request ids over every destination but the escalation inbox."""
    total: Counter[str] = Counter()
    for name, counts in delivered_ids(maildir_root).items():
        if name != "astreinte":
            total.update(counts)
    return total


class WorkerProcess:
    """`triage worker` in a subprocess, with its own state directory and topology."""

    def __init__(self, state: Path, topology: Topology, model_dir: Path, **env: str) -> None:
        self.state = state
        self.log = state / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.env = {
            **os.environ,
            "TRIAGE_STATE_DIR": str(state),
            "TRIAGE_BROKER__PREFIX": topology.prefix,
            "TRIAGE_BROKER__HEARTBEAT": "10",
            "TRIAGE_WORKER__RETRY_DELAYS": "[" + ",".join(map(str, topology.retry_delays)) + "]",
            "TRIAGE_WORKER__METRICS_PORT": "0",
            "TRIAGE_MODEL_DIR": str(model_dir),
            "TRIAGE_LOG_FORMAT": "json",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        state = self.state
        state.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "-v", "worker"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Fleet:
    """Worker processes sharing one state directory and topology, and what they delivered."""

    def __init__(self, state: Path, topology: Topology, broker: BrokerSettings, model_dir: Path):
        self.state = state
        self.topology = topology
        self.admin = RabbitAdmin(broker, topology)
        self.model_dir = model_dir
        self.root = state / "maildir"
        self.processes: list[WorkerProcess] = []

    def start(self) -> WorkerProcess:
        process = WorkerProcess(self.state, self.topology, self.model_dir).start()
        self.processes.append(process)
        return process

    def delivered(self) -> int:
        """Distinct requests delivered to a primary destination so far."""
        return len(primary_deliveries(self.root))

    def wait_delivered(self, count: int, timeout: float) -> bool:
        return wait_until(lambda: self.delivered() >= count, timeout)

    def finish(self, process: WorkerProcess) -> None:
        """Stop a worker with SIGTERM; it must exit cleanly."""
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0

    def assert_exactly_once(self, request_ids: set[str]) -> None:
        """Every request reached a primary destination, none twice."""
        counts = primary_deliveries(self.root)
        assert set(counts) == request_ids
        assert max(counts.values()) == 1


@pytest.fixture
def fleet(
    tmp_path: Path, topology: Topology, rabbitmq: BrokerSettings, baseline_model_dir: Path
) -> Iterator[Fleet]:
    """Worker processes for one test; any left running are killed afterwards."""
    fleet = Fleet(tmp_path / "state", topology, rabbitmq, baseline_model_dir)
    yield fleet
    for process in fleet.processes:
        process.stop()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A running Dovecot with one user; fails under CI=true when Dovecot is not installed."""
    if not shutil.which("dovecot"):
        message = "dovecot is not installed (make test installs dovecot-imapd)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = Dovecot().start()
    yield server
    server.remove()


class InProcess:
    """A worker in this process, with the keyword twin and replaceable deliverers."""

    def __init__(
        self,
        tmp: Path,
        topology: Topology,
        broker_settings: BrokerSettings,
        taxonomy: Taxonomy,
        safety: SafetyRules,
        routing: RoutingConfig,
    ) -> None:
        self.tmp = tmp
        self.topology = topology
        self.broker_settings = broker_settings
        self.classifier: KeywordClassifier = KeywordClassifier(taxonomy)
        self.safety = safety
        self.routing = routing
        self.root = tmp / "maildir"
        self.decisions = DecisionLog(tmp / "decisions.jsonl")
        self.admin = RabbitAdmin(broker_settings, topology)
        self.smtp: SmtpSender | None = None

    def deliverer(self, name: str) -> Deliverer:
        return build_deliverers(self.routing, self.root)[name]

    @contextmanager
    def running(
        self, options: WorkerOptions | None = None, **replace: Deliverer
    ) -> Iterator[RabbitBroker]:
        broker = RabbitBroker(self.broker_settings, self.topology, queue_departments(self.routing))
        assert broker.start(wait=10), "could not connect to RabbitMQ"
        deliverers = build_deliverers(
            self.routing, self.root, broker, self.topology, smtp=self.smtp
        )
        pipeline = Pipeline(
            self.classifier,
            self.safety,
            self.routing,
            {**deliverers, **replace},
            self.decisions,
            store=DeliveryStore(self.tmp / "deliveries.sqlite"),
        )
        worker = TriageWorker(
            pipeline,
            broker,
            self.topology,
            options or WorkerOptions(batch_size=8, batch_wait=0.02, max_attempts=4),
        )
        worker.start()
        try:
            yield broker
        finally:
            worker.stop()
            broker.close()


@pytest.fixture
def in_process(
    tmp_path: Path,
    topology: Topology,
    rabbitmq: BrokerSettings,
    taxonomy: Taxonomy,
    safety_rules: SafetyRules,
    routing_config: RoutingConfig,
) -> InProcess:
    return InProcess(tmp_path, topology, rabbitmq, taxonomy, safety_rules, routing_config)


def imap_account(server: Dovecot, **changes: object) -> ImapAccount:
    """The Dovecot test user's account: loopback, no TLS, short timeouts."""
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "security": "none",
        "username": DOVECOT_USER,
        "password_env": "TEST_IMAP_PASSWORD",
        "idle_timeout": 1.0,
        "timeout": 5.0,
        **changes,
    }
    return ImapAccount.model_validate(values)


def triaged_delivery(payload: bytes, prediction: Prediction, decision: RoutingDecision) -> Delivery:
    """An email as the worker hands it to a deliverer once classified and routed."""
    request = parse_email(payload)
    raw = RawRequest(payload=payload, channel=Channel.EMAIL)
    return Delivery(
        request.id,
        render_triaged(raw, request, prediction, decision),
        raw=raw,
        request=request,
        prediction=prediction,
        decision=decision,
    )


def embedded_imap_configuration(
    monkeypatch: pytest.MonkeyPatch,
    server: Dovecot,
    state: Path,
    model_dir: Path,
    **settings: str,
) -> Configuration:
    """Settings for `triage intake imap --embedded` watching the test user's INBOX.

    `settings` are more TRIAGE_* variables, e.g. TRIAGE_OWN_ADDRESSES='["@mairie.example"]'.
    """
    account = imap_account(server, password_env="TEST_MAIRIE_IMAP_PASSWORD")
    monkeypatch.setenv("TEST_MAIRIE_IMAP_PASSWORD", DOVECOT_PASSWORD)
    monkeypatch.setenv("TRIAGE_IMAP", json.dumps({"mairie": account.model_dump()}))
    monkeypatch.setenv("TRIAGE_INTAKE__IMAP_ACCOUNTS", '["mairie"]')
    monkeypatch.setenv("TRIAGE_STATE_DIR", str(state))
    monkeypatch.setenv("TRIAGE_MODEL_DIR", str(model_dir))
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return load_configuration(load_settings())
