"""The evaluation report of `triage evaluate --report DIR`: Markdown, JSON and confusion PNGs.

A report holds only labels, counts and scores, never a request's text or subject, so it can be
committed or mailed to IT. The model is scored with `classifiers.evaluation`; calibration is
measured on the raw logits, and the review-threshold table replays the routing rule
(`confidence < threshold` goes to review) on the calibrated department confidences.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from classifiers import load_classifier
from classifiers.base import Classifier, Prediction
from classifiers.baseline import TfidfBaseline
from classifiers.calibration import FloatArray, expected_calibration_error, softmax
from classifiers.dataset import LabelledRequest, load_labelled
from classifiers.evaluation import Evaluation, HeadReport, evaluate
from classifiers.model_dir import read_model_files
from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from classifiers.text import classifier_input
from worker.request import Request

if TYPE_CHECKING:
    from worker.parsing import ParseLimits
    from worker.routing import RoutingConfig

REPORT_MARKDOWN = "report.md"
REPORT_JSON = "report.json"
CONFUSION_PNG = "confusion-{head}.png"
HEADS = ("department", "urgency")
THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30, 0.35, ..., 0.95
CRITIQUE = "critique"
PNG_DPI = 80


@runtime_checkable
class RequestLogits(Protocol):
    """A model whose raw per-head scores are computed from requests (CamembertClassifier).

    The baseline's `logits` takes classifier texts instead; both signatures look alike at run
    time, so `raw_logits` checks for the baseline's class first and falls back to this one.
    """

    def logits(self, requests: Sequence[Request]) -> dict[str, FloatArray]: ...


def raw_logits(classifier: Classifier, requests: Sequence[Request]) -> dict[str, FloatArray] | None:
    """Per-head scores before temperature scaling, or None for a model that exposes none."""
    if isinstance(classifier, TfidfBaseline):
        return classifier.logits([classifier_input(request) for request in requests])
    if isinstance(classifier, RequestLogits):
        return classifier.logits(requests)
    return None


@dataclass(frozen=True)
class Calibration:
    """One head's expected calibration error at temperature 1 and at the stored temperature."""

    head: str
    temperature: float
    ece_before: float
    ece_after: float


@dataclass(frozen=True)
class ThresholdRow:
    """Routing at one review threshold: share sent to review, accuracy of the rest."""

    threshold: float
    review_share: float
    routed: int
    routed_accuracy: float | None  # None when every request goes to review
    configured: bool = False


@dataclass(frozen=True)
class ModelReport:
    """Everything measured for one model directory on the report's data."""

    kind: str
    version: str
    evaluation: Evaluation
    calibration: tuple[Calibration, ...]
    thresholds: tuple[ThresholdRow, ...]
    as_configured: ThresholdRow | None
    notes: tuple[str, ...]
    description: str = ""

    def critique_recall(self) -> dict[str, float | None]:
        model = self.evaluation.urgency.per_class.get(CRITIQUE)
        rules = self.evaluation.urgency_with_rules.per_class.get(CRITIQUE)
        return {
            "model": model.recall if model else None,
            "model_with_safety_rules": rules.recall if rules else None,
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "version": self.version,
            "evaluation": self.evaluation.to_dict(),
            "critique_recall": self.critique_recall(),
            "calibration": [vars(row) for row in self.calibration],
            "review_thresholds": [vars(row) for row in self.thresholds],
            "review_as_configured": vars(self.as_configured) if self.as_configured else None,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Report:
    """The model's report and, when given, the baseline's on the same labelled requests."""

    folders: tuple[str, ...]
    examples: int
    generated_at: str
    review_threshold: float | None
    model: ModelReport
    baseline: ModelReport | None = None
    others: tuple[ModelReport, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "generated_at": self.generated_at,
            "data": {"folders": list(self.folders), "examples": self.examples},
            "review_threshold": self.review_threshold,
            "model": self.model.to_dict(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "compared": [other.to_dict() for other in self.others],
        }


def _row(threshold: float, routed: NDArray[np.bool_], hits: NDArray[np.bool_]) -> ThresholdRow:
    return ThresholdRow(
        threshold=float(threshold),
        review_share=float(1.0 - routed.mean()) if len(routed) else 0.0,
        routed=int(routed.sum()),
        routed_accuracy=float(hits[routed].mean()) if routed.any() else None,
    )


def threshold_rows(
    confidences: Sequence[float],
    correct: Sequence[bool],
    thresholds: Sequence[float] = THRESHOLDS,
    configured: float | None = None,
) -> tuple[ThresholdRow, ...]:
    """For each threshold, the share below it (review) and the accuracy of the others.

    `configured` is marked, and added as a row when it is not one of `thresholds`.
    """
    confidence = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.bool_)
    rows = []
    for threshold in sorted({*thresholds, *([configured] if configured is not None else [])}):
        row = _row(threshold, confidence >= threshold, hits)
        marked = configured is not None and abs(threshold - configured) < 1e-9
        rows.append(dataclasses.replace(row, configured=marked))
    return tuple(rows)


class _Recording:
    """A classifier that keeps its predictions, so the report needs one prediction pass."""

    def __init__(self, inner: Classifier) -> None:
        self.inner = inner
        self.predictions: list[Prediction] = []

    @property
    def version(self) -> str:
        return self.inner.version

    def predict(self, requests: Sequence[Request]) -> list[Prediction]:
        predictions = self.inner.predict(requests)
        self.predictions.extend(predictions)
        return predictions


def _calibration(
    logits: dict[str, FloatArray],
    labels: dict[str, tuple[str, ...]],
    temperatures: dict[str, float],
    examples: Sequence[LabelledRequest],
) -> tuple[Calibration, ...]:
    rows = []
    for head in HEADS:
        index = {label: i for i, label in enumerate(labels[head])}
        truth = np.array([index[getattr(e, head)] for e in examples], dtype=np.int64)
        rows.append(
            Calibration(
                head=head,
                temperature=temperatures[head],
                ece_before=expected_calibration_error(softmax(logits[head]), truth),
                ece_after=expected_calibration_error(
                    softmax(logits[head], temperatures[head]), truth
                ),
            )
        )
    return tuple(rows)


def _overlap_notes(metadata: dict[str, object], folders: Sequence[Path]) -> tuple[str, ...]:
    """Warn when the evaluation data is data the model was trained or calibrated on."""
    training = metadata.get("training_data")
    if not isinstance(training, dict):
        return ()
    evaluated = {folder.resolve() for folder in folders}
    notes = []
    if evaluated & {Path(str(f)).resolve() for f in training.get("folders", [])}:
        notes.append("evaluated on its own training data: the scores are optimistic")
    if evaluated & {Path(str(f)).resolve() for f in training.get("validation_folders", [])}:
        notes.append("temperatures were fitted on this data: ECE after scaling is optimistic")
    return tuple(notes)


def _model_report(
    directory: Path,
    examples: Sequence[LabelledRequest],
    folders: Sequence[Path],
    taxonomy: Taxonomy,
    safety: SafetyRules,
    routing: RoutingConfig | None,
) -> ModelReport:
    files = read_model_files(directory, taxonomy)
    recording = _Recording(load_classifier(directory, taxonomy))
    evaluation = evaluate(recording, examples, taxonomy, safety)
    requests = [example.request for example in examples]
    logits = raw_logits(recording.inner, requests)
    calibration = _calibration(logits, files.labels, files.temperatures, examples) if logits else ()
    predictions = recording.predictions
    confidences = [p.department.confidence for p in predictions]
    correct = [
        p.department.label == e.department for p, e in zip(predictions, examples, strict=True)
    ]
    configured = routing.review_threshold if routing else None
    as_configured = None
    if routing is not None:
        # Departments may override the threshold (config/routing.yaml): replay the real rule.
        own = [routing.departments[p.department.label].review_threshold for p in predictions]
        limits = np.array([configured if t is None else t for t in own], dtype=np.float64)
        routed = np.asarray(confidences, dtype=np.float64) >= limits
        row = _row(routing.review_threshold, routed, np.asarray(correct, dtype=np.bool_))
        as_configured = dataclasses.replace(row, configured=True)
    base = files.metadata.get("base_checkpoint")
    return ModelReport(
        description=f"{files.kind} fine-tuned from {base}" if base else files.kind,
        kind=files.kind,
        version=files.version,
        evaluation=evaluation,
        calibration=calibration,
        thresholds=threshold_rows(confidences, correct, configured=configured),
        as_configured=as_configured,
        notes=_overlap_notes(files.metadata, folders),
    )


def build_report(
    model_dir: Path,
    folders: Sequence[Path],
    taxonomy: Taxonomy,
    safety: SafetyRules,
    *,
    baseline_dir: Path | None = None,
    compare: Sequence[Path] = (),
    routing: RoutingConfig | None = None,
    limits: ParseLimits | None = None,
) -> Report:
    """Score `model_dir` (and `baseline_dir`, unless it is the same directory) on `folders`.

    Each directory of `compare` is scored too, as one more column of the comparison table.
    """
    examples = load_labelled(folders, taxonomy, limits)
    model = _model_report(model_dir, examples, folders, taxonomy, safety, routing)
    baseline = None
    if baseline_dir is not None and baseline_dir.resolve() != model_dir.resolve():
        baseline = _model_report(baseline_dir, examples, folders, taxonomy, safety, routing)
    others = tuple(
        _model_report(directory, examples, folders, taxonomy, safety, routing)
        for directory in compare
    )
    return Report(
        folders=tuple(str(folder) for folder in folders),
        examples=len(examples),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        review_threshold=routing.review_threshold if routing else None,
        model=model,
        baseline=baseline,
        others=others,
    )


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _head_table(head: HeadReport) -> list[str]:
    rows = [
        [f"`{label}`", _score(s.precision), _score(s.recall), _score(s.f1), str(s.support)]
        for label, s in head.per_class.items()
    ]
    return [
        f"### {head.name}",
        "",
        f"accuracy **{head.accuracy:.3f}**, macro-F1 **{head.macro_f1:.3f}**",
        "",
        *_table(("label", "precision", "recall", "F1", "support"), rows),
        "",
    ]


def _confusion_table(head: HeadReport) -> list[str]:
    rows = [
        [f"`{label}`", *(str(n) for n in counts)]
        for label, counts in zip(head.labels, head.confusion, strict=True)
    ]
    return _table(("truth \\ predicted", *head.labels), rows)


def _threshold_cells(name: str, row: ThresholdRow) -> list[str]:
    share = f"{100 * row.review_share:.1f} %"
    return [name, share, str(row.routed), _score(row.routed_accuracy)]


def _metrics(m: ModelReport) -> dict[str, float | None]:
    e = m.evaluation
    return {
        "department accuracy": e.department.accuracy,
        "department macro-F1": e.department.macro_f1,
        "urgency accuracy": e.urgency.accuracy,
        "urgency macro-F1": e.urgency.macro_f1,
        "urgency macro-F1 (+ safety rules)": e.urgency_with_rules.macro_f1,
        "critique recall (+ safety rules)": m.critique_recall()["model_with_safety_rules"],
    }


def _comparison(model: ModelReport, baseline: ModelReport) -> list[str]:
    ours, theirs = _metrics(model), _metrics(baseline)
    rows = []
    for name, value in ours.items():
        other = theirs[name]
        delta = "—" if value is None or other is None else f"{100 * (value - other):+.1f}"
        rows.append([name, _score(value), _score(other), delta])
    return _table(("metric", "model", "baseline", "difference (points)"), rows)


def _all_models(report: Report) -> list[str]:
    """One column per model: the report's model, the baseline, then the compared ones."""
    named = [("model", report.model)]
    named += [("baseline", report.baseline)] if report.baseline else []
    named += [(f"compared {i}", m) for i, m in enumerate(report.others, 1)]
    table = [_metrics(m) for _, m in named]
    rows = [[name, *(_score(t[name]) for t in table)] for name in table[0]]
    header = ("metric", *(name for name, _ in named))
    notes = [f"- {name}: `{m.version}`, {m.description}" for name, m in named]
    return [*_table(header, rows), "", *notes]


def render_markdown(report: Report) -> str:
    """The readable report; image links are relative to the report's folder."""
    model, baseline = report.model, report.baseline
    critique = model.critique_recall()
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{model.version}` (kind `{model.kind}`)",
        *([f"- baseline: `{baseline.version}` (kind `{baseline.kind}`)"] if baseline else []),
        f"- data: {', '.join(f'`{f}`' for f in report.folders)}: {report.examples} labelled "
        "requests",
        f"- generated: {report.generated_at}",
        *(f"- note: {note}" for note in model.notes),
        "",
        f"**critique recall (model + safety rules): {_score(critique['model_with_safety_rules'])}**"
        f" (model alone: {_score(critique['model'])})",
        "",
    ]
    if baseline:
        lines += ["## Model against baseline", "", *_comparison(model, baseline), ""]
    if report.others:
        lines += ["## All models on the same requests", "", *_all_models(report), ""]
    lines += ["## Scores per class", ""]
    for head in (model.evaluation.department, model.evaluation.urgency):
        lines += _head_table(head)
    lines += _head_table(model.evaluation.urgency_with_rules)
    lines += [
        "## Calibration",
        "",
        "Expected calibration error (10 bins) at temperature 1 and at the stored temperature.",
        "",
    ]
    calibrated = [(name, m) for name, m in (("model", model), ("baseline", baseline)) if m]
    rows = [
        [name, row.head, f"{row.temperature:.3f}", _score(row.ece_before), _score(row.ece_after)]
        for name, m in calibrated
        for row in m.calibration
    ]
    lines += [*_table(("model", "head", "temperature", "ECE before", "ECE after"), rows), ""]
    lines += [
        "## Review threshold",
        "",
        "A request whose department confidence is below the threshold goes to human review; "
        "the others are routed automatically.",
        "",
    ]
    rows = [
        _threshold_cells(f"{r.threshold:.2f}" + (" ← routing.yaml" if r.configured else ""), r)
        for r in model.thresholds
    ]
    if model.as_configured:
        name = "as configured (with per-department thresholds)"
        rows.append(_threshold_cells(name, model.as_configured))
    header = ("threshold", "sent to review", "routed", "accuracy of routed")
    lines += [*_table(header, rows), "", "## Confusion matrices", ""]
    lines += [
        "Rows are the true labels, columns the model's predictions (before safety rules).",
        "",
    ]
    for head in (model.evaluation.department, model.evaluation.urgency):
        name = CONFUSION_PNG.format(head=head.name)
        lines += [f"### {head.name}", "", f"![{head.name}]({name})", ""]
        lines += [*_confusion_table(head), ""]
    return "\n".join(lines)


def plot_confusion(head: HeadReport, path: Path, dpi: int = PNG_DPI) -> None:
    """Draw one head's confusion matrix, counts in the cells, labels on both axes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; must precede pyplot's import
    import matplotlib.pyplot as plt

    counts = np.array(head.confusion, dtype=np.int64)
    size = 2.5 + 0.45 * len(head.labels)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    try:
        image = axes.imshow(counts, cmap="Blues")
        figure.colorbar(image, ax=axes, fraction=0.046)
        ticks = np.arange(len(head.labels))
        axes.set_xticks(ticks, labels=head.labels, rotation=45, ha="right")
        axes.set_yticks(ticks, labels=head.labels)
        axes.set_xlabel("predicted")
        axes.set_ylabel("truth")
        axes.set_title(f"{head.name}: confusion matrix")
        darkest = counts.max() if counts.size else 0
        for (row, column), count in np.ndenumerate(counts):
            colour = "white" if darkest and count > darkest / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=dpi)
    finally:
        plt.close(figure)


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write report.md, report.json and one confusion PNG per head into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for head in (report.model.evaluation.department, report.model.evaluation.urgency):
        path = out_dir / CONFUSION_PNG.format(head=head.name)
        plot_confusion(head, path)
        written.append(path)
    markdown = out_dir / REPORT_MARKDOWN
    markdown.write_text(render_markdown(report) + "\n", encoding="utf-8")
    data = out_dir / REPORT_JSON
    data.write_text(
        json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    return [markdown, data, *written]
