"""`triage worker`: the RabbitMQ daemon's life cycle, signals and exit codes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import structlog

from classifiers import Classifier, load_classifier
from classifiers.registry import ModelRegistry
from worker import exit_codes
from worker.consumer import TriageWorker, WorkerOptions
from worker.feedback import FeedbackStore
from worker.idempotency import DeliveryStore
from worker.metrics import WorkerMetrics, health_report, serve
from worker.model_watch import ModelWatcher
from worker.pipeline import Pipeline
from worker.rabbitmq import RabbitBroker
from worker.routing import queue_departments
from worker.runtime import Configuration, build_pipeline, topology_of

log = structlog.get_logger("worker.daemon")


def install_stop_signals(stop: threading.Event) -> None:
    """First SIGTERM/SIGINT: stop gracefully. Second: exit at once."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            os._exit(exit_codes.INTERRUPTED)
        log.info("process.stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run_worker(
    configuration: Configuration,
    *,
    workers: int | None = None,
    classifier: Classifier | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Consume until stopped; returns an exit code."""
    started = time.monotonic()
    settings = configuration.settings
    topology = topology_of(settings)
    broker = RabbitBroker(settings.broker, topology, queue_departments(configuration.routing))
    store = DeliveryStore(settings.idempotency_path)
    feedback = FeedbackStore(settings.feedback_path)
    pipeline = build_pipeline(
        configuration,
        classifier=classifier,
        broker=broker,
        topology=topology,
        store=store,
        feedback=feedback,
    )
    if not broker.start(wait=settings.broker.connect_timeout):
        log.error("worker.cannot_connect", timeout=settings.broker.connect_timeout)
        broker.close()
        return exit_codes.CANNOT_CONNECT
    metrics = WorkerMetrics()
    metrics.model_info.labels(pipeline.classifier.version).set(1)
    options = WorkerOptions(
        batch_size=settings.worker.prefetch or settings.batch_size,
        batch_wait=settings.worker.batch_wait_ms / 1000,
        delivery_threads=workers or settings.worker.workers,
        max_attempts=settings.worker.max_attempts,
    )
    watcher = _watcher(configuration, pipeline, metrics) if classifier is None else None
    worker = TriageWorker(pipeline, broker, topology, options, metrics)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_signals(stop)
    server = None
    if settings.worker.metrics_port is not None:
        server = serve(
            metrics,
            settings.worker.metrics_host,
            settings.worker.metrics_port,
            lambda: health_report(broker.connected.is_set(), pipeline.classifier.version, started),
        )
    worker.start()
    log.info(
        "worker.ready",
        model=pipeline.classifier.version,
        seconds=round(time.monotonic() - started, 2),
    )
    while not stop.wait(0.5):
        if watcher is not None:
            watcher.poll()
    worker.stop()
    broker.close()
    store.close()
    feedback.close()
    if server is not None:
        server.shutdown()
    log.info("worker.exited")
    return exit_codes.OK


def _watcher(
    configuration: Configuration, pipeline: Pipeline, metrics: WorkerMetrics
) -> ModelWatcher | None:
    """Follow the registry's `current` pointer, unless the settings pin one model directory."""
    settings = configuration.settings
    if settings.model_dir is not None:
        log.info("worker.model_pinned", reload=False)
        return None

    def load(directory: Path) -> Classifier:
        return load_classifier(directory, configuration.taxonomy, settings.inference)

    def swapped(previous: str, version: str) -> None:
        metrics.model_info.labels(previous).set(0)
        metrics.model_info.labels(version).set(1)

    return ModelWatcher(ModelRegistry(settings.models_root), pipeline, load, swapped)
