"""Where an intake hands a request over: the intake queue, or the embedded pipeline."""

from __future__ import annotations

from collections.abc import Callable

from worker.broker import INTAKE_ROUTING_KEY, Broker, Topology, intake_headers
from worker.errors import TransientError
from worker.pipeline import Pipeline, Status
from worker.request import RawRequest, Request

Sink = Callable[[RawRequest, Request | None], None]


def publish_intake(broker: Broker, topology: Topology, raw: RawRequest, request_id: str) -> None:
    """Publish raw request bytes to the intake exchange; returns once the broker confirmed."""
    broker.publish(
        topology.intake,
        INTAKE_ROUTING_KEY,
        raw.payload,
        headers=intake_headers(request_id, raw.channel.value),
        content_type=raw.content_type,
        message_id=request_id,
    )


def rabbit_sink(broker: Broker, topology: Topology) -> Sink:
    """The intake queue as a sink: each request published, confirmed."""

    def publish(raw: RawRequest, request: Request | None) -> None:
        publish_intake(broker, topology, raw, request.id if request else raw.fallback_id)

    return publish


def pipeline_sink(pipeline: Pipeline) -> Sink:
    """Run the request through the embedded pipeline (no broker); fails if nothing kept it."""

    def process(raw: RawRequest, request: Request | None) -> None:
        [outcome] = pipeline.process([raw])
        if outcome.status is Status.FAILED:
            raise TransientError(f"request not delivered nor dead-lettered: {outcome.error}")

    return process
