"""Delivery targets: the interface, the message rendering and the concrete deliverers."""

from __future__ import annotations

from pathlib import Path

from worker.broker import Broker, Topology
from worker.delivery.base import Deliverer, Delivery, Receipt
from worker.delivery.maildir import MaildirDeliverer
from worker.delivery.queue import QueueDeliverer, UnavailableDeliverer
from worker.routing import MaildirDestination, QueueDestination, RoutingConfig

__all__ = ["Deliverer", "Delivery", "MaildirDeliverer", "Receipt", "build_deliverers"]


def build_deliverers(
    config: RoutingConfig,
    maildir_root: Path,
    broker: Broker | None = None,
    topology: Topology | None = None,
) -> dict[str, Deliverer]:
    """One deliverer per declared destination; queue destinations need a broker."""
    deliverers: dict[str, Deliverer] = {}
    for name, destination in config.destinations.items():
        if isinstance(destination, MaildirDestination):
            path = destination.path
            deliverers[name] = MaildirDeliverer(
                name, path if path.is_absolute() else maildir_root / path
            )
        elif isinstance(destination, QueueDestination):
            if broker is not None and topology is not None:
                deliverers[name] = QueueDeliverer(name, destination.department, broker, topology)
            else:
                why = "queue destinations are delivered by `triage worker` (RabbitMQ)"
                deliverers[name] = UnavailableDeliverer(name, why)
        else:
            deliverers[name] = UnavailableDeliverer(name, f"{destination.type} is not wired yet")
    return deliverers
