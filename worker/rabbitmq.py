"""RabbitMQ through pika: the only module that imports pika.

`RabbitBroker` keeps one connection on its own I/O thread, which alone touches pika objects; other
threads hand it work through `add_callback_threadsafe` and wait for the result, so acks and
confirmed publishes are thread-safe and a slow model never starves heartbeats. When the connection
or a channel is lost (network, broker restart, `PRECONDITION_FAILED` after a consumer timeout), the
thread reconnects with exponential backoff, declares the topology again and resumes consuming.
Every received message carries the generation of the connection it came on; acks of messages from
an older generation are dropped, since their delivery tags mean nothing on the new connection and
the broker redelivers those messages anyway.

Foreign errors become `BrokerError` (transient) or `UnroutableError` (permanent) here.
Tested against RabbitMQ 3.10.8; the minimum is 3.8 (quorum queues, publisher confirms).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.exceptions
import structlog
from pika.adapters.blocking_connection import BlockingChannel

from worker.broker import (
    DELIVER_ROUTING_KEY,
    HEADER_ATTEMPT,
    HEADER_CHANNEL,
    HEADER_ERROR_CLASS,
    HEADER_REASON,
    HEADER_REQUEST_ID,
    HEADER_STAGE,
    INTAKE_ROUTING_KEY,
    MAX_PRIORITY,
    BrokerError,
    Message,
    Topology,
    UnroutableError,
    intake_headers,
)
from worker.config import BrokerSettings

log = structlog.get_logger("worker.rabbitmq")

T = TypeVar("T")

_PIKA_ERRORS = (pika.exceptions.AMQPError, OSError)


def _parameters(settings: BrokerSettings) -> pika.URLParameters:
    parameters = pika.URLParameters(settings.url)
    parameters.heartbeat = settings.heartbeat
    parameters.blocked_connection_timeout = settings.publish_timeout
    parameters.socket_timeout = settings.connect_timeout
    parameters.connection_attempts = 1
    return parameters


def declare_topology(
    channel: BlockingChannel, topology: Topology, service_departments: Iterable[str] = ()
) -> None:
    """Declare every exchange, queue and binding; idempotent (same names, same arguments)."""
    quorum = {"x-queue-type": "quorum"}
    channel.exchange_declare(topology.intake, exchange_type="direct", durable=True)
    channel.queue_declare(topology.intake, durable=True, arguments=quorum)
    channel.queue_bind(topology.intake, topology.intake, routing_key=INTAKE_ROUTING_KEY)
    channel.exchange_declare(topology.deliver, exchange_type="direct", durable=True)
    channel.queue_declare(
        topology.deliver, durable=True, arguments={"x-max-priority": MAX_PRIORITY}
    )
    channel.queue_bind(topology.deliver, topology.deliver, routing_key=DELIVER_ROUTING_KEY)
    for name, delay in topology.retry_queues():
        channel.queue_declare(
            name,
            durable=True,
            arguments={
                "x-message-ttl": int(delay * 1000),
                "x-dead-letter-exchange": topology.deliver,
                "x-dead-letter-routing-key": DELIVER_ROUTING_KEY,
                "x-max-priority": MAX_PRIORITY,
            },
        )
    channel.queue_declare(topology.dead, durable=True, arguments=quorum)
    for department in service_departments:
        name = topology.service(department)
        channel.exchange_declare(name, exchange_type="direct", durable=True)
        channel.queue_declare(name, durable=True, arguments=quorum)
        channel.queue_bind(name, name, routing_key=department)


def _properties(
    headers: Mapping[str, Any] | None,
    content_type: str | None,
    priority: int | None,
    message_id: str | None,
) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,
        headers=dict(headers or {}),
        content_type=content_type,
        priority=priority,
        message_id=message_id,
        timestamp=int(time.time()),
    )


@dataclass(frozen=True)
class _Handle:
    generation: int
    channel: BlockingChannel
    delivery_tag: int


class RabbitBroker:
    """The `Broker` protocol on RabbitMQ, with its connection on a dedicated I/O thread."""

    def __init__(
        self,
        settings: BrokerSettings,
        topology: Topology,
        service_departments: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.service_departments = tuple(service_departments)
        self.connected = threading.Event()
        self._closing = threading.Event()
        self._consuming = True
        self._consumers: dict[str, tuple[int, Callable[[Message], None]]] = {}
        self._generation = 0
        self._connection: pika.BlockingConnection | None = None
        self._publisher: BlockingChannel | None = None
        self._consumer_channels: dict[str, tuple[BlockingChannel, str]] = {}
        self._thread = threading.Thread(target=self._run, name="rabbitmq-io", daemon=True)
        self.reconnects = 0

    # -- life cycle --------------------------------------------------------------------------

    def start(self, wait: float | None = None) -> bool:
        """Start the I/O thread; with `wait`, block until connected or that many seconds pass."""
        self._thread.start()
        return self.connected.wait(wait) if wait is not None else True

    def close(self, timeout: float = 10.0) -> None:
        """Close the connection after the work already handed to the I/O thread is done."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = 0.5
        while not self._closing.is_set():
            try:
                self._connect()
                delay = 0.5
                while not self._closing.is_set():
                    assert self._connection is not None
                    self._connection.process_data_events(time_limit=0.1)
                    if not self._channels_open():
                        raise BrokerError("a channel was closed by the broker")
            except (*_PIKA_ERRORS, BrokerError) as exc:
                self._teardown()
                if self._closing.is_set():
                    break
                log.warning(
                    "broker.disconnected", error_class=type(exc).__name__, retry_in=round(delay, 2)
                )
                self._closing.wait(delay)
                delay = min(delay * 2, self.settings.reconnect_max_delay)
        self._teardown(close=True)

    def _connect(self) -> None:
        self._connection = pika.BlockingConnection(_parameters(self.settings))
        self._publisher = self._connection.channel()
        self._publisher.confirm_delivery()
        declare_topology(self._publisher, self.topology, self.service_departments)
        self._generation += 1
        if self._consuming:
            for queue, (prefetch, callback) in self._consumers.items():
                self._start_consumer(queue, prefetch, callback)
        if self._generation > 1:
            self.reconnects += 1
        self.connected.set()
        log.info("broker.connected", generation=self._generation)

    def _channels_open(self) -> bool:
        channels = [self._publisher, *(c for c, _ in self._consumer_channels.values())]
        return all(channel is not None and channel.is_open for channel in channels)

    def _teardown(self, close: bool = False) -> None:
        self.connected.clear()
        self._consumer_channels.clear()
        self._publisher = None
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(*_PIKA_ERRORS):
                connection.close()

    # -- work handed to the I/O thread -------------------------------------------------------

    def _call(self, work: Callable[[], T], timeout: float | None = None) -> T:
        """Run `work` on the I/O thread and return its result; raises `BrokerError` if it can't."""
        if threading.current_thread() is self._thread:
            return work()
        connection = self._connection
        if connection is None or not self.connected.is_set():
            raise BrokerError("not connected to the broker")
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to the waiting thread
                future.set_exception(exc)

        try:
            connection.add_callback_threadsafe(run)
        except _PIKA_ERRORS as exc:
            raise BrokerError(f"broker connection unusable ({type(exc).__name__})") from exc
        try:
            return future.result(timeout or self.settings.publish_timeout)
        except FutureTimeout as exc:
            raise BrokerError("the broker did not answer in time") from exc

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
        properties = _properties(headers, content_type, priority, message_id)

        def work() -> None:
            if self._publisher is None:
                raise BrokerError("not connected to the broker")
            try:
                self._publisher.basic_publish(
                    exchange, routing_key, body, properties=properties, mandatory=True
                )
            except pika.exceptions.UnroutableError as exc:
                raise UnroutableError(
                    f"unroutable: {exchange or '(default)'}/{routing_key}"
                ) from exc
            except pika.exceptions.NackError as exc:
                raise BrokerError("the broker refused the message (nack)") from exc
            except _PIKA_ERRORS as exc:
                raise BrokerError(f"publish failed ({type(exc).__name__})") from exc

        self._call(work)

    def consume(self, queue: str, prefetch: int, on_message: Callable[[Message], None]) -> None:
        self._consumers[queue] = (prefetch, on_message)
        if self.connected.is_set():
            self._call(lambda: self._start_consumer(queue, prefetch, on_message))

    def _start_consumer(
        self, queue: str, prefetch: int, on_message: Callable[[Message], None]
    ) -> None:
        assert self._connection is not None
        channel = self._connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        generation = self._generation

        def callback(
            ch: BlockingChannel,
            method: Any,
            properties: pika.BasicProperties,
            body: bytes,
        ) -> None:
            on_message(
                Message(
                    queue=queue,
                    body=body,
                    headers=dict(properties.headers or {}),
                    content_type=properties.content_type,
                    priority=properties.priority,
                    redelivered=bool(method.redelivered),
                    handle=_Handle(generation, ch, method.delivery_tag),
                    timestamp=properties.timestamp,
                )
            )

        tag = channel.basic_consume(queue, on_message_callback=callback, auto_ack=False)
        self._consumer_channels[queue] = (channel, tag)

    def _settle(self, message: Message, settle: Callable[[BlockingChannel, int], None]) -> None:
        handle = message.handle
        if not isinstance(handle, _Handle):
            return

        def work() -> None:
            if handle.generation != self._generation or not handle.channel.is_open:
                log.info("broker.stale_delivery_dropped", generation=handle.generation)
                return
            settle(handle.channel, handle.delivery_tag)

        try:
            self._call(work)
        except BrokerError:
            log.info("broker.settle_skipped_disconnected")

    def ack(self, message: Message) -> None:
        self._settle(message, lambda channel, tag: channel.basic_ack(tag))

    def requeue(self, message: Message) -> None:
        self._settle(message, lambda channel, tag: channel.basic_nack(tag, requeue=True))

    def stop_consuming(self) -> None:
        self._consuming = False

        def work() -> None:
            for channel, tag in list(self._consumer_channels.values()):
                if channel.is_open:
                    channel.basic_cancel(tag)

        with contextlib.suppress(BrokerError):
            self._call(work)


# -- short-lived connections for the command line and tests --------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered request as `triage dlq list` shows it (no content)."""

    request_id: str
    reason: str
    error_class: str
    stage: str
    attempts: int


def _blocking(settings: BrokerSettings) -> pika.BlockingConnection:
    try:
        return pika.BlockingConnection(_parameters(settings))
    except _PIKA_ERRORS as exc:
        raise BrokerError(f"cannot connect to the broker ({type(exc).__name__})") from exc


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


class RabbitAdmin:
    """Queue depths and dead-letter operations over a short-lived connection."""

    def __init__(self, settings: BrokerSettings, topology: Topology) -> None:
        self.settings = settings
        self.topology = topology

    def declare(self, service_departments: Iterable[str] = ()) -> None:
        connection = _blocking(self.settings)
        try:
            declare_topology(connection.channel(), self.topology, service_departments)
        finally:
            connection.close()

    def submit(
        self,
        messages: Iterable[tuple[bytes, str, str, str]],
        service_departments: Iterable[str] = (),
    ) -> int:
        """Publish (body, content type, request id, channel) tuples to intake; count confirms."""
        connection = _blocking(self.settings)
        confirmed = 0
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_topology(channel, self.topology, service_departments)
            for body, content_type, request_id, channel_name in messages:
                headers = intake_headers(request_id, channel_name)
                channel.basic_publish(
                    self.topology.intake,
                    INTAKE_ROUTING_KEY,
                    body,
                    properties=_properties(headers, content_type, None, request_id),
                    mandatory=True,
                )
                confirmed += 1
        except _PIKA_ERRORS as exc:
            raise BrokerError(
                f"publishing stopped after {confirmed} ({type(exc).__name__})"
            ) from exc
        finally:
            if connection.is_open:
                connection.close()
        return confirmed

    def depths(self, queues: Sequence[str]) -> dict[str, int | None]:
        """Messages ready in each queue; None for a queue that does not exist."""
        connection = _blocking(self.settings)
        depths: dict[str, int | None] = {}
        try:
            for name in queues:
                channel = connection.channel()
                try:
                    result = channel.queue_declare(name, passive=True)
                    depths[name] = int(result.method.message_count)
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    depths[name] = None
        finally:
            connection.close()
        return depths

    def _walk_dead(
        self, visit: Callable[[BlockingChannel, Any, pika.BasicProperties, bytes], bool]
    ) -> int:
        """Get every dead letter once; `visit` returns True to ack it (else it is requeued)."""
        connection = _blocking(self.settings)
        acked = 0
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            count = int(
                channel.queue_declare(self.topology.dead, passive=True).method.message_count
            )
            for _ in range(count):
                method, properties, body = channel.basic_get(self.topology.dead, auto_ack=False)
                if method is None:
                    break
                if visit(channel, method, properties, body):
                    channel.basic_ack(method.delivery_tag)
                    acked += 1
            channel.close()  # unacked ones go back to the queue
        except _PIKA_ERRORS as exc:
            raise BrokerError(f"dead-letter queue operation failed ({type(exc).__name__})") from exc
        finally:
            if connection.is_open:
                connection.close()
        return acked

    def dead_letters(self) -> list[DeadLetter]:
        found: list[DeadLetter] = []

        def visit(
            channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes
        ) -> bool:
            headers = properties.headers or {}
            found.append(
                DeadLetter(
                    request_id=_text(headers.get(HEADER_REQUEST_ID)),
                    reason=_text(headers.get(HEADER_REASON)),
                    error_class=_text(headers.get(HEADER_ERROR_CLASS)),
                    stage=_text(headers.get(HEADER_STAGE)),
                    attempts=int(headers.get(HEADER_ATTEMPT) or 0),
                )
            )
            return False

        self._walk_dead(visit)
        return found

    def replay(self, request_ids: set[str] | None = None) -> int:
        """Publish dead letters (all, or those ids) back to intake; ack each once confirmed."""

        def visit(
            channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes
        ) -> bool:
            headers = properties.headers or {}
            request_id = _text(headers.get(HEADER_REQUEST_ID))
            if request_ids is not None and request_id not in request_ids:
                return False
            kept = {k: v for k, v in headers.items() if k in (HEADER_REQUEST_ID, HEADER_CHANNEL)}
            channel.basic_publish(
                self.topology.intake,
                INTAKE_ROUTING_KEY,
                body,
                properties=_properties(kept, properties.content_type, None, request_id or None),
                mandatory=True,
            )
            return True

        return self._walk_dead(visit)

    def purge_dead(self) -> int:
        connection = _blocking(self.settings)
        try:
            result = connection.channel().queue_purge(self.topology.dead)
            return int(result.method.message_count)
        finally:
            connection.close()

    def delete_topology(self, service_departments: Iterable[str] = ()) -> None:
        """Remove every queue and exchange of the topology (tests, uninstall)."""
        connection = _blocking(self.settings)
        try:
            channel = connection.channel()
            names = [self.topology.intake, self.topology.deliver, self.topology.dead]
            names += [name for name, _ in self.topology.retry_queues()]
            names += [self.topology.service(d) for d in service_departments]
            for name in names:
                channel.queue_delete(name)
            for name in [self.topology.intake, self.topology.deliver]:
                channel.exchange_delete(name)
            for department in service_departments:
                channel.exchange_delete(self.topology.service(department))
        finally:
            connection.close()
