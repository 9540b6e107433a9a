"""The broker interface the worker talks to, the topology's names, and an in-memory twin.

The topology (declared idempotently by `triage worker` and `triage submit`):

- `<prefix>.intake`: direct exchange and durable **quorum** queue of raw requests (emails and
  e-forms as published), persistent messages.
- `<prefix>.deliver`: direct exchange and durable **classic** queue with `x-max-priority`: the
  classified requests, priority by urgency, so that a critique request overtakes a backlog (the
  fast lane). Classic because quorum queues only support priorities from RabbitMQ 4.0 on.
- `<prefix>.retry.<n>`: classic queues whose message TTL is the n-th retry delay and whose
  dead-letter exchange is `<prefix>.deliver`: a failed delivery waits there, then comes back.
- `<prefix>.dead`: durable quorum queue of what could not be handled, with the reason, the
  exception class, the stage and the attempts in its headers.
- `<prefix>.service.<department>`: exchange and queue per service, for `type: queue`
  destinations (a GLPI or Zammad connector consumes them).

pika lives in `worker.rabbitmq` alone; everything else uses the `Broker` protocol below, which the
`StubBroker` implements in memory for unit tests.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from classifiers.base import Prediction
from worker.errors import PermanentError, TransientError
from worker.routing import RoutingDecision

URGENCY_PRIORITY = {"basse": 0, "normale": 1, "haute": 2, "critique": 3}
MAX_PRIORITY = max(URGENCY_PRIORITY.values())

HEADER_REQUEST_ID = "x-triage-request-id"
HEADER_CHANNEL = "x-triage-channel"
HEADER_CLASSIFICATION = "x-triage-classification"
HEADER_ATTEMPT = "x-triage-attempt"
HEADER_REASON = "x-triage-reason"
HEADER_ERROR_CLASS = "x-triage-error-class"
HEADER_STAGE = "x-triage-stage"

INTAKE_ROUTING_KEY = "intake"
DELIVER_ROUTING_KEY = "deliver"


def intake_headers(request_id: str, channel: str) -> dict[str, str]:
    """The headers a raw request carries into the intake queue."""
    return {HEADER_REQUEST_ID: request_id, HEADER_CHANNEL: channel}


class BrokerError(TransientError):
    """The broker could not be reached or did not confirm; trying again later may work."""


class UnroutableError(PermanentError):
    """A publish the broker could not route to any queue (a missing service queue, say)."""


@dataclass(frozen=True)
class Topology:
    """Exchange and queue names under one prefix (tests use a prefix of their own)."""

    prefix: str = "triage"
    retry_delays: tuple[float, ...] = (10.0, 60.0, 600.0, 3600.0)

    @property
    def intake(self) -> str:
        return f"{self.prefix}.intake"

    @property
    def deliver(self) -> str:
        return f"{self.prefix}.deliver"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def retry(self, attempt: int) -> str:
        """The delay queue for a message that failed `attempt` times (1-based)."""
        return f"{self.prefix}.retry.{min(attempt, len(self.retry_delays)) - 1}"

    def retry_queues(self) -> list[tuple[str, float]]:
        return [(f"{self.prefix}.retry.{i}", delay) for i, delay in enumerate(self.retry_delays)]

    def service(self, department: str) -> str:
        return f"{self.prefix}.service.{department}"


@dataclass(frozen=True)
class Message:
    """A message received from a queue; `handle` lets the broker ack the right delivery."""

    queue: str
    body: bytes
    headers: Mapping[str, Any]
    content_type: str | None
    priority: int | None
    redelivered: bool
    handle: Any = field(compare=False, repr=False)
    timestamp: int | None = None


class Broker(Protocol):
    """What the worker needs from a message broker. Publishes are confirmed before returning."""

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        priority: int | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publish persistently with mandatory routing; raise `BrokerError` or `UnroutableError`."""
        ...

    def consume(self, queue: str, prefetch: int, on_message: Callable[[Message], None]) -> None:
        """Deliver messages of `queue` to `on_message` (on the broker's thread) until stopped."""
        ...

    def ack(self, message: Message) -> None:
        """Acknowledge; a message from a previous connection is silently not acked."""
        ...

    def requeue(self, message: Message) -> None:
        """Give a message back to its queue (shutdown with work not started)."""
        ...

    def stop_consuming(self) -> None:
        """Stop taking new messages; acks and publishes keep working."""
        ...


def encode_classification(prediction: Prediction, decision: RoutingDecision) -> str:
    """The classification travelling from the classify stage to the deliver stage."""
    return json.dumps(
        {
            "prediction": prediction.model_dump(mode="json"),
            "decision": decision.model_dump(mode="json"),
        },
        ensure_ascii=False,
    )


def decode_classification(value: Any) -> tuple[Prediction, RoutingDecision]:
    """Inverse of `encode_classification`; raises `PermanentError` on a damaged header."""
    try:
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        document = json.loads(value)
        return (
            Prediction.model_validate(document["prediction"]),
            RoutingDecision.model_validate(document["decision"]),
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise PermanentError(f"damaged {HEADER_CLASSIFICATION} header") from exc


@dataclass
class _StubQueue:
    messages: deque[tuple[bytes, dict[str, Any], str | None, int | None]] = field(
        default_factory=deque
    )


class StubBroker:
    """An in-memory broker for unit tests: queues by name, synchronous delivery on `drain`."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.queues: dict[str, _StubQueue] = defaultdict(_StubQueue)
        self.bindings: dict[str, str] = {topology.intake: topology.intake}
        self.bindings[topology.deliver] = topology.deliver
        self.consumers: dict[str, Callable[[Message], None]] = {}
        self.acked: list[Message] = []
        self.requeued: list[Message] = []
        # ("publish", exchange or queue, routing key, body, message id) and ("ack", queue, ...):
        # what happened, in order, for tests that check a message is acked after its successor.
        self.journal: list[tuple[str, str, str, bytes, str | None]] = []
        self.fail_publishes = 0
        self._lock = threading.Lock()
        self.consuming = True

    def bind_service(self, department: str) -> None:
        name = self.topology.service(department)
        self.bindings[name] = name

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        priority: int | None = None,
        message_id: str | None = None,
    ) -> None:
        for key, value in (headers or {}).items():
            if not isinstance(value, str | bytes | int | bool | type(None)):
                # AMQP field tables (as pika encodes them) have no float: catch it in unit tests.
                raise TypeError(f"header {key!r}: {type(value).__name__} is not an AMQP field")
        with self._lock:
            if self.fail_publishes:
                self.fail_publishes -= 1
                raise BrokerError("stub broker: publish not confirmed")
            queue = self.bindings.get(exchange) if exchange else routing_key
            if queue is None or (not exchange and not routing_key):
                raise UnroutableError(f"no queue bound to {exchange!r}/{routing_key!r}")
            self.queues[queue].messages.append((body, dict(headers or {}), content_type, priority))
            self.journal.append(("publish", exchange or routing_key, routing_key, body, message_id))

    def consume(self, queue: str, prefetch: int, on_message: Callable[[Message], None]) -> None:
        self.consumers[queue] = on_message

    def take(self, queue: str) -> Message | None:
        """Pop the next message of `queue`, highest priority first, as a consumer would get it."""
        with self._lock:
            pending = self.queues[queue].messages
            if not pending:
                return None
            best = max(range(len(pending)), key=lambda i: (pending[i][3] or 0, -i))
            body, headers, content_type, priority = pending[best]
            del pending[best]
        return Message(queue, body, headers, content_type, priority, False, handle=None)

    def drain(self, queue: str) -> int:
        """Hand every message of `queue` to its consumer; return how many."""
        count = 0
        while (message := self.take(queue)) is not None:
            self.consumers[queue](message)
            count += 1
        return count

    def ack(self, message: Message) -> None:
        with self._lock:
            self.acked.append(message)
            self.journal.append(("ack", message.queue, "", message.body, None))

    def requeue(self, message: Message) -> None:
        with self._lock:
            self.requeued.append(message)
            self.queues[message.queue].messages.appendleft(
                (message.body, dict(message.headers), message.content_type, message.priority)
            )

    def stop_consuming(self) -> None:
        self.consuming = False
