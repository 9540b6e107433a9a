"""Delivery to a per-service RabbitMQ exchange, for a service's own tool to consume."""

from __future__ import annotations

from worker.broker import HEADER_REQUEST_ID, Broker, Topology
from worker.delivery.base import Delivery, Receipt
from worker.errors import PermanentError


class QueueDeliverer:
    """Publishes the triaged message (RFC 5322, with X-Triage headers) to `<prefix>.service.<d>`.

    The publish is confirmed and mandatory: an exchange with no queue bound is an error
    (`UnroutableError`, permanent), not a silent loss. Idempotency is the worker's store's job.
    """

    def __init__(self, name: str, department: str, broker: Broker, topology: Topology) -> None:
        self.name = name
        self.department = department
        self.broker = broker
        self.exchange = topology.service(department)

    def deliver(self, delivery: Delivery) -> Receipt:
        headers: dict[str, object] = {HEADER_REQUEST_ID: delivery.request_id}
        if delivery.prediction is not None:
            headers["x-triage-department"] = delivery.prediction.department.label
            headers["x-triage-urgency"] = delivery.prediction.urgency.label
            headers["x-triage-confidence"] = f"{delivery.prediction.department.confidence:.3f}"
        if delivery.decision is not None:
            headers["x-triage-review"] = delivery.decision.needs_review
        self.broker.publish(
            self.exchange,
            self.department,
            delivery.message,
            headers=headers,
            content_type="message/rfc822",
            message_id=delivery.request_id,
        )
        return Receipt(self.name, f"{self.exchange}/{self.department}")


class UnavailableDeliverer:
    """Stands for a destination the embedded pipeline cannot reach (a queue without a broker)."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why

    def deliver(self, delivery: Delivery) -> Receipt:
        raise PermanentError(f"destination {self.name}: {self.why}")
