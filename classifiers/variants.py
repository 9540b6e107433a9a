"""Faster inference variants of a CamemBERT classifier, each kept only if it costs no accuracy.

bf16 autocast (on a CPU with native bf16) and int8 dynamic quantisation of the linear layers
change the arithmetic, so they can change predictions. After fine-tuning, `check_variants`
evaluates each variant on the validation data against fp32; a variant is *allowed* when neither
head loses more than `MAX_MACRO_F1_LOSS` (0.5 macro-F1 point). The verdicts are stored in the
model's `metadata.json` (`inference_variants`), and `allowed_options` turns a requested setting
into the one the model permits: a variant that was refused, or never checked, falls back to
fp32 with a warning in the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from classifiers.camembert import CamembertClassifier, InferenceOptions, native_bf16
from classifiers.dataset import LabelledRequest
from classifiers.evaluation import Evaluation, evaluate
from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy

log = structlog.get_logger(__name__)

MAX_MACRO_F1_LOSS = 0.005
METADATA_KEY = "inference_variants"


def _variant_options(base: InferenceOptions, name: str) -> InferenceOptions:
    if name == "bf16":
        return dataclasses.replace(base, dtype="bf16", quantize="none")
    return dataclasses.replace(base, dtype="fp32", quantize="int8")


def check_variants(
    classifier: CamembertClassifier,
    examples: Sequence[LabelledRequest],
    taxonomy: Taxonomy,
    safety: SafetyRules,
    fp32_scores: Evaluation | None = None,
) -> dict[str, dict[str, Any]]:
    """Each variant's macro-F1 per head against fp32 on `examples`, and whether it is allowed.

    `fp32_scores`, when the caller already has them, are the fp32 scores on the same examples.
    bf16 is checked only where the CPU has it natively (emulated bf16 is slower than fp32, so it
    would never be used); it is then recorded as unchecked.
    """
    reference_options = dataclasses.replace(classifier.options, dtype="fp32", quantize="none")
    if fp32_scores is None:
        reference = classifier.with_options(reference_options)
        fp32_scores = evaluate(reference, examples, taxonomy, safety)
    baseline = fp32_scores
    verdicts: dict[str, dict[str, Any]] = {}
    for name in ("bf16", "int8"):
        if name == "bf16" and not native_bf16():
            verdicts[name] = {"checked": False, "allowed": False, "why": "no native bf16 here"}
            continue
        variant = classifier.with_options(_variant_options(reference_options, name))
        scores = evaluate(variant, examples, taxonomy, safety)
        losses = {
            "department": baseline.department.macro_f1 - scores.department.macro_f1,
            "urgency": baseline.urgency.macro_f1 - scores.urgency.macro_f1,
        }
        allowed = all(loss <= MAX_MACRO_F1_LOSS for loss in losses.values())
        verdicts[name] = {
            "checked": True,
            "allowed": allowed,
            "macro_f1_loss": {head: round(loss, 4) for head, loss in losses.items()},
            "examples": len(examples),
        }
    return verdicts


def allowed_options(requested: InferenceOptions, metadata: Mapping[str, Any]) -> InferenceOptions:
    """`requested`, with any variant the model's checks did not allow replaced by fp32."""
    verdicts = metadata.get(METADATA_KEY) or {}
    options = requested
    if requested.quantize == "int8" and not verdicts.get("int8", {}).get("allowed", False):
        log.warning("model.variant_refused", variant="int8", verdict=verdicts.get("int8"))
        options = dataclasses.replace(options, quantize="none")
    if requested.dtype == "bf16" and not verdicts.get("bf16", {}).get("allowed", False):
        log.warning("model.variant_refused", variant="bf16", verdict=verdicts.get("bf16"))
        options = dataclasses.replace(options, dtype="fp32")
    if requested.dtype == "auto" and not verdicts.get("bf16", {}).get("allowed", False):
        options = dataclasses.replace(options, dtype="fp32")  # auto: bf16 only where allowed
    return options
