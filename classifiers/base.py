"""The classifier interface and the prediction it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from worker.request import Request


class LabelScores(BaseModel):
    """One head's answer: the chosen label, its confidence and every label's probability."""

    model_config = ConfigDict(frozen=True)

    label: str
    confidence: float = Field(ge=0.0, le=1.0)
    probabilities: dict[str, float]

    @classmethod
    def from_probabilities(cls, probabilities: dict[str, float]) -> LabelScores:
        label = max(probabilities, key=probabilities.__getitem__)
        return cls(label=label, confidence=probabilities[label], probabilities=probabilities)


class Evidence(BaseModel):
    """A word or phrase of the request that weighed in one head's choice, and its share."""

    model_config = ConfigDict(frozen=True)

    head: str
    text: str
    weight: float


class Prediction(BaseModel):
    """The classification of one request.

    `urgency` is the final urgency. When a safety rule raised it, `safety_rules` names the rules,
    `model_urgency` keeps what the model said, and the urgency confidence is 1.0: the rule's match
    is a decision, not an estimate. `evidence` holds the words that weighed most, when the
    classifier explains itself (it quotes the request: never log it).
    """

    model_config = ConfigDict(frozen=True)

    request_id: str
    department: LabelScores
    urgency: LabelScores
    model_version: str
    model_urgency: str | None = None
    safety_rules: tuple[str, ...] = ()
    evidence: tuple[Evidence, ...] = ()


@runtime_checkable
class Classifier(Protocol):
    """A batch of requests in, one prediction each out, in the same order."""

    @property
    def version(self) -> str: ...

    def predict(self, requests: Sequence[Request]) -> list[Prediction]: ...


@runtime_checkable
class Explainer(Protocol):
    """A classifier that can say which words weighed most in its predictions."""

    def explain(
        self, requests: Sequence[Request], predictions: Sequence[Prediction]
    ) -> list[tuple[Evidence, ...]]: ...


def explain(
    classifier: Classifier, requests: Sequence[Request], predictions: Sequence[Prediction]
) -> list[Prediction]:
    """`predictions` with their evidence, when `classifier` can explain itself."""
    if not isinstance(classifier, Explainer) or not predictions:
        return list(predictions)
    evidence = classifier.explain(requests, predictions)
    return [
        prediction.model_copy(update={"evidence": found})
        for prediction, found in zip(predictions, evidence, strict=True)
    ]


def predictions_from_probabilities(
    requests: Sequence[Request],
    probabilities: Mapping[str, Any],
    labels: Mapping[str, Sequence[str]],
    version: str,
) -> list[Prediction]:
    """One `Prediction` per request from per-head probability rows (arrays of labels' columns)."""
    predictions = []
    for row, request in enumerate(requests):
        heads = {
            head: LabelScores.from_probabilities(
                dict(zip(labels[head], map(float, probabilities[head][row]), strict=True))
            )
            for head in ("department", "urgency")
        }
        predictions.append(
            Prediction(
                request_id=request.id,
                department=heads["department"],
                urgency=heads["urgency"],
                model_version=version,
            )
        )
    return predictions
