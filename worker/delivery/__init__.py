"""Delivery targets: the interface, the message rendering and the concrete deliverers."""

from __future__ import annotations

from pathlib import Path

from worker.delivery.base import Deliverer, Delivery, Receipt
from worker.delivery.maildir import MaildirDeliverer
from worker.routing import RoutingConfig

__all__ = ["Deliverer", "Delivery", "MaildirDeliverer", "Receipt", "build_deliverers"]


def build_deliverers(config: RoutingConfig, maildir_root: Path) -> dict[str, Deliverer]:
    """One deliverer per declared destination."""
    deliverers: dict[str, Deliverer] = {}
    for name, destination in config.destinations.items():
        path = (
            destination.path if destination.path.is_absolute() else maildir_root / destination.path
        )
        deliverers[name] = MaildirDeliverer(name, path)
    return deliverers
