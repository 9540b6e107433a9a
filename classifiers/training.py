"""Training a model directory from labelled folders and already-loaded examples (the baseline)."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sklearn

from classifiers import baseline
from classifiers.baseline import HEADS, TfidfBaseline
from classifiers.calibration import expected_calibration_error, fit_temperature, softmax
from classifiers.dataset import LabelledRequest, fingerprint, load_labelled
from classifiers.evaluation import Evaluation, evaluate
from classifiers.model_card import render_model_card
from classifiers.model_dir import write_model_directory
from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from classifiers.text import classifier_input
from worker.errors import ModelError
from worker.parsing import ParseLimits


@dataclass(frozen=True)
class BaselineOptions:
    """Hyper-parameters of the baseline; `__post_init__` names a bad value."""

    regularisation: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.regularisation > 0:
            raise ValueError(f"regularisation must be > 0, got {self.regularisation}")


@dataclass(frozen=True)
class TrainingResult:
    directory: Path
    version: str
    examples: int
    validation: Evaluation | None


def _calibrate(
    model: TfidfBaseline, examples: Sequence[LabelledRequest]
) -> dict[str, dict[str, float]]:
    """Fit each head's temperature on validation data; return ECE before and after."""
    logits = model.logits([classifier_input(e.request) for e in examples])
    report: dict[str, dict[str, float]] = {}
    for head in HEADS:
        index = {label: i for i, label in enumerate(model.labels[head])}
        truth = np.array([index[getattr(e, head)] for e in examples], dtype=np.int64)
        temperature = fit_temperature(logits[head], truth)
        report[head] = {
            "temperature": temperature,
            "ece_before": expected_calibration_error(softmax(logits[head]), truth),
            "ece_after": expected_calibration_error(softmax(logits[head], temperature), truth),
        }
        model.temperatures[head] = temperature
    return report


def examples_fingerprint(examples: Iterable[LabelledRequest]) -> str:
    """`dataset.fingerprint`, extended to examples whose `path` names no file.

    Such an example (a stored correction, say) is digested from its request id, text and labels.
    Examples all read from files keep exactly the digest `dataset.fingerprint` gives them.
    """
    entries = list(examples)
    files = [e for e in entries if e.path.is_file()]
    if len(files) == len(entries):
        return fingerprint(entries)
    loaded = sorted(
        hashlib.sha256(
            f"{e.request.id}|{e.request.subject}|{e.request.classifier_text}|"
            f"{e.department}|{e.urgency}".encode()
        ).hexdigest()
        for e in entries
        if not e.path.is_file()
    )
    return hashlib.sha256("\n".join([fingerprint(files), *loaded]).encode()).hexdigest()


def train_baseline(
    data: Sequence[Path],
    out: Path,
    taxonomy: Taxonomy,
    safety: SafetyRules,
    *,
    validation: Sequence[Path] = (),
    options: BaselineOptions | None = None,
    limits: ParseLimits | None = None,
    examples: Sequence[LabelledRequest] = (),
    examples_source: str = "already loaded",
) -> TrainingResult:
    """Train the TF-IDF baseline on `data` plus `examples`, calibrate and score it on
    `validation`, write `out`.

    `examples` are labelled requests already in memory (corrections, for instance); the
    metadata records how many there were and `examples_source`, and the training fingerprint
    covers them. The directory is written next to `out` and renamed into place, so an
    interrupted run never leaves a half-written model where the worker would load it.
    """
    options = options or BaselineOptions()
    loaded = list(examples)
    training = load_labelled(data, taxonomy, limits) + loaded
    if len(training) < 2:
        raise ModelError("at least two labelled requests are needed to train")
    held_out = load_labelled(validation, taxonomy, limits) if validation else []
    digest = examples_fingerprint(training)
    created = datetime.now(UTC)
    version = f"{baseline.KIND}-{created:%Y%m%d}-{digest[:8]}"
    labels = {"department": taxonomy.department_keys, "urgency": taxonomy.urgency_keys}
    model = TfidfBaseline.fit(
        [classifier_input(e.request) for e in training],
        {"department": [e.department for e in training], "urgency": [e.urgency for e in training]},
        labels,
        regularisation=options.regularisation,
        seed=options.seed,
        version=version,
    )
    calibration = _calibrate(model, held_out) if held_out else {}
    scores = evaluate(model, held_out, taxonomy, safety) if held_out else None
    metadata = {
        "kind": baseline.KIND,
        "version": version,
        "created_at": created.isoformat(),
        "training_data": {
            "folders": [str(folder) for folder in data],
            "validation_folders": [str(folder) for folder in validation],
            "examples": len(training),
            "validation_examples": len(held_out),
            "fingerprint": digest,
            # Only when given, so that folder-only metadata stays as it was.
            **({"loaded": {"examples": len(loaded), "source": examples_source}} if loaded else {}),
        },
        "hyperparameters": {"regularisation": options.regularisation, "seed": options.seed},
        "calibration": calibration,
        "metrics": {"validation": scores.to_dict()} if scores else {},
        "library_versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }
    write_model_directory(model, out, metadata, render_model_card(metadata, taxonomy))
    return TrainingResult(out, version, len(training), scores)
