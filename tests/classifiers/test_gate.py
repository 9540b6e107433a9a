"""Tests of `classifiers/gate.py`: the verdict on a candidate model against the current one."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pytest

from classifiers import Taxonomy
from classifiers.evaluation import Evaluation, score_head
from classifiers.gate import GateVerdict, decide, render_gate_report

# Ten held-out requests: their departments and urgencies (four critique among them).
TRUTH_DEPARTMENTS = ("voirie",) * 5 + ("etat_civil",) * 5
TRUTH_URGENCIES = ("critique", "critique", "normale", "normale", "basse") * 2


def evaluation(
    taxonomy: Taxonomy,
    departments: Sequence[str],
    urgencies: Sequence[str],
    *,
    truth_urgencies: Sequence[str] = TRUTH_URGENCIES,
    version: str = "model",
) -> Evaluation:
    """An evaluation of predictions against the ten held-out requests (rules change nothing)."""
    urgency = score_head("urgency", taxonomy.urgency_keys, truth_urgencies, urgencies)
    return Evaluation(
        model_version=version,
        examples=len(TRUTH_DEPARTMENTS),
        department=score_head(
            "department", taxonomy.department_keys, TRUTH_DEPARTMENTS, departments
        ),
        urgency=urgency,
        urgency_with_rules=urgency,
    )


def _with_errors(truth: Sequence[str], wrong: dict[int, str]) -> list[str]:
    return [wrong.get(i, label) for i, label in enumerate(truth)]


@pytest.fixture
def perfect(taxonomy: Taxonomy) -> Evaluation:
    """The current model: every department and urgency right."""
    return evaluation(taxonomy, TRUTH_DEPARTMENTS, TRUTH_URGENCIES, version="current")


class TestDecide:
    """Promote iff department macro-F1 ≥ current − tolerance and critique recall is not lower."""

    def test_lower_f1_beyond_tolerance_is_refused(
        self, taxonomy: Taxonomy, perfect: Evaluation
    ) -> None:
        """Three departments wrong out of ten: refused, the reason quoting both figures."""
        departments = _with_errors(
            TRUTH_DEPARTMENTS, {0: "etat_civil", 1: "etat_civil", 5: "voirie"}
        )
        candidate = evaluation(taxonomy, departments, TRUTH_URGENCIES, version="candidate")
        verdict = decide(candidate, perfect)
        assert verdict.promote is False
        f1 = candidate.department.macro_f1
        assert f"department macro-F1 {f1:.3f} < 1.000 − 0.005" in verdict.reasons
        assert verdict.candidate["department_macro_f1"] == f1
        assert verdict.current["department_macro_f1"] == 1.0

    def test_lower_f1_within_tolerance_is_promoted(
        self, taxonomy: Taxonomy, perfect: Evaluation
    ) -> None:
        """A drop smaller than the tolerance passes, and the reason says ≥."""
        departments = _with_errors(TRUTH_DEPARTMENTS, {0: "etat_civil"})
        candidate = evaluation(taxonomy, departments, TRUTH_URGENCIES)
        drop = 1.0 - candidate.department.macro_f1
        verdict = decide(candidate, perfect, tolerance=drop + 0.01)
        assert verdict.promote is True
        assert verdict.reasons[0].startswith(f"department macro-F1 {1 - drop:.3f} ≥ 1.000")
        assert decide(candidate, perfect, tolerance=drop - 0.01).promote is False

    def test_equal_scores_are_promoted(self, taxonomy: Taxonomy, perfect: Evaluation) -> None:
        """A candidate exactly as good as the current model passes both checks."""
        candidate = evaluation(taxonomy, TRUTH_DEPARTMENTS, TRUTH_URGENCIES)
        verdict = decide(candidate, perfect)
        assert verdict.promote is True
        assert "critique recall (model + safety rules) 1.000 ≥ 1.000" in verdict.reasons

    def test_lower_critique_recall_is_refused(
        self, taxonomy: Taxonomy, perfect: Evaluation
    ) -> None:
        """One critique request of four missed: refused even with perfect departments."""
        urgencies = _with_errors(TRUTH_URGENCIES, {0: "haute"})
        candidate = evaluation(taxonomy, TRUTH_DEPARTMENTS, urgencies)
        verdict = decide(candidate, perfect)
        assert verdict.promote is False
        assert "critique recall (model + safety rules) 0.750 < 1.000" in verdict.reasons
        assert verdict.candidate["critique_recall"] == 0.75

    def test_no_critique_in_the_data_does_not_block(self, taxonomy: Taxonomy) -> None:
        """Without critique requests the recall is not checked, and the reasons say so."""
        truth = ("normale",) * 10
        current = evaluation(taxonomy, TRUTH_DEPARTMENTS, truth, truth_urgencies=truth)
        candidate = evaluation(
            taxonomy, TRUTH_DEPARTMENTS, ("critique",) + ("normale",) * 9, truth_urgencies=truth
        )
        verdict = decide(candidate, current)
        assert verdict.promote is True
        assert any("no critique request" in reason for reason in verdict.reasons)
        assert verdict.candidate["critique_recall"] is None

    def test_evaluations_on_different_data_are_refused(
        self, taxonomy: Taxonomy, perfect: Evaluation
    ) -> None:
        """Scores of two models on sets of different sizes cannot be compared."""
        smaller = dataclasses.replace(perfect, examples=9)
        with pytest.raises(ValueError, match="same held-out data"):
            decide(smaller, perfect)

    def test_a_negative_tolerance_is_refused(self, perfect: Evaluation) -> None:
        """The tolerance must lie in [0, 1)."""
        with pytest.raises(ValueError, match="tolerance"):
            decide(perfect, perfect, tolerance=-0.1)


class TestGateVerdict:
    """The verdict serialises to gate.json and renders a report without any request text."""

    def test_to_json_holds_decision_reasons_and_figures(
        self, taxonomy: Taxonomy, perfect: Evaluation
    ) -> None:
        """gate.json has the decision, the reasons, the tolerance and both models' figures."""
        verdict = decide(perfect, perfect, tolerance=0.01)
        document = json.loads(verdict.to_json())
        assert document["promote"] is True
        assert document["reasons"] == list(verdict.reasons)
        assert document["tolerance"] == 0.01
        assert document["candidate"]["version"] == "current"
        assert document["current"]["critique_support"] == 4

    def test_report_shows_both_models_and_the_verdict(
        self, taxonomy: Taxonomy, perfect: Evaluation
    ) -> None:
        """The Markdown report names both versions, the verdict and every reason."""
        candidate = evaluation(
            taxonomy, _with_errors(TRUTH_DEPARTMENTS, {0: "etat_civil"}), TRUTH_URGENCIES,
            version="cand-1",
        )  # fmt: skip
        verdict: GateVerdict = decide(candidate, perfect)
        markdown = render_gate_report(verdict, candidate, perfect, ["10 requests from data/test"])
        assert "`cand-1`" in markdown and "`current`" in markdown
        assert "**refuse**" in markdown
        assert all(reason in markdown for reason in verdict.reasons)
        assert "10 requests from data/test" in markdown
