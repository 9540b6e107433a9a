"""The label set: departments and urgencies, loaded from `config/taxonomy.yaml`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from worker.config import StrictModel, load_yaml_model

URGENCY_ORDER = ("basse", "normale", "haute", "critique")
"""Urgencies from least to most urgent; safety rules may only move a request rightwards."""


class LabelInfo(StrictModel):
    """What agents read about a label."""

    display_name: str = Field(min_length=1)
    description: str = Field(min_length=1)


class Taxonomy(StrictModel):
    """Departments and urgencies, each in the order of the classifier's heads."""

    departments: dict[str, LabelInfo]
    urgencies: dict[str, LabelInfo]

    @field_validator("departments")
    @classmethod
    def _department_keys(cls, value: dict[str, LabelInfo]) -> dict[str, LabelInfo]:
        if len(value) < 2:
            raise ValueError("at least two departments are needed")
        for key in value:
            if not key.replace("_", "").isalpha() or not key.islower():
                raise ValueError(f"department key {key!r} must be lower-case letters and '_'")
        return value

    @field_validator("urgencies")
    @classmethod
    def _urgency_keys(cls, value: dict[str, LabelInfo]) -> dict[str, LabelInfo]:
        if set(value) != set(URGENCY_ORDER):
            raise ValueError(f"urgencies must be exactly {', '.join(URGENCY_ORDER)}")
        return value

    @property
    def department_keys(self) -> tuple[str, ...]:
        return tuple(self.departments)

    @property
    def urgency_keys(self) -> tuple[str, ...]:
        return tuple(self.urgencies)


def load_taxonomy(path: Path) -> Taxonomy:
    """Load and validate the taxonomy file; raises `ConfigError` naming the problem."""
    return load_yaml_model(path, Taxonomy)


def urgency_rank(urgency: str) -> int:
    """Position of `urgency` in `URGENCY_ORDER` (higher is more urgent)."""
    return URGENCY_ORDER.index(urgency)
