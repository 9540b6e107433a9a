"""Tests of worker/delivery/queue.py and of queue destinations in building and routing config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from classifiers.taxonomy import Taxonomy
from tests.conftest import CONFIG_DIR, make_prediction
from worker.broker import HEADER_REQUEST_ID, BrokerError, StubBroker, Topology, UnroutableError
from worker.delivery import MaildirDeliverer, build_deliverers
from worker.delivery.base import Delivery
from worker.delivery.queue import QueueDeliverer, UnavailableDeliverer
from worker.errors import ConfigError, PermanentError, TransientError
from worker.routing import RoutingConfig, load_routing, queue_departments, route

MESSAGE = b"From: a@x.example\r\nSubject: test\r\nX-Triage-Department: voirie\r\n\r\nCorps\r\n"


def _document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (CONFIG_DIR / "routing.yaml").read_text(encoding="utf-8")
    )
    return document


def _with_queues(**departments: str) -> dict[str, Any]:
    """The shipped routing document with the named destinations turned into service queues."""
    document = _document()
    for name, department in departments.items():
        document["destinations"][name] = {"type": "queue", "department": department}
    return document


def _delivery(taxonomy: Taxonomy, routing: RoutingConfig) -> Delivery:
    prediction = make_prediction("voirie", "critique", confidence=0.87654, taxonomy=taxonomy)
    return Delivery("em-42", MESSAGE, prediction=prediction, decision=route(prediction, routing))


@pytest.fixture
def topology() -> Topology:
    return Topology(prefix="test")


class TestQueueDeliverer:
    """`QueueDeliverer` publishes the triaged message to its service's exchange."""

    def test_publishes_to_service_exchange(
        self, topology: Topology, taxonomy: Taxonomy, routing_config: RoutingConfig
    ) -> None:
        """The message goes to `<prefix>.service.<department>` keyed by the department."""
        broker = StubBroker(topology)
        broker.bind_service("voirie")
        receipt = QueueDeliverer("voirie_glpi", "voirie", broker, topology).deliver(
            _delivery(taxonomy, routing_config)
        )
        published = [(where, key, mid) for kind, where, key, _, mid in broker.journal]
        assert published == [("test.service.voirie", "voirie", "em-42")]
        message = broker.take("test.service.voirie")
        assert message is not None
        assert message.body == MESSAGE
        assert message.content_type == "message/rfc822"
        assert receipt.destination == "voirie_glpi"
        assert receipt.location == "test.service.voirie/voirie"
        assert receipt.duplicate is False

    def test_headers_carry_the_triage(
        self, topology: Topology, taxonomy: Taxonomy, routing_config: RoutingConfig
    ) -> None:
        """The headers hold the request id, department, urgency, confidence and review flag."""
        broker = StubBroker(topology)
        broker.bind_service("voirie")
        QueueDeliverer("voirie_glpi", "voirie", broker, topology).deliver(
            _delivery(taxonomy, routing_config)
        )
        message = broker.take(topology.service("voirie"))
        assert message is not None
        assert message.headers[HEADER_REQUEST_ID] == "em-42"
        assert message.headers["x-triage-department"] == "voirie"
        assert message.headers["x-triage-urgency"] == "critique"
        # A string: AMQP field tables, as pika encodes them, have no float type.
        assert message.headers["x-triage-confidence"] == "0.877"
        assert message.headers["x-triage-review"] is False

    def test_delivery_without_prediction_carries_the_id_only(self, topology: Topology) -> None:
        """A delivery with no prediction or decision is published with the request id alone."""
        broker = StubBroker(topology)
        broker.bind_service("voirie")
        QueueDeliverer("voirie_glpi", "voirie", broker, topology).deliver(Delivery("em-7", MESSAGE))
        message = broker.take(topology.service("voirie"))
        assert message is not None
        assert dict(message.headers) == {HEADER_REQUEST_ID: "em-7"}

    def test_unbound_exchange_is_unroutable(
        self, topology: Topology, taxonomy: Taxonomy, routing_config: RoutingConfig
    ) -> None:
        """With no queue bound to the service exchange the publish fails permanently."""
        broker = StubBroker(topology)
        deliverer = QueueDeliverer("voirie_glpi", "voirie", broker, topology)
        with pytest.raises(UnroutableError) as caught:
            deliverer.deliver(_delivery(taxonomy, routing_config))
        assert isinstance(caught.value, PermanentError)
        assert broker.take(topology.service("voirie")) is None

    def test_unconfirmed_publish_is_transient(
        self, topology: Topology, taxonomy: Taxonomy, routing_config: RoutingConfig
    ) -> None:
        """A publish the broker does not confirm raises a transient error, worth retrying."""
        broker = StubBroker(topology)
        broker.bind_service("voirie")
        broker.fail_publishes = 1
        deliverer = QueueDeliverer("voirie_glpi", "voirie", broker, topology)
        with pytest.raises(BrokerError) as caught:
            deliverer.deliver(_delivery(taxonomy, routing_config))
        assert isinstance(caught.value, TransientError)
        assert broker.take(topology.service("voirie")) is None


class TestUnavailableDeliverer:
    """`UnavailableDeliverer` refuses every delivery, permanently, with the reason."""

    def test_deliver_raises_permanent_error(self) -> None:
        """Delivering raises a PermanentError naming the destination and why."""
        deliverer = UnavailableDeliverer("voirie_glpi", "no broker here")
        with pytest.raises(PermanentError, match="voirie_glpi: no broker here"):
            deliverer.deliver(Delivery("em-1", MESSAGE))


class TestBuildDeliverersWithQueues:
    """`build_deliverers` turns queue destinations into queue deliverers when a broker is given."""

    def test_queue_destination_with_broker(self, tmp_path: Path, topology: Topology) -> None:
        """With a broker and a topology, a queue destination becomes a QueueDeliverer."""
        config = RoutingConfig.model_validate(_with_queues(voirie="voirie"))
        broker = StubBroker(topology)
        deliverers = build_deliverers(config, tmp_path, broker, topology)
        voirie = deliverers["voirie"]
        assert isinstance(voirie, QueueDeliverer)
        assert (voirie.name, voirie.department, voirie.exchange) == (
            "voirie",
            "voirie",
            "test.service.voirie",
        )
        assert isinstance(deliverers["accueil"], MaildirDeliverer)

    def test_queue_destination_without_broker(self, tmp_path: Path) -> None:
        """Without a broker, a queue destination becomes a deliverer that refuses permanently."""
        config = RoutingConfig.model_validate(_with_queues(voirie="voirie"))
        voirie = build_deliverers(config, tmp_path)["voirie"]
        assert isinstance(voirie, UnavailableDeliverer)
        with pytest.raises(PermanentError, match="triage worker"):
            voirie.deliver(Delivery("em-1", MESSAGE))


class TestQueueDepartments:
    """`queue_departments` lists the departments whose service exchange must be declared."""

    def test_lists_queue_departments_once_sorted(self) -> None:
        """Departments of queue destinations are listed once, sorted; maildirs are left out."""
        document = _with_queues(voirie="voirie", proprete_dechets="proprete_dechets")
        document["destinations"]["astreinte"] = {"type": "queue", "department": "voirie"}
        config = RoutingConfig.model_validate(document)
        assert queue_departments(config) == ["proprete_dechets", "voirie"]

    def test_no_queue_destination(self, routing_config: RoutingConfig) -> None:
        """The shipped all-maildir routing declares no service queue."""
        assert queue_departments(routing_config) == []


class TestLoadRoutingQueues:
    """`load_routing` checks queue destinations against the taxonomy."""

    def test_known_department_is_accepted(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        """A queue destination naming a taxonomy department loads."""
        path = tmp_path / "routing.yaml"
        path.write_text(yaml.safe_dump(_with_queues(voirie="voirie")), encoding="utf-8")
        config = load_routing(path, taxonomy)
        assert queue_departments(config) == ["voirie"]

    def test_unknown_department_is_refused(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        """A queue destination naming an unknown department is an error naming its key."""
        path = tmp_path / "routing.yaml"
        path.write_text(yaml.safe_dump(_with_queues(voirie="piscine")), encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_routing(path, taxonomy)
        assert caught.value.key == "destinations.voirie.department"
        assert str(path) in str(caught.value)
        assert "destinations.voirie.department" in str(caught.value)
