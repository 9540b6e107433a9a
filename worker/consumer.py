"""The worker engine: classify in micro-batches, deliver with retries, dead-letter the rest.

Two stages, each fed by the broker's thread into an in-process queue and run on worker threads
(never on the broker's I/O thread, so a slow model cannot starve heartbeats):

1. classify: up to `batch_size` intake messages or `batch_wait` seconds, one model call, then
   each classified request is published (confirmed) to the deliver queue with its urgency as
   priority, and only then is the intake message acked;
2. deliver: one message at a time per delivery thread, most urgent first; the explanation (when
   on) is computed here, so a backlog's explanations never delay classifying a critique request;
   ack after every destination got it and the decision was recorded. A transient failure
   republishes it to the delay queue of its attempt; after the last attempt, or at once for a
   permanent failure, it goes to the dead-letter queue with the reason. A message is acked only
   after its successor (retry or dead letter) is confirmed, so a crash at any point leaves a copy
   in some queue.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from worker.broker import (
    DELIVER_ROUTING_KEY,
    HEADER_ATTEMPT,
    HEADER_CHANNEL,
    HEADER_CLASSIFICATION,
    HEADER_ERROR_CLASS,
    HEADER_REASON,
    HEADER_REQUEST_ID,
    HEADER_STAGE,
    URGENCY_PRIORITY,
    Broker,
    Message,
    Topology,
    decode_classification,
    encode_classification,
)
from worker.errors import ParseError, TransientError, TriageError, safe_reason
from worker.pipeline import Classified, Pipeline, Taken
from worker.request import CONTENT_TYPES, Channel, RawRequest

log = structlog.get_logger("worker.consumer")

_CHANNEL_BY_TYPE = {content_type: channel for channel, content_type in CONTENT_TYPES.items()}


def channel_of(message: Message) -> Channel:
    """The request channel of a message, from its header or content type (email by default)."""
    declared = message.headers.get(HEADER_CHANNEL)
    if isinstance(declared, bytes):
        declared = declared.decode("ascii", "replace")
    if declared in {channel.value for channel in Channel}:
        return Channel(declared)
    return _CHANNEL_BY_TYPE.get(message.content_type or "", Channel.EMAIL)


@dataclass(frozen=True)
class WorkerOptions:
    batch_size: int = 32
    batch_wait: float = 0.05
    delivery_threads: int = 2
    max_attempts: int = 5


class Observer:
    """Hooks for metrics; the default does nothing."""

    def batch(self, size: int, seconds: float) -> None: ...

    def outcome(self, item: Classified | None, outcome: str) -> None: ...

    def lag(self, seconds: float) -> None: ...


class TriageWorker:
    """Consumes the intake and deliver queues of `topology` through `broker`."""

    def __init__(
        self,
        pipeline: Pipeline,
        broker: Broker,
        topology: Topology,
        options: WorkerOptions | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.broker = broker
        self.topology = topology
        self.options = options or WorkerOptions()
        self.observer = observer or Observer()
        self._clock = clock
        self._intake: queue.Queue[Message] = queue.Queue()
        self._deliveries: queue.Queue[Message] = queue.Queue()
        self._stopping = threading.Event()
        # Set while the classify stage has nothing to do. Delivery (and the explanations it
        # computes) waits for it: classifying is cheap and sets the priorities, and Python
        # threads share one interpreter lock, so a backlog is classified first and a critique
        # request in it reaches the head of the deliver queue at once (the fast lane).
        self._classify_idle = threading.Event()
        self._classify_idle.set()
        self._threads: list[threading.Thread] = []

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start consuming and the worker threads."""
        self.broker.consume(self.topology.intake, self.options.batch_size, self._intake.put)
        self.broker.consume(
            self.topology.deliver, self.options.delivery_threads, self._deliveries.put
        )
        self._threads = [threading.Thread(target=self._classify_loop, name="classify", daemon=True)]
        self._threads += [
            threading.Thread(target=self._deliver_loop, name=f"deliver-{i}", daemon=True)
            for i in range(self.options.delivery_threads)
        ]
        for thread in self._threads:
            thread.start()
        log.info("worker.started", threads=len(self._threads), batch_size=self.options.batch_size)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop taking messages, finish the work in hand, give back what was not started."""
        self.broker.stop_consuming()
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        returned = 0
        for pending in (self._intake, self._deliveries):
            while True:
                try:
                    message = pending.get_nowait()
                except queue.Empty:
                    break
                self.broker.requeue(message)
                returned += 1
        log.info("worker.stopped", requeued=returned)

    # -- stage 1: classify -------------------------------------------------------------------

    def _classify_loop(self) -> None:
        while not self._stopping.is_set():
            batch = self._next_batch()
            if not batch:
                self._classify_idle.set()
                continue
            self._classify_idle.clear()
            try:
                self.classify_batch(batch)
            except (
                Exception
            ) as exc:  # the thread must outlive any one batch; unacked messages return
                log.error("worker.classify_stage_error", error_class=type(exc).__name__)
            if self._intake.empty():
                self._classify_idle.set()

    def _next_batch(self) -> list[Message]:
        try:
            batch = [self._intake.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = self._clock() + self.options.batch_wait
        while len(batch) < self.options.batch_size:
            remaining = deadline - self._clock()
            try:
                if remaining > 0:
                    batch.append(self._intake.get(timeout=remaining))
                else:
                    batch.append(self._intake.get_nowait())
            except queue.Empty:
                break
        return batch

    def classify_batch(self, messages: list[Message]) -> None:
        """Parse and classify a batch, publish each result to the deliver queue, ack each."""
        started = self._clock()
        stamps = [m.timestamp for m in messages if m.timestamp]
        if stamps:
            self.observer.lag(max(0.0, time.time() - min(stamps)))
        parsed: list[tuple[Message, Taken]] = []
        for message in messages:
            raw = RawRequest(
                payload=message.body, channel=channel_of(message), origin=message.queue
            )
            try:
                parsed.append((message, self.pipeline.take(raw)))
            except ParseError as exc:
                self._dead_letter(message, raw, raw.fallback_id, exc, stage="parse", attempts=0)
        if not parsed:
            return
        try:
            # Explanations wait for the deliver stage, behind the priority queue: classifying
            # stays fast, so a critique request is not held up by a backlog's explanations.
            classified = self.pipeline.classify(
                [taken.request for _, taken in parsed],
                [taken.correction for _, taken in parsed],
                with_evidence=False,
            )
        except Exception as exc:  # a model failure is dead-lettered, never retried in a loop
            log.error("batch.classification_failed", error_class=type(exc).__name__)
            for message, taken in parsed:
                self._dead_letter(
                    message, taken.raw, taken.request.id, exc, stage="classify", attempts=0
                )
            return
        self.observer.batch(len(parsed), self._clock() - started)
        for (message, taken), item in zip(parsed, classified, strict=True):
            raw = taken.raw  # for a forward-back: the original request, re-routed
            try:
                self.broker.publish(
                    self.topology.deliver,
                    DELIVER_ROUTING_KEY,
                    raw.payload,
                    headers={
                        HEADER_REQUEST_ID: item.request.id,
                        HEADER_CHANNEL: raw.channel.value,
                        HEADER_CLASSIFICATION: encode_classification(
                            item.prediction, item.decision
                        ),
                        HEADER_ATTEMPT: 0,
                    },
                    content_type=raw.content_type,
                    priority=URGENCY_PRIORITY.get(item.prediction.urgency.label, 0),
                    message_id=item.request.id,
                )
            except TriageError as exc:  # left unacked: the broker gives it back after reconnecting
                log.warning(
                    "request.forward_failed",
                    request_id=item.request.id,
                    error_class=type(exc).__name__,
                )
                continue
            self.broker.ack(message)

    # -- stage 2: deliver --------------------------------------------------------------------

    def _deliver_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._classify_idle.wait(timeout=0.2):
                continue
            try:
                message = self._deliveries.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.deliver_message(message)
            except Exception as exc:  # the thread must outlive any one message
                log.error("worker.deliver_stage_error", error_class=type(exc).__name__)

    def deliver_message(self, message: Message) -> None:
        """Deliver one classified request; retry, dead-letter or ack it."""
        raw = RawRequest(payload=message.body, channel=channel_of(message), origin=message.queue)
        request_id = str(message.headers.get(HEADER_REQUEST_ID) or raw.fallback_id)
        attempt = int(message.headers.get(HEADER_ATTEMPT) or 0) + 1
        item: Classified | None = None
        try:
            prediction, decision = decode_classification(message.headers.get(HEADER_CLASSIFICATION))
            request = self.pipeline.parse(raw)
            item = Classified(request, self.pipeline.add_evidence(request, prediction), decision)
            self.pipeline.deliver(raw, item)
        except TransientError as exc:
            if attempt >= self.options.max_attempts:
                reason = f"delivery failed {attempt} times; last error: {exc}"
                self._dead_letter(message, raw, request_id, exc, "deliver", attempt, reason)
            else:
                self._retry(message, request_id, attempt, exc)
            return
        except Exception as exc:  # permanent, or unforeseen: set aside with its class, no loop
            self._dead_letter(message, raw, request_id, exc, stage="deliver", attempts=attempt)
            return
        self.observer.outcome(item, "review" if item.decision.needs_review else "delivered")
        self.broker.ack(message)

    def _retry(self, message: Message, request_id: str, attempt: int, error: Exception) -> None:
        delay_queue = self.topology.retry(attempt)
        headers = {**message.headers, HEADER_ATTEMPT: attempt, HEADER_REASON: str(error)[:500]}
        try:
            self.broker.publish(
                "",
                delay_queue,
                message.body,
                headers=headers,
                content_type=message.content_type,
                priority=message.priority,
                message_id=request_id,
            )
        except TriageError as exc:  # unacked: comes back after reconnecting
            log.error("request.retry_failed", request_id=request_id, error_class=type(exc).__name__)
            return
        log.warning(
            "request.retry_scheduled",
            request_id=request_id,
            attempt=attempt,
            delay_queue=delay_queue,
            error_class=type(error).__name__,
        )
        self.observer.outcome(None, "retry")
        self.broker.ack(message)

    def _dead_letter(
        self,
        message: Message,
        raw: RawRequest,
        request_id: str,
        error: Exception,
        stage: str,
        attempts: int,
        reason: str | None = None,
    ) -> None:
        if reason is None:
            reason = safe_reason(error)
        headers = {
            **message.headers,
            HEADER_REQUEST_ID: request_id,
            HEADER_CHANNEL: raw.channel.value,
            HEADER_REASON: reason[:1000],
            HEADER_ERROR_CLASS: type(error).__name__,
            HEADER_STAGE: stage,
            HEADER_ATTEMPT: attempts,
        }
        try:
            self.broker.publish(
                "",
                self.topology.dead,
                message.body,
                headers=headers,
                content_type=message.content_type or raw.content_type,
                message_id=request_id,
            )
        except TriageError as exc:  # unacked: comes back after reconnecting
            log.error(
                "request.dead_letter_failed", request_id=request_id, error_class=type(exc).__name__
            )
            return
        self.pipeline.record_dead_letter(
            raw, request_id, reason, type(error).__name__, self.topology.dead
        )
        self.observer.outcome(None, "dead_letter")
        self.broker.ack(message)
