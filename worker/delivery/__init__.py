"""Delivery targets: the interface, the message rendering and the concrete deliverers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from worker.broker import Broker, Topology
from worker.config import ImapAccount
from worker.delivery.base import Deliverer, Delivery, Receipt
from worker.delivery.imap_folder import ImapFolderDeliverer
from worker.delivery.maildir import MaildirDeliverer
from worker.delivery.queue import QueueDeliverer, UnavailableDeliverer
from worker.delivery.smtp import SmtpDeliverer, SmtpSender
from worker.imap import ImapSession
from worker.routing import MaildirDestination, QueueDestination, RoutingConfig, SmtpDestination

__all__ = ["Deliverer", "Delivery", "MaildirDeliverer", "Receipt", "build_deliverers"]


def build_deliverers(
    config: RoutingConfig,
    maildir_root: Path,
    broker: Broker | None = None,
    topology: Topology | None = None,
    *,
    smtp: SmtpSender | None = None,
    imap: Mapping[str, tuple[ImapAccount, str]] | None = None,
    display_names: Mapping[str, str] | None = None,
) -> dict[str, Deliverer]:
    """One deliverer per declared destination.

    Queue destinations need a broker, SMTP ones a sender, IMAP folders their account and password
    (`imap`: account name -> (settings, password)); without them a destination is kept but
    refuses every delivery (permanently), so the request is dead-lettered with the reason.
    """
    deliverers: dict[str, Deliverer] = {}
    for name, destination in config.destinations.items():
        deliverer: Deliverer
        if isinstance(destination, MaildirDestination):
            path = destination.path
            deliverer = MaildirDeliverer(name, path if path.is_absolute() else maildir_root / path)
        elif isinstance(destination, QueueDestination):
            deliverer = (
                QueueDeliverer(name, destination.department, broker, topology)
                if broker is not None and topology is not None
                else UnavailableDeliverer(name, "queue destinations need `triage worker`")
            )
        elif isinstance(destination, SmtpDestination):
            deliverer = (
                SmtpDeliverer(name, destination.to, destination.attach, smtp, display_names or {})
                if smtp is not None
                else UnavailableDeliverer(name, "no SMTP relay configured")
            )
        elif imap is not None and destination.account in imap:
            account, password = imap[destination.account]
            session = ImapSession(account, password)
            deliverer = ImapFolderDeliverer(name, destination.account, session, destination.folder)
        else:
            why = f"IMAP account {destination.account!r} is not configured"
            deliverer = UnavailableDeliverer(name, why)
        deliverers[name] = deliverer
    return deliverers
