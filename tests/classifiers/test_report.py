"""Tests of `classifiers/report.py`: the evaluation report's numbers, tables and files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifiers import Taxonomy
from classifiers.base import Prediction
from classifiers.calibration import FloatArray
from classifiers.dataset import LabelledRequest, load_labelled
from classifiers.evaluation import evaluate
from classifiers.model_dir import read_model_files
from classifiers.report import (
    REPORT_JSON,
    REPORT_MARKDOWN,
    Report,
    build_report,
    raw_logits,
    threshold_rows,
    write_report,
)
from classifiers.safety import SafetyRules
from classifiers.training import train_baseline
from tests.conftest import DATA_DIR, make_prediction, make_request
from worker.request import Request
from worker.routing import RoutingConfig

VALIDATION = DATA_DIR / "validation"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL_TRAINING = ("voirie", "social", "accueil", "finances")


@pytest.fixture(scope="module")
def validation(taxonomy: Taxonomy) -> list[LabelledRequest]:
    return load_labelled([VALIDATION], taxonomy)


@pytest.fixture(scope="module")
def small_baseline_dir(
    tmp_path_factory: pytest.TempPathFactory, taxonomy: Taxonomy, safety_rules: SafetyRules
) -> Path:
    """A second, weaker baseline trained on four departments only."""
    out = tmp_path_factory.mktemp("models") / "small"
    folders = [DATA_DIR / "train" / name for name in SMALL_TRAINING]
    train_baseline(folders, out, taxonomy, safety_rules)
    return out


@pytest.fixture(scope="module")
def report(
    baseline_model_dir: Path,
    small_baseline_dir: Path,
    taxonomy: Taxonomy,
    safety_rules: SafetyRules,
    routing_config: RoutingConfig,
) -> Report:
    return build_report(
        baseline_model_dir,
        [VALIDATION],
        taxonomy,
        safety_rules,
        baseline_dir=small_baseline_dir,
        routing=routing_config,
    )


@pytest.fixture(scope="module")
def written(report: Report, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(report, out)
    return out


@pytest.fixture(scope="module")
def report_json(written: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((written / REPORT_JSON).read_text(encoding="utf-8"))
    return data


class TestWriteReport:
    def test_writes_markdown_json_and_two_pngs(self, report: Report, tmp_path: Path) -> None:
        """write_report returns and creates report.md, report.json and one PNG per head."""
        paths = write_report(report, tmp_path / "out")
        names = sorted(path.name for path in paths)
        assert names == [
            "confusion-department.png",
            "confusion-urgency.png",
            REPORT_JSON,
            REPORT_MARKDOWN,
        ]
        assert all(path.is_file() for path in paths)

    @pytest.mark.parametrize("head", ["department", "urgency"])
    def test_pngs_are_png_files_linked_from_the_markdown(self, written: Path, head: str) -> None:
        """Each confusion matrix is a real PNG and the Markdown links to it."""
        png = written / f"confusion-{head}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"]({png.name})" in (written / REPORT_MARKDOWN).read_text(encoding="utf-8")

    def test_markdown_has_confusion_tables(self, written: Path, taxonomy: Taxonomy) -> None:
        """The Markdown holds each confusion matrix as a table headed by the labels."""
        markdown = (written / REPORT_MARKDOWN).read_text(encoding="utf-8")
        assert "| truth \\ predicted | " + " | ".join(taxonomy.urgency_keys) + " |" in markdown
        assert "| truth \\ predicted | " + " | ".join(taxonomy.department_keys) + " |" in markdown

    def test_no_subject_of_a_request_appears(
        self, written: Path, validation: list[LabelledRequest]
    ) -> None:
        """Neither report.md nor report.json contains the subject of any evaluated request."""
        text = "\n".join(
            (written / name).read_text(encoding="utf-8") for name in (REPORT_MARKDOWN, REPORT_JSON)
        ).casefold()
        subjects = {e.request.subject.strip() for e in validation if e.request.subject.strip()}
        leaked = [subject for subject in subjects if subject.casefold() in text]
        assert leaked == []


class TestBuildReport:
    def test_numbers_equal_evaluate(
        self,
        report_json: dict[str, Any],
        baseline_model_dir: Path,
        validation: list[LabelledRequest],
        taxonomy: Taxonomy,
        safety_rules: SafetyRules,
    ) -> None:
        """report.json carries exactly the scores classifiers.evaluation.evaluate computes."""
        from classifiers import load_classifier

        classifier = load_classifier(baseline_model_dir, taxonomy)
        expected = evaluate(classifier, validation, taxonomy, safety_rules).to_dict()
        assert report_json["model"]["evaluation"] == json.loads(json.dumps(expected))
        assert report_json["data"]["examples"] == len(validation)

    def test_baseline_side_by_side(
        self, report: Report, written: Path, small_baseline_dir: Path, taxonomy: Taxonomy
    ) -> None:
        """With a second model directory, both versions and a points difference are reported."""
        small = read_model_files(small_baseline_dir, taxonomy).version
        assert report.baseline is not None
        assert report.baseline.version == small != report.model.version
        markdown = (written / REPORT_MARKDOWN).read_text(encoding="utf-8")
        assert f"- baseline: `{small}`" in markdown
        assert f"- model: `{report.model.version}`" in markdown
        model_f1 = report.model.evaluation.department.macro_f1
        delta = 100 * (model_f1 - report.baseline.evaluation.department.macro_f1)
        assert f"| department macro-F1 | {model_f1:.3f} | " in markdown
        assert f"| {delta:+.1f} |" in markdown

    def test_compared_models_get_a_column_each(
        self,
        baseline_model_dir: Path,
        small_baseline_dir: Path,
        taxonomy: Taxonomy,
        safety_rules: SafetyRules,
        tmp_path: Path,
    ) -> None:
        """--compare adds one column per model to a table of every model's headline scores."""
        compared = build_report(
            baseline_model_dir, [VALIDATION], taxonomy, safety_rules, compare=[small_baseline_dir]
        )
        write_report(compared, tmp_path)
        markdown = (tmp_path / REPORT_MARKDOWN).read_text(encoding="utf-8")
        small = compared.others[0]
        assert "## All models on the same requests" in markdown
        assert "| metric | model | compared 1 |" in markdown
        assert f"- compared 1: `{small.version}`, tfidf-logreg" in markdown
        row = (
            f"| department macro-F1 | {compared.model.evaluation.department.macro_f1:.3f} | "
            f"{small.evaluation.department.macro_f1:.3f} |"
        )
        assert row in markdown
        stored = json.loads((tmp_path / REPORT_JSON).read_text(encoding="utf-8"))
        assert [m["version"] for m in stored["compared"]] == [small.version]

    def test_same_directory_as_baseline_is_not_repeated(
        self, baseline_model_dir: Path, taxonomy: Taxonomy, safety_rules: SafetyRules
    ) -> None:
        """Passing the model's own directory as baseline gives no baseline section."""
        alone = build_report(
            baseline_model_dir,
            [VALIDATION],
            taxonomy,
            safety_rules,
            baseline_dir=baseline_model_dir,
        )
        assert alone.baseline is None
        assert alone.review_threshold is None

    def test_critique_recall_line(self, report: Report, written: Path) -> None:
        """The critique recall with the safety rules has a line of its own."""
        recall = report.model.evaluation.urgency_with_rules.recall_of("critique")
        lines = (written / REPORT_MARKDOWN).read_text(encoding="utf-8").splitlines()
        line = f"**critique recall (model + safety rules): {recall:.3f}**"
        assert any(text.startswith(line) for text in lines)

    def test_calibration_matches_training(
        self, report: Report, baseline_model_dir: Path, taxonomy: Taxonomy
    ) -> None:
        """ECE before and after scaling equal what training measured on the same validation set."""
        measured = read_model_files(baseline_model_dir, taxonomy).metadata["calibration"]
        assert [row.head for row in report.model.calibration] == ["department", "urgency"]
        for row in report.model.calibration:
            assert row.ece_before == pytest.approx(measured[row.head]["ece_before"])
            assert row.ece_after == pytest.approx(measured[row.head]["ece_after"])
            assert row.temperature == pytest.approx(measured[row.head]["temperature"])

    def test_notes_evaluation_on_calibration_data(self, report: Report) -> None:
        """The report warns that the temperatures were fitted on the evaluated folder."""
        assert any("temperatures were fitted on this data" in note for note in report.model.notes)


class TestThresholdRows:
    def test_review_share_grows_with_the_threshold(self, report: Report) -> None:
        """The share sent to review never decreases as the threshold rises, 0.30 to 0.95."""
        rows = report.model.thresholds
        assert rows[0].threshold == pytest.approx(0.30)
        assert rows[-1].threshold == pytest.approx(0.95)
        shares = [row.review_share for row in rows]
        assert shares == sorted(shares)

    def test_configured_threshold_is_marked(
        self, report: Report, written: Path, routing_config: RoutingConfig
    ) -> None:
        """Exactly one row carries the threshold of routing.yaml, marked in the Markdown too."""
        marked = [row for row in report.model.thresholds if row.configured]
        assert [row.threshold for row in marked] == [routing_config.review_threshold]
        markdown = (written / REPORT_MARKDOWN).read_text(encoding="utf-8")
        assert f"| {routing_config.review_threshold:.2f} ← routing.yaml |" in markdown

    def test_threshold_zero_routes_everything(
        self,
        report: Report,
        baseline_model_dir: Path,
        taxonomy: Taxonomy,
        validation: list[LabelledRequest],
    ) -> None:
        """At threshold 0 nothing goes to review and the routed accuracy is the plain accuracy."""
        from classifiers import load_classifier

        classifier = load_classifier(baseline_model_dir, taxonomy)
        predictions = classifier.predict([e.request for e in validation])
        confidences = [p.department.confidence for p in predictions]
        correct = [
            p.department.label == e.department for p, e in zip(predictions, validation, strict=True)
        ]
        (row,) = threshold_rows(confidences, correct, thresholds=[0.0])
        assert row.review_share == 0.0
        assert row.routed == len(validation)
        assert row.routed_accuracy == pytest.approx(report.model.evaluation.department.accuracy)

    def test_unlisted_configured_threshold_is_added(self) -> None:
        """A configured threshold outside the grid becomes a marked row of its own."""
        rows = threshold_rows([0.2, 0.5, 0.9], [True, False, True], [0.3, 0.6], configured=0.42)
        assert [(r.threshold, r.configured) for r in rows] == [
            (0.3, False),
            (0.42, True),
            (0.6, False),
        ]
        assert [r.routed for r in rows] == [2, 2, 1]
        assert rows[0].routed_accuracy == pytest.approx(0.5)

    def test_all_in_review_has_no_accuracy(self) -> None:
        """When every request goes to review, the routed accuracy is None, not a division error."""
        (row,) = threshold_rows([0.1, 0.2], [True, True], [0.95])
        assert row.review_share == 1.0
        assert row.routed_accuracy is None


class _RequestLogitsModel:
    """An in-memory model shaped like CamembertClassifier: logits computed from requests."""

    version = "fake-1"

    def logits(self, requests: Sequence[Request]) -> dict[str, FloatArray]:
        return {"department": np.zeros((len(requests), 2)), "urgency": np.ones((len(requests), 4))}

    def predict(self, requests: Sequence[Request]) -> list[Prediction]:
        return [make_prediction(request_id=r.id) for r in requests]


class _NoLogitsModel:
    """A classifier that exposes predictions only."""

    version = "fake-2"

    def predict(self, requests: Sequence[Request]) -> list[Prediction]:
        return [make_prediction(request_id=r.id) for r in requests]


class TestRawLogits:
    def test_request_logits_model(self) -> None:
        """A model whose logits take requests is called with the requests."""
        scores = raw_logits(_RequestLogitsModel(), [make_request(), make_request()])
        assert scores is not None
        assert scores["urgency"].shape == (2, 4)

    def test_model_without_logits(self) -> None:
        """A model without logits gives None, so the report leaves calibration out."""
        assert raw_logits(_NoLogitsModel(), [make_request()]) is None

    def test_baseline_logits_from_texts(
        self, baseline_model_dir: Path, taxonomy: Taxonomy, validation: list[LabelledRequest]
    ) -> None:
        """The baseline's logits come from classifier texts, one row per request."""
        from classifiers import load_classifier

        requests = [e.request for e in validation[:3]]
        scores = raw_logits(load_classifier(baseline_model_dir, taxonomy), requests)
        assert scores is not None
        assert scores["department"].shape == (3, len(taxonomy.department_keys))
