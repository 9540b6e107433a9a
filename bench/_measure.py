"""How one configuration of the classifier is timed, and the FLOPs its bound is derived from.

The private half of `bench.model_speed`: a sample of requests with its token lengths (`Mix`) and
a `CamembertBench` that runs a named variant through `CamembertClassifier.predict` and records a
row per configuration.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from classifiers.base import Classifier, Prediction
from classifiers.camembert import (
    CamembertClassifier,
    Dtype,
    InferenceOptions,
    Quantize,
)
from worker.request import Request

log = structlog.get_logger(__name__)

MAX_TOKENS = 256
WARM_UP_REQUESTS = 4
FLOPS_FORMULA = (
    "layers·(2·n·(4·d² + 2·d·f) + 4·n²·d) + 2·d·(department + urgency labels): "
    "Q, K, V, output projections and the two feed-forward products over n tokens, Q·Kᵀ and "
    "attention·V, then the two heads on the first token; embeddings, norms, softmax and GELU "
    "are not counted"
)
VARIANTS: dict[str, tuple[Dtype, Quantize]] = {
    "fp32": ("fp32", "none"),
    "bf16": ("bf16", "none"),
    "int8": ("fp32", "int8"),
}


def flops_per_sequence(
    tokens: int, *, hidden: int, layers: int, intermediate: int, labels: int
) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of one sequence of `tokens` real tokens."""
    n, d, f = tokens, hidden, intermediate
    return layers * (2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d) + 2 * d * labels


def timed(
    call: Callable[[], list[Prediction]],
    warm_up: Callable[[], object] | None = None,
    *,
    repeats: int = 1,
) -> tuple[float, list[Prediction]]:
    """The fastest of `repeats` calls, in seconds, and the result, after `warm_up` once.

    `warm_up` defaults to `call` itself; a short one on the same configuration (first
    allocations, kernel selection, the int8 copy's first use) keeps slow configurations from
    paying for the whole run again. The fastest repeat is the one least disturbed by other
    processes on a shared machine.
    """
    (warm_up or call)()
    best = float("inf")
    predictions: list[Prediction] = []
    for _ in range(repeats):
        began = time.perf_counter()
        predictions = call()
        best = min(best, time.perf_counter() - began)
    return best, predictions


def chunked(classifier: Classifier, requests: Sequence[Request], size: int) -> list[Prediction]:
    """Predict `size` requests at a time, in arrival order (each call is one micro-batch)."""
    found: list[Prediction] = []
    for start in range(0, len(requests), size):
        found += classifier.predict(requests[start : start + size])
    return found


def agreement(reference: Sequence[Prediction], other: Sequence[Prediction]) -> dict[str, float]:
    """Share of requests (matched by id) whose label is the same, per head."""
    by_id = {p.request_id: p for p in reference}
    pairs = [(by_id[p.request_id], p) for p in other]
    return {
        head: round(
            sum(getattr(a, head).label == getattr(b, head).label for a, b in pairs) / len(pairs), 4
        )
        for head in ("department", "urgency")
    }


def padded_tokens(lengths: Sequence[int], batch: int, *, sort: bool) -> int:
    """Tokens the encoder computes, padding included, for micro-batches of `batch`."""
    rows = sorted(lengths, reverse=True) if sort else list(lengths)
    return sum(
        len(rows[i : i + batch]) * max(rows[i : i + batch]) for i in range(0, len(rows), batch)
    )


def warm_up(
    classifier: Classifier, requests: Sequence[Request], batch: int
) -> Callable[[], object]:
    """A call predicting the first few requests, `batch` at a time: warms the configuration."""
    return lambda: chunked(classifier, requests[: min(batch, WARM_UP_REQUESTS)], batch)


@dataclasses.dataclass(frozen=True)
class Mix:
    """A sample of requests and what the CamemBERT encoder makes of it."""

    requests: list[Request]
    lengths: list[int]
    flops: float  # mean FLOPs per sequence

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


class CamembertBench:
    """The measurements of one run; `rows` and `runs` fill up as configurations are timed."""

    def __init__(
        self, classifier: CamembertClassifier, gflops: dict[str, float | None], repeats: int = 1
    ) -> None:
        self.classifier = classifier
        self.gflops = gflops
        self.repeats = repeats
        self.threads = len(os.sched_getaffinity(0))
        self.rows: list[dict[str, Any]] = []
        self.runs: dict[tuple[str, int], tuple[float, list[Prediction]]] = {}
        config = classifier.model.config
        self.shape = {
            "hidden": config.hidden_size,
            "layers": config.num_hidden_layers,
            "intermediate": config.intermediate_size,
            "labels": sum(len(labels) for labels in classifier.labels.values()),
        }

    def mix(self, requests: list[Request]) -> Mix:
        lengths = [len(ids) for ids in self.classifier.encoder.encode_requests(requests)]
        flops = statistics.fmean(flops_per_sequence(n, **self.shape) for n in lengths)
        return Mix(requests, lengths, flops)

    def variant(self, name: str, batch: int, threads: int | None = None) -> CamembertClassifier:
        dtype, quantize = VARIANTS[name]
        options = InferenceOptions(
            max_tokens=MAX_TOKENS,
            batch_size=batch,
            threads=threads or self.threads,
            dtype=dtype,
            quantize=quantize,
        )
        return self.classifier.with_options(options)

    def bound_dtype(self, name: str) -> str:
        """The matmul bound a variant is held to: its own dtype, int8 the best float one."""
        if name == "fp32" or self.gflops["bf16"] is None:
            return "fp32"
        return "bf16"

    def measure(self, name: str, batch: int, mix: Mix) -> dict[str, Any]:
        classifier = self.variant(name, batch)
        seconds, predictions = timed(
            lambda: classifier.predict(mix.requests),
            warm_up(classifier, mix.requests, batch),
            repeats=self.repeats,
        )
        self.runs[name, batch] = (seconds, predictions)
        bound_dtype = self.bound_dtype(name)
        bound = (self.gflops[bound_dtype] or 0.0) * 1e9 / mix.flops
        speed = len(mix.requests) / seconds
        row = {
            "model": "camembert-base-sized",
            "variant": name,
            "batch": batch,
            "requests": len(mix.requests),
            "sequences_per_s": round(speed, 3),
            "real_tokens_per_s": round(mix.tokens / seconds, 1),
            # Length-sorted micro-batches still pad to their longest row: the share computed
            # for real tokens (attention's n² not counted).
            "real_token_share": round(mix.tokens / padded_tokens(mix.lengths, batch, sort=True), 3),
            "bound": bound_dtype,
            "bound_sequences_per_s": round(bound, 3),
            "ratio_to_bound": round(speed / bound, 3),
        }
        log.info("bench.measured", **row)
        self.rows.append(row)
        return row
