"""Metrics of a classifier against labelled requests, per head, and their text rendering."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from classifiers.base import Classifier, Prediction
from classifiers.dataset import LabelledRequest
from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from classifiers.text import classifier_input


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class HeadReport:
    """Accuracy, macro-F1, per-class scores and the confusion matrix of one head."""

    name: str
    labels: tuple[str, ...]
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion: list[list[int]] = field(default_factory=list)

    def recall_of(self, label: str) -> float:
        return self.per_class[label].recall

    def to_dict(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": {label: vars(scores) for label, scores in self.per_class.items()},
            "confusion": self.confusion,
            "labels": list(self.labels),
        }


def score_head(
    name: str, labels: Sequence[str], truth: Sequence[str], predicted: Sequence[str]
) -> HeadReport:
    """Scores of one head; labels absent from both truth and predictions score 0 with support 0."""
    label_list = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=label_list, zero_division=0
    )
    present = [i for i, label in enumerate(label_list) if label in set(truth)]
    return HeadReport(
        name=name,
        labels=tuple(label_list),
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(np.mean(f1[present])) if present else 0.0,
        per_class={
            label: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
            for i, label in enumerate(label_list)
        },
        confusion=confusion_matrix(truth, predicted, labels=label_list).tolist(),
    )


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on a labelled set: department, urgency, and urgency after safety rules."""

    model_version: str
    examples: int
    department: HeadReport
    urgency: HeadReport
    urgency_with_rules: HeadReport

    def to_dict(self) -> dict[str, object]:
        return {
            "model_version": self.model_version,
            "examples": self.examples,
            "department": self.department.to_dict(),
            "urgency": self.urgency.to_dict(),
            "urgency_with_safety_rules": self.urgency_with_rules.to_dict(),
        }


def evaluate(
    classifier: Classifier,
    examples: Sequence[LabelledRequest],
    taxonomy: Taxonomy,
    safety: SafetyRules,
    batch_size: int = 64,
) -> Evaluation:
    """Classify `examples` and score both heads; urgency is scored with and without the rules."""
    predictions: list[Prediction] = []
    requests = [example.request for example in examples]
    for start in range(0, len(requests), batch_size):
        predictions.extend(classifier.predict(requests[start : start + batch_size]))
    with_rules = [
        safety.apply(prediction, classifier_input(request))
        for prediction, request in zip(predictions, requests, strict=True)
    ]
    departments = [example.department for example in examples]
    urgencies = [example.urgency for example in examples]
    return Evaluation(
        model_version=classifier.version,
        examples=len(examples),
        department=score_head(
            "department", taxonomy.department_keys, departments,
            [p.department.label for p in predictions],
        ),
        urgency=score_head(
            "urgency", taxonomy.urgency_keys, urgencies, [p.urgency.label for p in predictions]
        ),
        urgency_with_rules=score_head(
            "urgency + safety rules", taxonomy.urgency_keys, urgencies,
            [p.urgency.label for p in with_rules],
        ),
    )  # fmt: skip


def format_head(report: HeadReport) -> str:
    """A plain-text table of one head's scores."""
    width = max(len(label) for label in report.labels) + 2
    lines = [
        f"{report.name}: accuracy {report.accuracy:.3f}  macro-F1 {report.macro_f1:.3f}",
        f"  {'label':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    for label, scores in report.per_class.items():
        lines.append(
            f"  {label:<{width}}{scores.precision:>10.3f}{scores.recall:>10.3f}"
            f"{scores.f1:>10.3f}{scores.support:>9d}"
        )
    return "\n".join(lines)


def format_evaluation(evaluation: Evaluation) -> str:
    """The report `triage evaluate` prints."""
    critique = evaluation.urgency_with_rules.per_class.get("critique")
    parts = [
        f"model {evaluation.model_version} on {evaluation.examples} requests",
        "",
        format_head(evaluation.department),
        "",
        format_head(evaluation.urgency),
        "",
        format_head(evaluation.urgency_with_rules),
    ]
    if critique is not None:
        parts += ["", f"critique recall (model + safety rules): {critique.recall:.3f}"]
    return "\n".join(parts)
