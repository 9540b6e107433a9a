"""Model throughput against the machine's matmul bound and against a naive transformers pipeline.

Every CamemBERT figure goes through the worker's own path, `CamembertClassifier.predict` with
`InferenceOptions` (pseudonymisation and tokenisation included), on `length_mix` requests of
data/test. The bound of a model in sequences/s is the measured GFLOP/s divided by its FLOPs per
sequence at the measured lengths (`flops_per_sequence`). Each configuration is warmed up once,
then timed `REPEATS` times, keeping the fastest. Each optimisation the classifier applies gets a
before/after line and a check that labels do not move; the weights are random, so that check is
agreement with fp32 labels, while the real guard of bf16 and int8 is the validation check of
`classifiers.variants` at training time.

    python -m bench.model_speed [--cache var/bench] [--quick] [--json out.json] [--strict]
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
import torch

from bench._measure import (
    FLOPS_FORMULA,
    MAX_TOKENS,
    VARIANTS,
    CamembertBench,
    Mix,
    agreement,
    chunked,
    flops_per_sequence,
    padded_tokens,
    timed,
    warm_up,
)
from bench.hardware import machine, matmul_gflops
from bench.models import TAXONOMY_FILE, camembert_base_sized, length_mix
from classifiers import load_classifier, load_taxonomy
from classifiers.base import Prediction
from classifiers.camembert import CamembertClassifier, native_bf16
from classifiers.text import classifier_input
from worker.config import PROJECT_ROOT
from worker.request import Request

__all__ = ["FLOPS_FORMULA", "flops_per_sequence", "format_report", "main", "run"]

log = structlog.get_logger(__name__)

DEFAULT_MODEL = PROJECT_ROOT / "models" / "default"
BATCHES = (1, 8, 16, 32)
"""16 is the worker's default `micro_batch` (`worker.config.InferenceSettings`)."""
REPEATS = 2
BATCHED_REQUESTS = 64
SINGLE_REQUESTS = 16
"""Requests of the batch-1 rows and of the naive reference (slow paths: fewer requests)."""
BOUND_TARGET = 0.6
NAIVE_TARGET = 5.0
WALL_TARGET_S = 360.0
VARIANTS_NOTE = (
    "random weights: label agreement with fp32 stands in for accuracy; the real guard is "
    "classifiers/variants.py's validation check at training time (≤ 0.5 macro-F1 point lost)"
)


def _tfidf_rows(
    requests: list[Request], single: list[Request], repeats: int
) -> list[dict[str, Any]]:
    """The shipped TF-IDF model, through `predict`, in chunks of each batch size."""
    classifier = load_classifier(DEFAULT_MODEL, load_taxonomy(TAXONOMY_FILE))
    rows = []
    for batch in BATCHES:
        sample = single if batch == 1 else requests
        words = sum(len(classifier_input(r).split()) for r in sample)
        call = functools.partial(chunked, classifier, sample, batch)
        seconds, _ = timed(call, repeats=repeats)
        rows.append(
            {
                "model": f"default ({classifier.version}, TF-IDF)",
                "variant": "sparse fp64",
                "batch": batch,
                "requests": len(sample),
                "sequences_per_s": round(len(sample) / seconds, 1),
                "words_per_s": round(words / seconds, 1),
                "real_tokens_per_s": None,
                "bound": "n/a (sparse TF-IDF: no FLOP bound)",
                "bound_sequences_per_s": None,
                "ratio_to_bound": None,
            }
        )
    return rows


def _naive(bench: CamembertBench, requests: list[Request]) -> dict[str, Any]:
    """The same architecture through `transformers.pipeline`, one request at a time, fp32."""
    from transformers import CamembertForSequenceClassification, pipeline

    tokenizer = bench.classifier.tokenizer
    config = copy.deepcopy(bench.classifier.model.config)
    config.num_labels = len(bench.classifier.labels["department"])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CamembertForSequenceClassification(config)
    model.eval()  # type: ignore[no-untyped-call]
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer)
    pairs = [{"text": r.subject, "text_pair": r.classifier_text} for r in requests]
    tokens = sum(
        len(
            tokenizer(p["text"], p["text_pair"], truncation=True, max_length=MAX_TOKENS)[
                "input_ids"
            ]
        )
        for p in pairs
    )

    def call() -> list[Prediction]:
        for pair in pairs:
            pipe(pair, truncation=True, max_length=MAX_TOKENS)
        return []

    seconds, _ = timed(
        call,
        lambda: pipe(pairs[0], truncation=True, max_length=MAX_TOKENS),
        repeats=bench.repeats,
    )
    return {
        "requests": len(requests),
        "sequences_per_s": round(len(requests) / seconds, 3),
        "real_tokens_per_s": round(tokens / seconds, 1),
        "note": "fp32, raw subject/text pairs (no pseudonymisation, which ours pays)",
    }


def _optimisation(
    name: str, before: float | None, after: float | None, unit: str, note: str
) -> dict[str, Any]:
    kept = before is not None and after is not None and after > before
    return {
        "name": name,
        "before": before,
        "after": after,
        "unit": unit,
        "kept": kept,
        "accuracy_note": note,
    }


def _agreement_note(shares: dict[str, float], requests: int, extra: str = "") -> str:
    text = ", ".join(f"{head} {share:.0%}" for head, share in shares.items())
    return f"labels agree on {requests} requests: {text}" + (f"; {extra}" if extra else "")


def _optimisations(bench: CamembertBench, batched: Mix, auto: str) -> list[dict[str, Any]]:
    """Before/after lines of length bucketing, threads, batching, bf16 and int8."""
    found = []
    rows = {(r["variant"], r["batch"]): r for r in bench.rows}
    sorted_run = bench.runs[auto, 32]
    unsorted = bench.variant(auto, 32)
    seconds, predictions = timed(
        lambda: chunked(unsorted, batched.requests, 32),
        warm_up(unsorted, batched.requests, 32),
        repeats=bench.repeats,
    )
    padded = {s: padded_tokens(batched.lengths, 32, sort=s) for s in (False, True)}
    found.append(
        _optimisation(
            f"length-sorted micro-batches ({auto}, batch 32) vs arrival order",
            round(batched.tokens / seconds, 1),
            rows[auto, 32]["real_tokens_per_s"],
            "real tokens/s",
            _agreement_note(
                agreement(sorted_run[1], predictions),
                len(predictions),
                f"real/computed tokens {batched.tokens / padded[False]:.0%} unsorted, "
                f"{batched.tokens / padded[True]:.0%} sorted",
            ),
        )
    )
    if bench.threads > 1:
        one = bench.variant(auto, 32, threads=1)
        try:
            seconds, predictions = timed(
                lambda: one.predict(batched.requests),
                warm_up(one, batched.requests, 32),
                repeats=bench.repeats,
            )
        finally:
            torch.set_num_threads(bench.threads)  # `threads` is process-wide
        found.append(
            _optimisation(
                f"threads=1 vs threads={bench.threads} ({auto}, batch 32)",
                round(batched.tokens / seconds, 1),
                rows[auto, 32]["real_tokens_per_s"],
                "real tokens/s",
                _agreement_note(agreement(sorted_run[1], predictions), len(predictions)),
            )
        )
    for before, after in itertools.pairwise(BATCHES):
        # Batch 1 reads its own, smaller sample: tokens/s, not sequences/s, compares the two.
        found.append(
            _optimisation(
                f"micro-batch {before} vs {after} ({auto})",
                rows[auto, before]["real_tokens_per_s"],
                rows[auto, after]["real_tokens_per_s"],
                "real tokens/s",
                _agreement_note(
                    agreement(bench.runs[auto, after][1], bench.runs[auto, before][1]),
                    min(len(bench.runs[auto, b][1]) for b in (before, after)),
                ),
            )
        )
    fp32 = bench.runs["fp32", 32][1]
    for name in ("bf16", "int8"):
        if (name, 32) not in rows:
            found.append(_optimisation(name, None, None, "real tokens/s", "no native bf16"))
            continue
        found.append(
            _optimisation(
                f"{name} vs fp32 (batch 32)"
                + (" (auto: native bf16 detected)" if name == "bf16" else ""),
                rows["fp32", 32]["real_tokens_per_s"],
                rows[name, 32]["real_tokens_per_s"],
                "real tokens/s",
                _agreement_note(agreement(fp32, bench.runs[name, 32][1]), len(fp32), VARIANTS_NOTE),
            )
        )
    return found


def _target(name: str, value: float, target: float, *, at_most: bool = False) -> dict[str, Any]:
    passed = value <= target if at_most else value >= target
    return {"name": name, "value": round(value, 3), "target": target, "passed": passed}


def run(cache: Path, *, quick: bool = False) -> dict[str, Any]:
    """Measure everything once and return the JSON-serialisable result (see the module doc)."""
    began = time.perf_counter()
    scale = 2 if quick else 1
    seconds = 1.5 / scale
    native = native_bf16()
    gflops: dict[str, float | None] = {
        "fp32": matmul_gflops(torch.float32, seconds=seconds),
        "bf16": matmul_gflops(torch.bfloat16, seconds=seconds) if native else None,
    }
    directory = camembert_base_sized(cache / "camembert-base-sized")
    loaded = load_classifier(directory, load_taxonomy(TAXONOMY_FILE))
    if not isinstance(loaded, CamembertClassifier):
        raise TypeError(f"{directory}: expected a camembert model, got {type(loaded).__name__}")
    bench = CamembertBench(loaded, gflops, REPEATS // scale)
    batched = bench.mix(length_mix(BATCHED_REQUESTS // scale))
    single = bench.mix(length_mix(SINGLE_REQUESTS // scale))
    encode_began = time.perf_counter()
    bench.classifier.encoder.encode_requests(batched.requests)
    encode_s = time.perf_counter() - encode_began

    variants = [v for v in VARIANTS if v != "bf16" or native]
    for name in variants:
        for batch in BATCHES:
            bench.measure(name, batch, single if batch == 1 else batched)
    auto = "bf16" if native else "fp32"
    optimisations = _optimisations(bench, batched, auto)
    naive = _naive(bench, single.requests)
    tfidf = _tfidf_rows(batched.requests, single.requests, bench.repeats)

    at_32 = [r for r in bench.rows if r["batch"] == 32]
    best = max(at_32, key=lambda r: r["sequences_per_s"])
    auto_row = next(r for r in at_32 if r["variant"] == auto)
    ratio_to_naive = best["sequences_per_s"] / naive["sequences_per_s"]
    wall = time.perf_counter() - began
    targets = [
        _target(
            f"{auto} batch 32 real tokens/s ÷ {auto} bound",
            auto_row["ratio_to_bound"],
            BOUND_TARGET,
        ),
        _target(
            f"{best['variant']} batch 32 sequences/s ÷ naive pipeline", ratio_to_naive, NAIVE_TARGET
        ),
        _target("wall time of this benchmark (s)", wall, WALL_TARGET_S / scale, at_most=True),
    ]
    return {
        "machine": machine(),
        "hardware": {
            "fp32_gflops": round(gflops["fp32"] or 0.0, 1),
            "bf16_gflops": None if gflops["bf16"] is None else round(gflops["bf16"], 1),
            "native_bf16": native,
        },
        "model": {
            "directory": str(directory),
            **bench.shape,
            "vocab_size": len(bench.classifier.tokenizer),
        },
        "mix": {
            "requests": len(batched.requests),
            "mean_tokens": round(statistics.fmean(batched.lengths), 1),
            "median_tokens": statistics.median(batched.lengths),
            "max_tokens": max(batched.lengths),
            "min_tokens": min(batched.lengths),
            "encoding_ms_per_sequence": round(1000 * encode_s / len(batched.requests), 2),
        },
        "flops_per_sequence": round(batched.flops),
        "flops_formula": FLOPS_FORMULA,
        "rows": tfidf + bench.rows,
        "naive": naive,
        "ratio_to_naive": round(ratio_to_naive, 2),
        "ratio_to_naive_fp32": round(
            next(r for r in at_32 if r["variant"] == "fp32")["sequences_per_s"]
            / naive["sequences_per_s"],
            2,
        ),
        "optimisations": optimisations,
        "targets": targets,
        "repeats": bench.repeats,
        "wall_s": round(wall, 1),
    }


def format_report(result: dict[str, Any]) -> list[str]:
    """Readable lines: rows, optimisations, then each target with pass/short."""
    hw = result["hardware"]
    bf16 = f"{hw['bf16_gflops']} GFLOP/s" if hw["native_bf16"] else "no native bf16"
    lines = [f"matmul: fp32 {hw['fp32_gflops']} GFLOP/s, bf16 {bf16}"]
    for row in result["rows"]:
        tokens = row["real_tokens_per_s"]
        per = f"{tokens} real tokens/s" if tokens is not None else f"{row['words_per_s']} words/s"
        ratio = row["ratio_to_bound"]
        bound = f"{ratio:.0%} of {row['bound']} bound" if ratio is not None else row["bound"]
        lines.append(
            f"{row['model']} {row['variant']} batch {row['batch']}: "
            f"{row['sequences_per_s']} seq/s, {per}, {bound}"
        )
    naive = result["naive"]
    lines.append(
        f"naive pipeline: {naive['sequences_per_s']} seq/s, "
        f"{naive['real_tokens_per_s']} real tokens/s"
    )
    for item in result["optimisations"]:
        verdict = "kept" if item["kept"] else "not kept"
        lines.append(
            f"{item['name']}: {item['before']} → {item['after']} {item['unit']} ({verdict}; "
            f"{item['accuracy_note']})"
        )
    for target in result["targets"]:
        verdict = "pass" if target["passed"] else "short"
        lines.append(f"{target['name']}: {target['value']} (target {target['target']}): {verdict}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=PROJECT_ROOT / "var" / "bench")
    parser.add_argument("--quick", action="store_true", help="half the requests and timings")
    parser.add_argument("--json", type=Path, help="also write the result there")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target falls short")
    args = parser.parse_args(argv)
    result = run(args.cache, quick=args.quick)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
    print("\n".join(format_report(result)))
    short = not all(target["passed"] for target in result["targets"])
    return 1 if args.strict and short else 0


if __name__ == "__main__":
    sys.exit(main())
