"""The classifier interface and the prediction it returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

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
