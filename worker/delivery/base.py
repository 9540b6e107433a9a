"""The deliverer interface and its receipt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Receipt:
    """Proof of one delivery; `duplicate` when the destination already held the request."""

    destination: str
    location: str
    duplicate: bool = False


class Deliverer(Protocol):
    """Delivers rendered messages to one destination, idempotently per request id.

    Raises `TransientError` when trying again later may succeed, `PermanentError` otherwise.
    """

    name: str

    def deliver(self, request_id: str, message: bytes) -> Receipt: ...
