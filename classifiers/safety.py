"""Safety rules: patterns that can only raise a request's urgency, never lower it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from classifiers.base import LabelScores, Prediction
from classifiers.taxonomy import urgency_rank
from classifiers.text import fold
from worker.config import StrictModel, load_yaml_model


class SafetyRule(StrictModel):
    """A named set of patterns and the urgency a match raises a request to."""

    name: str = Field(min_length=1)
    raise_to: Literal["haute", "critique"]
    description: str = ""
    patterns: tuple[str, ...] = Field(min_length=1)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex: {exc}") from exc
        return patterns

    def matches(self, folded_text: str) -> bool:
        return any(re.search(pattern, folded_text) for pattern in self.patterns)


class SafetyRules(StrictModel):
    """The rule set of `config/safety.yaml`."""

    rules: tuple[SafetyRule, ...] = ()

    def apply(self, prediction: Prediction, text: str) -> Prediction:
        """Raise the prediction's urgency to the highest level a matching rule demands."""
        folded = fold(text)
        matched = [rule for rule in self.rules if rule.matches(folded)]
        if not matched:
            return prediction
        target = max((rule.raise_to for rule in matched), key=urgency_rank)
        if urgency_rank(target) <= urgency_rank(prediction.urgency.label):
            return prediction
        urgency = LabelScores(
            label=target, confidence=1.0, probabilities=prediction.urgency.probabilities
        )
        return prediction.model_copy(
            update={
                "urgency": urgency,
                "model_urgency": prediction.urgency.label,
                "safety_rules": tuple(rule.name for rule in matched if rule.raise_to == target),
            }
        )


def load_safety_rules(path: Path) -> SafetyRules:
    """Load and validate the safety rules file."""
    return load_yaml_model(path, SafetyRules)
