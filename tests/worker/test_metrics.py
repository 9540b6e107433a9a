"""Tests of worker/metrics.py: the worker's Prometheus metrics and its health endpoint."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from classifiers.taxonomy import Taxonomy
from tests.conftest import make_prediction, make_request
from worker.metrics import WorkerMetrics, health_report, serve
from worker.pipeline import Classified
from worker.routing import RoutingConfig, route

Health = dict[str, object]


def _classified(
    routing: RoutingConfig, taxonomy: Taxonomy, department: str, urgency: str
) -> Classified:
    prediction = make_prediction(department, urgency, taxonomy=taxonomy)
    return Classified(make_request(), prediction, route(prediction, routing))


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET, error statuses included."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


class Server:
    """A metrics server on a free port whose health report the test can change."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.report: Health = {"healthy": True, "broker_connected": True, "model": "m-1"}
        self.http: ThreadingHTTPServer = serve(metrics, "127.0.0.1", 0, self.health)
        self.port = int(self.http.server_address[1])

    def health(self) -> Health:
        return self.report

    def get(self, path: str) -> tuple[int, str, bytes]:
        return _get(self.port, path)


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def server(metrics: WorkerMetrics) -> Iterator[Server]:
    running = Server(metrics)
    yield running
    running.http.shutdown()
    running.http.server_close()


class TestWorkerMetrics:
    """`WorkerMetrics` turns the worker's observations into counters, histograms and gauges."""

    def test_outcome_counts_by_department_urgency_and_outcome(
        self, metrics: WorkerMetrics, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """Each outcome increments the counter labelled with the department and the urgency."""
        item = _classified(routing_config, taxonomy, "voirie", "critique")
        metrics.outcome(item, "delivered")
        metrics.outcome(item, "delivered")
        metrics.outcome(item, "review")
        sample = metrics.registry.get_sample_value
        labels = {"department": "voirie", "urgency": "critique"}
        assert sample("triage_requests_total", {**labels, "outcome": "delivered"}) == 2.0
        assert sample("triage_requests_total", {**labels, "outcome": "review"}) == 1.0

    def test_outcome_without_item_has_empty_labels(self, metrics: WorkerMetrics) -> None:
        """A retry or dead letter, which has no classification, is counted with empty labels."""
        metrics.outcome(None, "dead_letter")
        labels = {"department": "", "urgency": "", "outcome": "dead_letter"}
        assert metrics.registry.get_sample_value("triage_requests_total", labels) == 1.0

    def test_batch_observes_size_and_duration(self, metrics: WorkerMetrics) -> None:
        """A batch feeds the size histogram and the classification-time histogram."""
        metrics.batch(3, 0.25)
        metrics.batch(20, 0.75)
        sample = metrics.registry.get_sample_value
        assert sample("triage_batch_size_count") == 2.0
        assert sample("triage_batch_size_sum") == 23.0
        assert sample("triage_batch_size_bucket", {"le": "4.0"}) == 1.0
        assert sample("triage_batch_size_bucket", {"le": "32.0"}) == 2.0
        assert sample("triage_classification_seconds_count") == 2.0
        assert sample("triage_classification_seconds_sum") == pytest.approx(1.0)

    def test_lag_sets_the_gauge(self, metrics: WorkerMetrics) -> None:
        """The queue lag gauge holds the last lag reported."""
        metrics.lag(12.5)
        metrics.lag(3.0)
        assert metrics.registry.get_sample_value("triage_queue_lag_seconds") == 3.0

    def test_registries_are_separate(self) -> None:
        """Two WorkerMetrics do not share counters (each has a registry of its own)."""
        one, two = WorkerMetrics(), WorkerMetrics()
        one.lag(7.0)
        assert one.registry.get_sample_value("triage_queue_lag_seconds") == 7.0
        assert two.registry.get_sample_value("triage_queue_lag_seconds") == 0.0


class TestServe:
    """`serve` exposes /metrics and /healthz over HTTP."""

    def test_metrics_endpoint_exposes_counters(
        self,
        server: Server,
        metrics: WorkerMetrics,
        routing_config: RoutingConfig,
        taxonomy: Taxonomy,
    ) -> None:
        """GET /metrics answers 200 with the Prometheus text holding the request counter."""
        metrics.outcome(_classified(routing_config, taxonomy, "voirie", "normale"), "delivered")
        status, kind, body = server.get("/metrics")
        assert status == 200
        assert kind.startswith("text/plain")
        text = body.decode()
        assert "triage_requests_total" in text
        assert (
            'triage_requests_total{department="voirie",outcome="delivered",urgency="normale"} 1.0'
            in text
        )

    @pytest.mark.parametrize("path", ["/healthz", "/health"])
    def test_health_when_healthy(self, server: Server, path: str) -> None:
        """The health endpoint answers 200 with the health report as JSON when healthy."""
        status, kind, body = server.get(path)
        assert status == 200
        assert kind == "application/json"
        assert json.loads(body) == server.report

    def test_health_when_unhealthy(self, server: Server) -> None:
        """The health endpoint answers 503, still with the JSON report, when not healthy."""
        server.report = {"healthy": False, "broker_connected": False, "model": "m-1"}
        status, kind, body = server.get("/healthz")
        assert status == 503
        assert kind == "application/json"
        assert json.loads(body)["broker_connected"] is False

    def test_unknown_path_is_404(self, server: Server) -> None:
        """Any other path answers 404."""
        status, _, _ = server.get("/admin")
        assert status == 404


class TestHealthReport:
    """`health_report` is healthy only with a connected broker and a loaded model."""

    @pytest.mark.parametrize(
        ("connected", "model", "healthy"),
        [(True, "m-1", True), (False, "m-1", False), (True, None, False), (False, None, False)],
    )
    def test_healthy_needs_broker_and_model(
        self, connected: bool, model: str | None, healthy: bool
    ) -> None:
        """`healthy` is true exactly when the broker is connected and a model version is known."""
        report = health_report(connected, model, time.monotonic())
        assert report["healthy"] is healthy
        assert report["broker_connected"] is connected
        assert report["model"] == model

    def test_uptime_counts_from_start(self) -> None:
        """The uptime is the time since the given start, rounded to a tenth of a second."""
        report = health_report(True, "m-1", time.monotonic() - 42.0)
        uptime = report["uptime_seconds"]
        assert isinstance(uptime, float)
        assert 42.0 <= uptime < 43.0
