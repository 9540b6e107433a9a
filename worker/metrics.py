"""Prometheus metrics and a health endpoint for `triage worker`, on one small HTTP server.

`/metrics` is the Prometheus exposition; `/healthz` answers 200 with a JSON body when the broker
is connected and a model is loaded, 503 otherwise.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from worker.consumer import Observer
from worker.pipeline import Classified


class WorkerMetrics(Observer):
    """The worker's counters and histograms, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "triage_requests_total",
            "Requests handled, by department, urgency and outcome.",
            ["department", "urgency", "outcome"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "triage_batch_size",
            "Requests per classification batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.classification_seconds = Histogram(
            "triage_classification_seconds",
            "Time to parse and classify one batch.",
            registry=self.registry,
        )
        self.queue_lag = Gauge(
            "triage_queue_lag_seconds",
            "Age of the last message taken from the intake queue when it was taken.",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "triage_model_info", "The loaded model.", ["version"], registry=self.registry
        )

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.classification_seconds.observe(seconds)

    def outcome(self, item: Classified | None, outcome: str) -> None:
        department = item.prediction.department.label if item else ""
        urgency = item.prediction.urgency.label if item else ""
        self.requests.labels(department, urgency, outcome).inc()

    def lag(self, seconds: float) -> None:
        self.queue_lag.set(seconds)


def serve(
    metrics: WorkerMetrics, host: str, port: int, health: Callable[[], dict[str, object]]
) -> ThreadingHTTPServer:
    """Start the metrics and health server on a daemon thread; returns it (shutdown() to stop)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, status, kind = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
            elif self.path in ("/healthz", "/health"):
                report = health()
                status = 200 if report.get("healthy") else 503
                body, kind = json.dumps(report).encode(), "application/json"
            else:
                body, status, kind = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # requests are not worth a log line each

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def health_report(connected: bool, model_version: str | None, started: float) -> dict[str, object]:
    return {
        "healthy": connected and model_version is not None,
        "broker_connected": connected,
        "model": model_version,
        "uptime_seconds": round(time.monotonic() - started, 1),
    }
