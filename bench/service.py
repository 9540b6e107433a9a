"""The worker as a service: throughput and latency through RabbitMQ, the fast lane, memory,
start-up, scale-out over two processes, and retraining the shipped model.

Every scenario declares a topology under a prefix of its own, runs real `triage worker`
processes (as deployed: no `-v`, settings from the environment, the model pinned), and deletes
the topology afterwards. Latency runs from just before a request is published to the time its
decision-log record carries, written once every destination has the request (maildir delivery,
as config/routing.yaml ships). All ratios are measured within one call of `run`.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.worker_process import DecisionTimes, WorkerProcess
from classifiers import Classifier, load_classifier, load_taxonomy
from classifiers.base import explain
from classifiers.dataset import request_files
from classifiers.safety import SafetyRules, load_safety_rules
from classifiers.text import classifier_input
from worker.broker import BrokerError, Topology
from worker.config import PROJECT_ROOT, BrokerSettings, Settings, load_settings
from worker.parsing import parse_raw, read_raw
from worker.rabbitmq import RabbitAdmin
from worker.request import Channel, RawRequest, Request

__all__ = ["BenchError", "latency_ms", "percentile", "requests_per_s", "run", "target"]

SHIPPED_MODEL = PROJECT_ROOT / "models" / "default"
CORPUS = (PROJECT_ROOT / "data" / "test", PROJECT_ROOT / "data" / "validation")
TRAIN, VALIDATION = PROJECT_ROOT / "data" / "train", PROJECT_ROOT / "data" / "validation"
CRITIQUE_SUBJECT = "Odeur de gaz"
CRITIQUE_TEXT = "Odeur de gaz très forte dans la cage d'escalier, au 12 rue des Lilas."
ORDINARY_SUBJECT = "Horaires de la mairie"
ORDINARY_TEXT = "Bonjour, quels sont les horaires d'ouverture de la mairie le samedi ? Merci."
MIB = 2**20
TIMEOUT = 180.0
"""Seconds any one wait may last before the benchmark gives up with an error."""


class BenchError(RuntimeError):
    """The benchmark cannot run or measure (no broker, a worker that fails, a wrong prediction)."""


# -- pure helpers ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100), interpolating linearly between closest ranks."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0-100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_ms(published: dict[str, float], delivered: dict[str, float]) -> dict[str, float]:
    """p50, p95 and p99 of delivery minus publish time, in milliseconds, over `published`."""
    samples = [(delivered[i] - published[i]) * 1000 for i in published]
    return {f"p{q}": round(percentile(samples, q), 1) for q in (50, 95, 99)}


def requests_per_s(published: dict[str, float], delivered: dict[str, float]) -> float:
    """Requests over the time from the first publish to the last delivery."""
    span = max(delivered[i] for i in published) - min(published.values())
    if span <= 0:
        raise ValueError("the last delivery does not come after the first publish")
    return len(published) / span


def target(name: str, value: float | None, limit: float, *, at_most: bool) -> dict[str, Any]:
    """A target line: passed when `value` is within `limit` (≤ if `at_most`, else ≥)."""
    passed = value is not None and (value <= limit if at_most else value >= limit)
    return {
        "name": name,
        "value": value,
        "target": limit,
        "passed": passed,
        "direction": "<=" if at_most else ">=",
    }


# -- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A request as published (raw bytes) and as the model reads it (parsed)."""

    raw: RawRequest
    request: Request

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def message(self) -> tuple[bytes, str, str, str]:
        """The tuple `RabbitAdmin.submit` publishes."""
        return self.raw.payload, self.raw.content_type, self.id, self.raw.channel.value


def email(subject: str, body: str) -> Item:
    """A new plain-text email with a Message-ID of its own, hence a request id of its own."""
    payload = (
        f"From: Banc d'essai <banc@courriel.example>\nTo: contact@mairie.example\n"
        f"Subject: {subject}\nMessage-ID: <bench-{uuid.uuid4().hex}@courriel.example>\n"
        f"Date: Mon, 02 Mar 2026 09:00:00 +0100\nContent-Type: text/plain; charset=utf-8\n\n"
        f"{body}\n"
    ).encode()
    raw = RawRequest(payload=payload, channel=Channel.EMAIL)
    return Item(raw, parse_raw(raw))


def corpus() -> list[Item]:
    """The distinct requests of data/test and data/validation, in file order."""
    items: dict[str, Item] = {}
    for path in request_files(list(CORPUS)):
        raw = read_raw(path)
        item = Item(raw, parse_raw(raw))
        items.setdefault(item.id, item)
    return list(items.values())


def spread(items: Sequence[Item], n: int) -> list[Item]:
    """`n` of `items`, evenly spaced (files are sorted by department: all of them are in)."""
    if not 1 <= n <= len(items):
        raise BenchError(f"asked for {n} requests out of {len(items)}")
    return [items[i * len(items) // n] for i in range(n)]


# -- the broker and the scenes --------------------------------------------------------------


def _answers(settings: BrokerSettings) -> bool:
    try:
        RabbitAdmin(settings, Topology("bench-probe")).depths([])
    except BrokerError:
        return False
    return True


def ensure_broker(settings: BrokerSettings, wait: float = 90.0) -> None:
    """Return once RabbitMQ answers; start it (`rabbitmq-server -detached`) if it does not."""
    if _answers(settings):
        return
    if shutil.which("rabbitmq-server"):
        subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _answers(settings):
                return
            time.sleep(1)
    raise BenchError(
        "RabbitMQ is not answering (TRIAGE_BROKER__URL, default 127.0.0.1:5672) and "
        "`rabbitmq-server -detached` did not bring it up"
    )


@dataclass
class Scene:
    """One scenario's topology, state directory and worker processes."""

    state: Path
    topology: Topology
    admin: RabbitAdmin
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, model_dir: Path = SHIPPED_MODEL, core: int | None = None) -> WorkerProcess:
        """A worker of this scene (not started), with a state directory of its own."""
        process = WorkerProcess(
            self.state / f"w{len(self.workers)}", self.topology.prefix, model_dir, core=core
        )
        self.workers.append(process)
        return process

    def start(self, count: int = 1, cores: Sequence[int | None] = (None,)) -> None:
        """Start `count` workers of the shipped model and wait until each is healthy."""
        started = [self.worker(core=cores[i % len(cores)]) for i in range(count)]
        for process in started:
            process.start()
        for process in started:
            process.wait_healthy()

    def decisions(self) -> DecisionTimes:
        return DecisionTimes([process.decision_log for process in self.workers])

    def submit(self, items: Sequence[Item]) -> dict[str, float]:
        """Publish `items` (confirmed, in order); request id -> wall time just before publishing."""
        published: dict[str, float] = {}

        def stamped() -> Iterator[tuple[bytes, str, str, str]]:
            for item in items:
                published[item.id] = time.time()
                yield item.message

        self.admin.submit(stamped())
        return published

    def deliver(self, items: Sequence[Item], times: DecisionTimes) -> dict[str, float]:
        """Publish `items` and wait for them all; returns their delivery times."""
        published = self.submit(items)
        times.wait_for(list(published), TIMEOUT)
        return published


@contextmanager
def scene(cache: Path, settings: Settings, name: str) -> Iterator[Scene]:
    """A scenario's own topology and state; its workers are killed and topology deleted after."""
    prefix = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    topology = Topology(prefix, settings.worker.retry_delays)
    admin = RabbitAdmin(settings.broker, topology)
    admin.declare()
    current = Scene(cache / prefix, topology, admin)
    _progress(name)
    try:
        yield current
        for process in current.workers:
            process.stop()
    finally:
        for process in current.workers:
            process.kill()
        with suppress(BrokerError):
            admin.delete_topology()
    shutil.rmtree(current.state, ignore_errors=True)  # kept for a look when the scenario failed


def _progress(name: str) -> None:
    print(f"bench.service: {name}", file=sys.stderr, flush=True)


# -- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    cache: Path
    settings: Settings
    safety: SafetyRules

    @property
    def batch_size(self) -> int:
        """The worker's classify batch, as `triage worker` computes it."""
        return self.settings.worker.prefetch or self.settings.batch_size

    @property
    def explanations(self) -> bool:
        return self.settings.inference.explanations


def model_only(context: Context, classifier: Classifier, items: Sequence[Item]) -> float:
    """Requests/s of `predict`, plus explanations when the worker gives them, in batches of the
    worker's size; one batch first, untimed, as a warm-up."""
    requests = [item.request for item in items]
    size = context.batch_size
    batches = [requests[i : i + size] for i in range(0, len(requests), size)]
    classifier.predict(batches[0])
    began = time.perf_counter()
    for batch in batches:
        predictions = classifier.predict(batch)
        if context.explanations:
            explain(classifier, batch, predictions)
    return len(requests) / (time.perf_counter() - began)


def urgencies(context: Context, classifier: Classifier, items: Sequence[Item]) -> dict[str, str]:
    """Each request's urgency as the worker rates it: the model's, raised by the safety rules."""
    requests = [item.request for item in items]
    predictions = classifier.predict(requests)
    return {
        r.id: context.safety.apply(p, classifier_input(r)).urgency.label
        for r, p in zip(requests, predictions, strict=True)
    }


def end_to_end(context: Context, items: Sequence[Item], model_rps: float) -> dict[str, Any]:
    """`items` published at once to a warmed-up worker: latency includes the wait in the queue."""
    with scene(context.cache, context.settings, "e2e") as current:
        current.start()
        times = current.decisions()
        current.deliver([email(ORDINARY_SUBJECT, ORDINARY_TEXT)], times)  # warm-up
        published = current.deliver(items, times)
    rps = requests_per_s(published, times.times)
    return {
        "requests": len(items),
        "seconds": round(len(items) / rps, 3),
        "requests_per_s": round(rps, 1),
        "latency_ms": latency_ms(published, times.times),
        "model_only_requests_per_s": round(model_rps, 1),
        "ratio": round(rps / model_rps, 3),
        "explanations": context.explanations,
    }


def _check_critique(times: DecisionTimes, request_id: str) -> None:
    urgency = times.urgency.get(request_id)
    if urgency != "critique":
        raise BenchError(f"the critique probe was rated {urgency!r}, not 'critique'")


def critique_idle(context: Context, samples: int) -> dict[str, Any]:
    """One critique request at a time on an idle worker, waiting for each."""
    latencies = []
    with scene(context.cache, context.settings, "critique-idle") as current:
        current.start()
        times = current.decisions()
        for index in range(samples + 1):
            probe = email(CRITIQUE_SUBJECT, CRITIQUE_TEXT)
            published = current.deliver([probe], times)
            _check_critique(times, probe.id)
            if index:  # the first one warms the worker up
                latencies.append((times.times[probe.id] - published[probe.id]) * 1000)
    return {"p95_ms": round(percentile(latencies, 95), 1), "samples": len(latencies)}


def critique_backlog(
    context: Context, ordinary: Sequence[Item], backlog: int, repeats: int
) -> dict[str, Any]:
    """A critique request published behind `backlog` others, the queue drained between repeats."""
    if not ordinary:
        raise BenchError("no corpus request below critique urgency for the backlog")
    latencies = []
    with scene(context.cache, context.settings, "critique-backlog") as current:
        current.start()
        times = current.decisions()
        current.deliver([email(ORDINARY_SUBJECT, ORDINARY_TEXT)], times)  # warm-up
        for repeat in range(repeats):
            start = repeat * backlog
            batch = [ordinary[(start + i) % len(ordinary)] for i in range(backlog)]
            probe = email(CRITIQUE_SUBJECT, CRITIQUE_TEXT)
            records = times.records
            published = current.submit([*batch, probe])
            times.wait_for([probe.id], TIMEOUT)
            _check_critique(times, probe.id)
            latencies.append((times.times[probe.id] - published[probe.id]) * 1000)
            times.wait_records(records + backlog + 1, TIMEOUT)
    return {"p95_ms": round(percentile(latencies, 95), 1), "samples": latencies, "backlog": backlog}


def memory(context: Context, name: str, model_dir: Path, load: Sequence[Item]) -> dict[str, Any]:
    """Start-up to the first delivery (published before the start), then peak RSS under `load`."""
    with scene(context.cache, context.settings, f"memory-{name}") as current:
        process = current.worker(model_dir)
        times = current.decisions()
        probe = email(ORDINARY_SUBJECT, ORDINARY_TEXT)
        current.submit([probe])
        began = process.start()
        times.wait_for([probe.id], TIMEOUT)
        startup = times.times[probe.id] - began
        current.deliver(load, times)
        peak = process.peak_rss()
    return {"model": name, "peak_rss_mb": round(peak / MIB, 1), "startup_s": round(startup, 2)}


def scale_out(context: Context, items: Sequence[Item]) -> dict[str, Any]:
    """The same requests through one worker on one core, then two workers on a core each."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        return {"one_worker_rps": None, "two_workers_rps": None, "ratio": None, "cores": cores}
    rates = []
    for count in (1, 2):
        with scene(context.cache, context.settings, f"scale-{count}") as current:
            current.start(count, cores)
            times = current.decisions()
            published = current.deliver(items, times)
        rates.append(requests_per_s(published, times.times))
    one, two = rates
    return {
        "one_worker_rps": round(one, 1),
        "two_workers_rps": round(two, 1),
        "ratio": round(two / one, 3),
        "cores": cores,
    }


def retraining(context: Context) -> dict[str, Any]:
    """`train_baseline` on data/train, calibrated and scored on data/validation, as shipped."""
    from classifiers.training import train_baseline  # pulls in scikit-learn's training side

    _progress("retraining")
    taxonomy = load_taxonomy(context.settings.taxonomy_file)
    out = context.cache / f"retrained-{uuid.uuid4().hex[:8]}"
    began = time.perf_counter()
    try:
        result = train_baseline([TRAIN], out, taxonomy, context.safety, validation=[VALIDATION])
        seconds = time.perf_counter() - began
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "examples": result.examples,
        "seconds": round(seconds, 1),
        "examples_per_s": round(result.examples / seconds, 1),
    }


def _camembert_model(cache: Path) -> Path:
    from bench.models import camembert_base_sized  # torch, transformers: only when needed

    _progress("camembert-base-sized model")
    return camembert_base_sized(cache / "camembert-base-sized")


def run(cache: Path, *, quick: bool = False) -> dict[str, Any]:
    """Run every service scenario once; figures, and each target with its pass/short mark."""
    began = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    ensure_broker(settings.broker)
    context = Context(cache.resolve(), settings, load_safety_rules(settings.safety_file))
    n, samples, backlog, repeats = (200, 10, 150, 3) if quick else (400, 20, 300, 3)
    _progress("corpus")
    pool = corpus()
    items = spread(pool, n)
    _progress("model only")
    taxonomy = load_taxonomy(settings.taxonomy_file)
    classifier = load_classifier(SHIPPED_MODEL, taxonomy, settings.inference)
    model_rps = model_only(context, classifier, items)
    probe = email(CRITIQUE_SUBJECT, CRITIQUE_TEXT)
    rated = urgencies(context, classifier, [probe, *pool])
    if rated[probe.id] != "critique":
        raise BenchError(f"the critique probe is rated {rated[probe.id]!r}, not 'critique'")
    ordinary = [item for item in pool if rated[item.id] != "critique"]
    results: dict[str, Any] = {
        "end_to_end": end_to_end(context, items, model_rps),
        "critique_idle": critique_idle(context, samples),
        "critique_backlog": critique_backlog(context, ordinary, backlog, repeats),
    }
    # Shipped: one classify batch. CamemBERT: one forward micro-batch, the step its activation
    # memory peaks at; a whole batch with gradient explanations takes a minute on two cores.
    camembert = _camembert_model(context.cache)
    results["memory"] = [
        memory(context, "shipped", SHIPPED_MODEL, items[: context.batch_size]),
        memory(context, "camembert-base-sized", camembert, items[: settings.inference.micro_batch]),
    ]
    results["scale_out"] = scale_out(context, items)
    results["retraining"] = retraining(context)
    results["targets"] = _targets(results)
    results["wall_seconds"] = round(time.monotonic() - began, 1)
    return results


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    shipped, camembert = results["memory"]
    return [
        target(
            "end-to-end / model-only requests/s",
            results["end_to_end"]["ratio"],
            0.85,
            at_most=False,
        ),
        target("critique at idle, p95 ms", results["critique_idle"]["p95_ms"], 1000, at_most=True),
        target(
            "critique behind a backlog, p95 ms",
            results["critique_backlog"]["p95_ms"],
            2000,
            at_most=True,
        ),
        target("peak RSS, shipped model, MiB", shipped["peak_rss_mb"], 600, at_most=True),
        target("peak RSS, camembert-base-sized, MiB", camembert["peak_rss_mb"], 1536, at_most=True),
        target("start-up to first delivery, shipped, s", shipped["startup_s"], 10, at_most=True),
        target(
            "start-up to first delivery, camembert-base-sized, s",
            camembert["startup_s"],
            10,
            at_most=True,
        ),
        target(
            "two workers / one worker requests/s", results["scale_out"]["ratio"], 1.8, at_most=False
        ),
        target(
            "retraining the shipped model, s", results["retraining"]["seconds"], 1800, at_most=True
        ),
    ]
