"""`triage intake http` against the real RabbitMQ: a valid form lands in intake once, no other."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from tests.conftest import FIXTURES
from tests.integration.conftest import wait_until
from worker import exit_codes
from worker.broker import HEADER_CHANNEL, HEADER_REQUEST_ID, Message, Topology
from worker.config import BrokerSettings, IntakeSettings, Settings, WorkerSettings
from worker.intake_http import run_http_intake
from worker.parsing import parse_eform
from worker.rabbitmq import RabbitAdmin, RabbitBroker
from worker.routing import RoutingConfig
from worker.runtime import Configuration

pytestmark = pytest.mark.integration

FORMS = FIXTURES / "forms"


class RunningIntake:
    """`run_http_intake` in RabbitMQ mode on a thread, on a free port, with this test's topology."""

    def __init__(self, configuration: Configuration, logs: list[MutableMapping[str, Any]]) -> None:
        self.stop = threading.Event()
        self.result: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(run_http_intake(configuration, False, self.stop))
        )
        self.thread.start()
        assert wait_until(lambda: self._ready(logs) is not None, timeout=15), "intake not ready"
        self.port = self._ready(logs) or 0

    @staticmethod
    def _ready(logs: list[MutableMapping[str, Any]]) -> int | None:
        for entry in list(logs):
            if entry["event"] == "intake.http_ready":
                return int(entry["port"])
        return None

    def post(self, body: bytes) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("POST", "/forms", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def finish(self) -> int | None:
        self.stop.set()
        self.thread.join(30)
        return self.result[0] if self.result else None


@pytest.fixture
def intake(
    tmp_path: Path,
    topology: Topology,
    rabbitmq: BrokerSettings,
    taxonomy: Taxonomy,
    safety_rules: SafetyRules,
    routing_config: RoutingConfig,
) -> Iterator[RunningIntake]:
    """The HTTP intake publishing to this test's topology; stopped (exit 0) afterwards."""
    settings = Settings(
        state_dir=tmp_path,
        broker=rabbitmq.model_copy(update={"prefix": topology.prefix}),
        worker=WorkerSettings(retry_delays=topology.retry_delays, metrics_port=None),
        intake=IntakeSettings(http_port=0),
    )
    configuration = Configuration(settings, taxonomy, safety_rules, routing_config)
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logs:
            running = RunningIntake(configuration, logs)
            try:
                yield running
            finally:
                assert running.finish() == exit_codes.OK
    finally:
        structlog.configure(wrapper_class=wrapper)


class TestHttpIntakeOnRabbitMQ:
    """Forms POSTed to the intake are published to the real intake queue, with confirms."""

    def test_valid_form_lands_in_intake_once(
        self, intake: RunningIntake, topology: Topology, rabbitmq: BrokerSettings
    ) -> None:
        """A valid form is in the intake queue exactly once, verbatim, with its id headers."""
        data = (FORMS / "valid_full.json").read_bytes()
        status, document = intake.post(data)
        assert status == 202
        assert document == {"request_id": parse_eform(data).id}
        admin = RabbitAdmin(rabbitmq, topology)
        assert admin.depths([topology.intake]) == {topology.intake: 1}

        received: list[Message] = []
        consumer = RabbitBroker(rabbitmq, topology)
        consumer.consume(topology.intake, 10, received.append)
        try:
            assert consumer.start(wait=10)
            assert wait_until(lambda: len(received) >= 1, timeout=10)
            time.sleep(0.3)  # a duplicate would arrive by now
        finally:
            consumer.close()  # unacked: the message goes back to the queue
        [message] = received
        assert message.body == data
        assert message.content_type == "application/json"
        assert message.headers[HEADER_REQUEST_ID] == document["request_id"]
        assert message.headers[HEADER_CHANNEL] == "form"

    def test_invalid_form_not_published(
        self, intake: RunningIntake, topology: Topology, rabbitmq: BrokerSettings
    ) -> None:
        """A form missing its message gets 422 and the intake queue stays empty."""
        status, document = intake.post((FORMS / "missing_message.json").read_bytes())
        assert (status, document["field"]) == (422, "message")
        assert RabbitAdmin(rabbitmq, topology).depths([topology.intake]) == {topology.intake: 0}
