"""Shared fixtures: the project's configuration, a baseline trained once per session, helpers."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from classifiers import Taxonomy, load_taxonomy
from classifiers.base import LabelScores, Prediction
from classifiers.baseline import TfidfBaseline
from classifiers.safety import SafetyRules, load_safety_rules
from classifiers.training import train_baseline
from worker.config import PROJECT_ROOT
from worker.request import Channel, Request
from worker.routing import RoutingConfig, load_routing

FIXTURES = Path(__file__).parent / "fixtures"

LogEntries = list[MutableMapping[str, Any]]
CONFIG_DIR = PROJECT_ROOT / "config"
DATA_DIR = PROJECT_ROOT / "data"


@pytest.fixture(scope="session")
def taxonomy() -> Taxonomy:
    return load_taxonomy(CONFIG_DIR / "taxonomy.yaml")


@pytest.fixture(scope="session")
def safety_rules() -> SafetyRules:
    return load_safety_rules(CONFIG_DIR / "safety.yaml")


@pytest.fixture(scope="session")
def routing_config(taxonomy: Taxonomy) -> RoutingConfig:
    return load_routing(CONFIG_DIR / "routing.yaml", taxonomy)


@pytest.fixture(scope="session")
def baseline_model_dir(
    tmp_path_factory: pytest.TempPathFactory, taxonomy: Taxonomy, safety_rules: SafetyRules
) -> Path:
    """The baseline trained on the starter corpus, once for the whole session."""
    out = tmp_path_factory.mktemp("models") / "baseline"
    train_baseline(
        [DATA_DIR / "train"], out, taxonomy, safety_rules, validation=[DATA_DIR / "validation"]
    )
    return out


@pytest.fixture(scope="session")
def baseline_model(baseline_model_dir: Path, taxonomy: Taxonomy) -> TfidfBaseline:
    from classifiers.model_dir import read_model_files

    return TfidfBaseline.load(read_model_files(baseline_model_dir, taxonomy))


@pytest.fixture
def logs() -> Iterator[LogEntries]:
    """Log events at every level, whatever level an earlier test configured."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(wrapper_class=wrapper)


def make_request(
    text: str = "Bonjour, le lampadaire est éteint.",
    *,
    subject: str = "Lampadaire",
    request_id: str = "em-test",
    channel: Channel = Channel.EMAIL,
) -> Request:
    """A minimal valid request for unit tests that do not need a parser."""
    return Request(
        id=request_id,
        channel=channel,
        received_at=datetime(2025, 6, 3, 10, 12, tzinfo=UTC),
        subject=subject,
        classifier_text=text,
        full_text=text,
    )


def make_prediction(
    department: str = "voirie",
    urgency: str = "normale",
    *,
    confidence: float = 0.9,
    urgency_confidence: float = 0.8,
    request_id: str = "em-test",
    taxonomy: Taxonomy | None = None,
) -> Prediction:
    """A prediction with `confidence` on `department`, the rest spread over the other labels."""
    departments: Sequence[str] = taxonomy.department_keys if taxonomy else (department, "accueil")
    urgencies: Sequence[str] = ("basse", "normale", "haute", "critique")

    def spread(labels: Sequence[str], chosen: str, mass: float) -> dict[str, float]:
        others = [label for label in labels if label != chosen]
        rest = (1.0 - mass) / len(others) if others else 0.0
        return {label: (mass if label == chosen else rest) for label in labels}

    return Prediction(
        request_id=request_id,
        department=LabelScores(
            label=department,
            confidence=confidence,
            probabilities=spread(departments, department, confidence),
        ),
        urgency=LabelScores(
            label=urgency,
            confidence=urgency_confidence,
            probabilities=spread(urgencies, urgency, urgency_confidence),
        ),
        model_version="test-model",
    )
