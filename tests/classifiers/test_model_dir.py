"""Tests of `classifiers/model_dir.py` and `load_classifier`: the checked model directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from classifiers import Classifier, Taxonomy, load_classifier
from classifiers.model_dir import (
    CALIBRATION_FILE,
    LABELS_FILE,
    METADATA_FILE,
    read_model_files,
)
from worker.errors import ModelError


@pytest.fixture
def model_copy(baseline_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's trained baseline, free to be damaged."""
    return Path(shutil.copytree(baseline_model_dir, tmp_path / "model"))


def _edit_json(path: Path, change: Any) -> None:
    value = json.loads(path.read_text(encoding="utf-8"))
    change(value)
    path.write_text(json.dumps(value), encoding="utf-8")


class TestReadModelFiles:
    def test_intact_copy_is_read(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """An untouched baseline directory yields its kind, version, labels and temperatures."""
        files = read_model_files(model_copy, taxonomy)
        assert files.kind == "tfidf-logreg"
        assert files.version.startswith("tfidf-logreg-")
        assert set(files.labels["department"]) == set(taxonomy.department_keys)
        assert set(files.labels["urgency"]) == set(taxonomy.urgency_keys)
        assert all(t > 0 for t in files.temperatures.values())

    @pytest.mark.parametrize("name", ["model.pkl", "pytorch_model.bin", "weights.joblib"])
    def test_pickle_file_is_refused(self, model_copy: Path, taxonomy: Taxonomy, name: str) -> None:
        """A directory holding a pickle-based weights file is refused before anything is read."""
        (model_copy / name).write_bytes(b"\x80\x04K\x01.")
        with pytest.raises(ModelError, match="pickle") as caught:
            read_model_files(model_copy, taxonomy)
        assert name in str(caught.value)

    def test_renamed_department_is_refused(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """labels.json naming a department the taxonomy does not have is refused."""

        def rename(labels: dict[str, list[str]]) -> None:
            labels["department"][0] = "cabinet_du_maire"

        _edit_json(model_copy / LABELS_FILE, rename)
        with pytest.raises(ModelError, match="labels differ from the taxonomy") as caught:
            read_model_files(model_copy, taxonomy)
        assert "cabinet_du_maire" in str(caught.value)

    def test_removed_department_is_refused(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """labels.json missing a taxonomy department is refused and names the missing one."""
        removed = taxonomy.department_keys[-1]

        def remove(labels: dict[str, list[str]]) -> None:
            labels["department"].remove(removed)

        _edit_json(model_copy / LABELS_FILE, remove)
        with pytest.raises(
            ModelError, match="department labels differ from the taxonomy"
        ) as caught:
            read_model_files(model_copy, taxonomy)
        assert removed in str(caught.value)

    def test_duplicated_urgency_is_refused(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """labels.json with a repeated urgency label is refused even if the label set matches."""

        def duplicate(labels: dict[str, list[str]]) -> None:
            labels["urgency"].append(labels["urgency"][0])

        _edit_json(model_copy / LABELS_FILE, duplicate)
        with pytest.raises(ModelError, match="urgency labels differ from the taxonomy"):
            read_model_files(model_copy, taxonomy)

    @pytest.mark.parametrize("name", [LABELS_FILE, METADATA_FILE, CALIBRATION_FILE])
    def test_json_file_that_is_not_an_object_is_refused(
        self, model_copy: Path, taxonomy: Taxonomy, name: str
    ) -> None:
        """A common JSON file holding a list instead of an object raises ModelError naming it."""
        (model_copy / name).write_text('["voirie", "accueil"]', encoding="utf-8")
        with pytest.raises(ModelError) as caught:
            read_model_files(model_copy, taxonomy)
        assert name in str(caught.value)

    @pytest.mark.parametrize("temperature", [-1.5, 0.0, float("inf")])
    def test_non_positive_temperature_is_refused(
        self, model_copy: Path, taxonomy: Taxonomy, temperature: float
    ) -> None:
        """A temperature of zero or below, or infinite, is refused, naming calibration.json."""

        def set_temperature(calibration: dict[str, float]) -> None:
            calibration["urgency"] = temperature

        _edit_json(model_copy / CALIBRATION_FILE, set_temperature)
        with pytest.raises(ModelError, match="temperatures must be positive") as caught:
            read_model_files(model_copy, taxonomy)
        assert CALIBRATION_FILE in str(caught.value)

    def test_missing_temperature_is_refused(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """calibration.json without a head's temperature is refused."""

        def drop(calibration: dict[str, float]) -> None:
            del calibration["department"]

        _edit_json(model_copy / CALIBRATION_FILE, drop)
        with pytest.raises(ModelError, match="needs a temperature per head"):
            read_model_files(model_copy, taxonomy)

    def test_missing_calibration_file_is_refused(
        self, model_copy: Path, taxonomy: Taxonomy
    ) -> None:
        """A directory without calibration.json is refused, naming the missing file."""
        (model_copy / CALIBRATION_FILE).unlink()
        with pytest.raises(ModelError, match="missing") as caught:
            read_model_files(model_copy, taxonomy)
        assert CALIBRATION_FILE in str(caught.value)

    def test_missing_directory_is_refused(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        """A directory that does not exist raises ModelError naming it."""
        with pytest.raises(ModelError, match="no model directory") as caught:
            read_model_files(tmp_path / "absent", taxonomy)
        assert "absent" in str(caught.value)


class TestLoadClassifier:
    def test_intact_copy_loads_a_classifier(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """An untouched baseline directory loads as a working Classifier."""
        classifier = load_classifier(model_copy, taxonomy)
        assert isinstance(classifier, Classifier)
        assert classifier.predict([]) == []

    def test_pickle_file_is_refused(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """load_classifier refuses a directory with a pytorch_model.bin, mentioning pickle."""
        (model_copy / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
        with pytest.raises(ModelError, match="pickle"):
            load_classifier(model_copy, taxonomy)

    def test_unknown_kind_is_refused(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """A metadata.json kind that no loader knows is refused, naming the kind."""

        def set_kind(metadata: dict[str, Any]) -> None:
            metadata["kind"] = "crystal-ball"

        _edit_json(model_copy / METADATA_FILE, set_kind)
        with pytest.raises(ModelError, match="unknown model kind 'crystal-ball'"):
            load_classifier(model_copy, taxonomy)

    def test_missing_kind_is_refused(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """A metadata.json without a kind is refused rather than guessed."""

        def drop_kind(metadata: dict[str, Any]) -> None:
            del metadata["kind"]

        _edit_json(model_copy / METADATA_FILE, drop_kind)
        with pytest.raises(ModelError, match="unknown model kind"):
            load_classifier(model_copy, taxonomy)

    def test_renamed_department_is_refused(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """load_classifier applies the taxonomy check of labels.json."""

        def rename(labels: dict[str, list[str]]) -> None:
            labels["department"][1] = "mairie_annexe"

        _edit_json(model_copy / LABELS_FILE, rename)
        with pytest.raises(ModelError, match="labels differ from the taxonomy"):
            load_classifier(model_copy, taxonomy)

    def test_missing_weights_are_refused(self, model_copy: Path, taxonomy: Taxonomy) -> None:
        """A baseline directory without its safetensors weights raises ModelError."""
        (model_copy / "weights.safetensors").unlink()
        with pytest.raises(ModelError, match="incomplete baseline model"):
            load_classifier(model_copy, taxonomy)

    def test_missing_directory_is_refused(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        """load_classifier on a path that does not exist raises ModelError."""
        with pytest.raises(ModelError, match="no model directory"):
            load_classifier(tmp_path / "nowhere", taxonomy)
