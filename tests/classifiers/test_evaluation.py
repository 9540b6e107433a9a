"""Tests of `classifiers/evaluation.py`: per-head scores, evaluation and its report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from classifiers import Taxonomy
from classifiers.base import Prediction
from classifiers.baseline import TfidfBaseline
from classifiers.dataset import LabelledRequest, load_labelled
from classifiers.evaluation import Evaluation, evaluate, format_evaluation, score_head
from classifiers.safety import SafetyRules
from tests.conftest import DATA_DIR, make_prediction, make_request
from worker.request import Request

LABELS = ("a", "b", "c", "d")
TRUTH = ("a", "a", "a", "b", "b", "c")
PREDICTED = ("a", "a", "b", "b", "c", "c")
# By hand: a: TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 0.8; b: TP 1, FP 1, FN 1 -> P R F1 0.5;
# c: TP 1, FP 1, FN 0 -> P 0.5, R 1, F1 2/3; d: no support, never predicted.
EXPECTED = {
    "a": (1.0, 2 / 3, 0.8, 3),
    "b": (0.5, 0.5, 0.5, 2),
    "c": (0.5, 1.0, 2 / 3, 1),
    "d": (0.0, 0.0, 0.0, 0),
}


class FixedClassifier:
    """An in-memory classifier: always the same department and urgency, batches recorded."""

    def __init__(self, department: str, urgency: str) -> None:
        self.department = department
        self.urgency = urgency
        self.batches: list[int] = []

    @property
    def version(self) -> str:
        return "fixed-1"

    def predict(self, requests: Sequence[Request]) -> list[Prediction]:
        self.batches.append(len(requests))
        return [
            make_prediction(self.department, self.urgency, request_id=request.id)
            for request in requests
        ]


def _example(text: str, department: str, urgency: str, number: int) -> LabelledRequest:
    request = make_request(text, subject="", request_id=f"em-{number}")
    return LabelledRequest(request, department, urgency, Path(f"{number}.eml"))


class TestScoreHead:
    def test_accuracy(self) -> None:
        """Accuracy is the share of exact matches: 4 of 6."""
        report = score_head("department", LABELS, TRUTH, PREDICTED)
        assert report.accuracy == pytest.approx(4 / 6)

    @pytest.mark.parametrize("label", LABELS)
    def test_per_class_scores(self, label: str) -> None:
        """Precision, recall, F1 and support of each label match the hand computation."""
        scores = score_head("department", LABELS, TRUTH, PREDICTED).per_class[label]
        precision, recall, f1, support = EXPECTED[label]
        assert scores.precision == pytest.approx(precision)
        assert scores.recall == pytest.approx(recall)
        assert scores.f1 == pytest.approx(f1)
        assert scores.support == support

    def test_macro_f1_leaves_out_labels_without_support(self) -> None:
        """Macro-F1 averages a, b and c only: label d, never seen, does not drag it down."""
        report = score_head("department", LABELS, TRUTH, PREDICTED)
        assert report.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)

    def test_macro_f1_does_not_depend_on_unsupported_labels(self) -> None:
        """Adding labels that never occur leaves macro-F1 unchanged."""
        narrow = score_head("department", ("a", "b", "c"), TRUTH, PREDICTED)
        wide = score_head("department", (*LABELS, "e", "f"), TRUTH, PREDICTED)
        assert wide.macro_f1 == pytest.approx(narrow.macro_f1)

    def test_recall_of(self) -> None:
        """recall_of reads one label's recall."""
        assert score_head("urgency", LABELS, TRUTH, PREDICTED).recall_of("a") == pytest.approx(
            2 / 3
        )

    def test_confusion_matrix_rows_are_truth(self) -> None:
        """The confusion matrix has truth as rows and predictions as columns, in label order."""
        report = score_head("department", LABELS, TRUTH, PREDICTED)
        assert report.confusion == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]

    def test_perfect_predictions(self) -> None:
        """Predictions equal to the truth give accuracy and macro-F1 of 1."""
        report = score_head("department", LABELS, TRUTH, TRUTH)
        assert report.accuracy == 1.0
        assert report.macro_f1 == pytest.approx(1.0)

    def test_to_dict_carries_the_scores(self) -> None:
        """to_dict exposes accuracy, macro-F1, per-class scores, confusion and labels."""
        data = score_head("department", LABELS, TRUTH, PREDICTED).to_dict()
        assert data["labels"] == list(LABELS)
        assert data["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
        per_class = data["per_class"]
        assert isinstance(per_class, dict)
        assert per_class["b"] == {
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "support": 2,
        }


class TestEvaluate:
    def test_safety_rules_raise_critique_recall(
        self, taxonomy: Taxonomy, safety_rules: SafetyRules
    ) -> None:
        """A model blind to danger misses critique; the rules recover it in the second report."""
        examples = [
            _example("Forte odeur de gaz dans l'immeuble", "voirie", "critique", 1),
            _example("Le lampadaire est éteint", "voirie", "normale", 2),
            _example("Question sur les horaires", "accueil", "basse", 3),
        ]
        evaluation = evaluate(
            FixedClassifier("voirie", "normale"), examples, taxonomy, safety_rules
        )
        assert evaluation.examples == 3
        assert evaluation.model_version == "fixed-1"
        assert evaluation.urgency.recall_of("critique") == 0.0
        assert evaluation.urgency_with_rules.recall_of("critique") == 1.0
        assert evaluation.department.accuracy == pytest.approx(2 / 3)

    def test_predicts_in_batches(self, taxonomy: Taxonomy, safety_rules: SafetyRules) -> None:
        """Requests go to the classifier in batches of at most batch_size, all of them once."""
        examples = [_example("Bonjour", "accueil", "basse", n) for n in range(7)]
        classifier = FixedClassifier("accueil", "basse")
        evaluation = evaluate(classifier, examples, taxonomy, safety_rules, batch_size=3)
        assert classifier.batches == [3, 3, 1]
        assert evaluation.department.accuracy == 1.0

    def test_baseline_on_validation(
        self, baseline_model: TfidfBaseline, taxonomy: Taxonomy, safety_rules: SafetyRules
    ) -> None:
        """The trained baseline beats 0.5 department macro-F1; rules never lower critique recall."""
        examples = load_labelled([DATA_DIR / "validation"], taxonomy)
        evaluation = evaluate(baseline_model, examples, taxonomy, safety_rules)
        assert evaluation.examples == len(examples)
        assert evaluation.department.macro_f1 > 0.5
        assert evaluation.urgency_with_rules.recall_of("critique") >= (
            evaluation.urgency.recall_of("critique")
        )


class TestFormatEvaluation:
    @pytest.fixture
    def evaluation(self, taxonomy: Taxonomy, safety_rules: SafetyRules) -> Evaluation:
        examples = [
            _example("Forte odeur de gaz", "voirie", "critique", 1),
            _example("Le lampadaire est éteint", "voirie", "normale", 2),
        ]
        return evaluate(FixedClassifier("voirie", "normale"), examples, taxonomy, safety_rules)

    def test_report_names_the_metrics(self, evaluation: Evaluation) -> None:
        """The report shows macro-F1 for each head and the critique recall with the rules."""
        report = format_evaluation(evaluation)
        assert "macro-F1" in report
        assert "critique recall (model + safety rules): 1.000" in report
        assert "model fixed-1 on 2 requests" in report

    def test_report_lists_every_label(self, evaluation: Evaluation, taxonomy: Taxonomy) -> None:
        """Each department and urgency label has a row in the report."""
        report = format_evaluation(evaluation)
        for label in (*taxonomy.department_keys, *taxonomy.urgency_keys):
            assert f"  {label} " in report
