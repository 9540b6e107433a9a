"""The shipped default model (models/default): its format, its size, and the issue's target.

These tests read the committed model; they never retrain it. The department target is measured
on the held-out `test/` split, which no training or tuning decision has seen.
"""

from __future__ import annotations

import json

import pytest

from classifiers import Taxonomy, load_classifier
from classifiers.dataset import load_labelled
from classifiers.evaluation import evaluate
from classifiers.model_dir import read_model_files
from classifiers.safety import SafetyRules
from tests.conftest import DATA_DIR
from worker.config import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "models" / "default"
COMPARISON = PROJECT_ROOT / "docs" / "example-report"
DEPARTMENT_MACRO_F1_TARGET = 0.92
MAX_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def test_scores(taxonomy: Taxonomy, safety_rules: SafetyRules) -> dict[str, float]:
    classifier = load_classifier(SHIPPED, taxonomy)
    scores = evaluate(
        classifier, load_labelled([DATA_DIR / "test"], taxonomy), taxonomy, safety_rules
    )
    return {"department": scores.department.macro_f1, "urgency": scores.urgency.macro_f1}


class TestShippedModel:
    def test_loads_with_its_card_and_its_test_report(self, taxonomy: Taxonomy) -> None:
        """A checked model directory, its model card, and a report on the test split."""
        read_model_files(SHIPPED, taxonomy)
        assert (SHIPPED / "MODEL_CARD.md").is_file()
        report = json.loads((SHIPPED / "report" / "report.json").read_text(encoding="utf-8"))
        assert report["data"]["folders"] == ["data/test"]

    def test_fits_in_50_mb(self) -> None:
        size = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
        assert size <= MAX_BYTES

    def test_report_figures_are_the_model_s_own(self, test_scores: dict[str, float]) -> None:
        """The committed report was produced by the committed model on the committed test split."""
        report = json.loads((SHIPPED / "report" / "report.json").read_text(encoding="utf-8"))
        stored = report["model"]["evaluation"]
        assert stored["department"]["macro_f1"] == pytest.approx(test_scores["department"])
        assert stored["urgency"]["macro_f1"] == pytest.approx(test_scores["urgency"])

    def test_beats_every_camembert_of_the_comparison(self, test_scores: dict[str, float]) -> None:
        """Every CamemBERT of the comparison report scores below the default (keep the best).

        The comparison (docs/example-report: CamemBERT from the pretrained base, with the
        random-initialisation run beside it) was run before inputs were pseudonymised; the
        default's score is measured here, on the same test split.
        """
        report = json.loads((COMPARISON / "report.json").read_text(encoding="utf-8"))
        camemberts = [report["model"], *report["compared"]]
        assert {model["kind"] for model in camemberts} == {"camembert"}
        scores = [model["evaluation"]["department"]["macro_f1"] for model in camemberts]
        assert all(test_scores["department"] > score for score in scores)

    @pytest.mark.xfail(
        strict=True,
        reason="issue 6 open: the best model reaches 0.867 department macro-F1 on test, not 0.92 "
        "(README: The default model)",
    )
    def test_reaches_the_department_target_on_the_test_split(
        self, test_scores: dict[str, float]
    ) -> None:
        assert test_scores["department"] >= DEPARTMENT_MACRO_F1_TARGET
