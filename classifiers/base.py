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


class Prediction(BaseModel):
    """The classification of one request.

    `urgency` is the final urgency. When a safety rule raised it, `safety_rules` names the rules,
    `model_urgency` keeps what the model said, and the urgency confidence is 1.0: the rule's match
    is a decision, not an estimate.
    """

    model_config = ConfigDict(frozen=True)

    request_id: str
    department: LabelScores
    urgency: LabelScores
    model_version: str
    model_urgency: str | None = None
    safety_rules: tuple[str, ...] = ()


@runtime_checkable
class Classifier(Protocol):
    """A batch of requests in, one prediction each out, in the same order."""

    @property
    def version(self) -> str: ...

    def predict(self, requests: Sequence[Request]) -> list[Prediction]: ...


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
