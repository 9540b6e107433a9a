"""The deliverer interface, what it is given and the receipt it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from classifiers.base import Prediction
from worker.request import RawRequest, Request
from worker.routing import RoutingDecision


@dataclass(frozen=True)
class Delivery:
    """One request for one destination.

    `message` is the default rendering (the original with triage headers, or a dead letter).
    Deliverers that write their own form, such as an SMTP forward with a summary, read the rest.
    """

    request_id: str
    message: bytes
    raw: RawRequest | None = None
    request: Request | None = None
    prediction: Prediction | None = None
    decision: RoutingDecision | None = None


@dataclass(frozen=True)
class Receipt:
    """Proof of one delivery; `duplicate` when the destination already held the request."""

    destination: str
    location: str
    duplicate: bool = False


class Deliverer(Protocol):
    """Delivers to one destination, idempotently per request id.

    Raises `TransientError` when trying again later may succeed, `PermanentError` otherwise.
    """

    name: str

    def deliver(self, delivery: Delivery) -> Receipt: ...
