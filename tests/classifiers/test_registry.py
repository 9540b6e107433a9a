"""Tests of `classifiers/registry.py`: model versions, the `current` pointer and its history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifiers import Taxonomy, load_classifier
from classifiers.baseline import KIND, TfidfBaseline
from classifiers.model_dir import LABELS_FILE, write_model_directory
from classifiers.registry import (
    GATE_FILE,
    HISTORY_FILE,
    POINTER_FILE,
    ModelRegistry,
    resolve_model_dir,
)
from worker.errors import ModelError

_TEXTS = (
    "Le lampadaire de la rue est éteint",
    "Un nid-de-poule sur la chaussée",
    "Je voudrais un acte de naissance",
    "Demande de passeport",
)
_DEPARTMENTS = ("voirie", "voirie", "etat_civil", "etat_civil")
_URGENCIES = ("haute", "normale", "basse", "normale")


def write_model(directory: Path, taxonomy: Taxonomy, version: str) -> Path:
    """A tiny baseline model directory whose metadata names `version`."""
    model = TfidfBaseline.fit(
        _TEXTS,
        {"department": _DEPARTMENTS, "urgency": _URGENCIES},
        {"department": taxonomy.department_keys, "urgency": taxonomy.urgency_keys},
        version=version,
    )
    metadata = {"kind": KIND, "version": version, "created_at": f"2026-01-01T00:00:0{len(version)}"}
    write_model_directory(model, directory, metadata, f"# {version}\n")
    return directory


@pytest.fixture
def registry(tmp_path: Path, taxonomy: Taxonomy) -> ModelRegistry:
    """A registry root holding the shipped `default` and two trained versions `v2` and `v3`."""
    root = tmp_path / "models"
    for name in ("default", "v2", "v3"):
        write_model(root / name, taxonomy, name)
    return ModelRegistry(root, taxonomy=taxonomy)


def _events(registry: ModelRegistry) -> list[dict[str, object]]:
    path = registry.root / HISTORY_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class TestModelRegistry:
    """The registry names the current version, moves the pointer and records every move."""

    def test_default_is_current_without_a_pointer(self, registry: ModelRegistry) -> None:
        """With no pointer file the current version is `default` and its directory loads."""
        assert registry.pointer_state() is None
        assert registry.current_version() == "default"
        assert registry.current_dir() == registry.root / "default"

    def test_promote_writes_the_pointer_and_the_history(self, registry: ModelRegistry) -> None:
        """Promoting v2 writes its name into `current` and appends a `promoted` event."""
        registry.promote("v2", reason="gate passed: better")
        assert (registry.root / POINTER_FILE).read_text(encoding="utf-8").strip() == "v2"
        assert registry.pointer_state() == "v2"
        assert registry.current_dir() == registry.root / "v2"
        [event] = _events(registry)
        assert event["event"] == "promoted"
        assert (event["version"], event["previous"]) == ("v2", "default")
        assert event["reason"] == "gate passed: better"
        assert event["time"]

    def test_rollback_returns_to_the_previous_version_one_promotion_at_a_time(
        self, registry: ModelRegistry
    ) -> None:
        """Each rollback undoes one promotion, back to `default`; then there is none to undo."""
        registry.promote("v2", reason="first")
        registry.promote("v3", reason="second")
        assert registry.rollback() == "v2"
        assert registry.current_version() == "v2"
        assert registry.rollback() == "default"
        assert registry.current_version() == "default"
        with pytest.raises(ModelError, match="no promotion to roll back"):
            registry.rollback()
        assert [e["event"] for e in _events(registry)][-2:] == ["rolled_back", "rolled_back"]

    def test_rollback_without_history_is_refused(self, registry: ModelRegistry) -> None:
        """A registry that never promoted anything has nothing to roll back to."""
        with pytest.raises(ModelError):
            registry.rollback()
        assert registry.pointer_state() is None

    def test_promote_of_a_missing_version_is_refused(self, registry: ModelRegistry) -> None:
        """Promoting a version that does not exist raises and leaves pointer and history alone."""
        with pytest.raises(ModelError, match="no such model version"):
            registry.promote("v9", reason="typo")
        assert registry.pointer_state() is None
        assert _events(registry) == []

    def test_promote_of_a_broken_version_is_refused(self, registry: ModelRegistry) -> None:
        """A version whose labels file is gone cannot become current; the pointer stays."""
        registry.promote("v2", reason="ok")
        (registry.root / "v3" / LABELS_FILE).unlink()
        with pytest.raises(ModelError, match=LABELS_FILE):
            registry.promote("v3", reason="broken")
        assert registry.pointer_state() == "v2"
        assert [e["version"] for e in _events(registry)] == ["v2"]

    def test_promote_of_a_version_with_pickles_is_refused(self, registry: ModelRegistry) -> None:
        """A pickle file in a version directory makes it unpromotable, even without a taxonomy."""
        (registry.root / "v2" / "weights.pkl").write_bytes(b"\x80")
        bare = ModelRegistry(registry.root)
        with pytest.raises(ModelError, match="pickle"):
            bare.promote("v2", reason="pickled")
        assert bare.pointer_state() is None

    def test_invalid_version_names_are_refused(self, registry: ModelRegistry) -> None:
        """Names that would leave the root or shadow the pointer file are refused."""
        for name in ("../v2", "current", ".hidden", "a/b", ""):
            with pytest.raises(ModelError):
                registry.promote(name, reason="bad name")
        assert registry.pointer_state() is None

    def test_a_pointer_to_a_missing_directory_raises(self, registry: ModelRegistry) -> None:
        """`current_dir` raises when the pointer names a version that is not there."""
        (registry.root / POINTER_FILE).write_text("gone\n", encoding="utf-8")
        assert registry.current_version() == "gone"
        with pytest.raises(ModelError, match="missing"):
            registry.current_dir()

    def test_add_copies_a_model_in_and_refuses_an_existing_name(
        self, registry: ModelRegistry, tmp_path: Path, taxonomy: Taxonomy
    ) -> None:
        """A trained directory is copied in under its new name; the same name twice is refused."""
        source = write_model(tmp_path / "trained", taxonomy, "v4")
        added = registry.add(source, "v4")
        assert added == registry.root / "v4"
        assert source.is_dir()
        assert load_classifier(added, taxonomy).version == "v4"
        with pytest.raises(ModelError, match="already exists"):
            registry.add(source, "v4")
        assert [e["event"] for e in _events(registry)] == ["added"]

    def test_add_refuses_a_directory_that_is_no_model(
        self, registry: ModelRegistry, tmp_path: Path
    ) -> None:
        """A directory without metadata.json does not enter the registry."""
        (tmp_path / "empty").mkdir()
        with pytest.raises(ModelError, match="not a model directory"):
            registry.add(tmp_path / "empty", "v5")
        assert not (registry.root / "v5").exists()

    def test_versions_report_status_and_figures(self, registry: ModelRegistry) -> None:
        """Each version has its status; gate figures are shown for versions that were gated."""
        gate = {"promote": False, "candidate": {"department_macro_f1": 0.4, "critique_recall": 1.0}}
        (registry.root / "v3" / GATE_FILE).write_text(json.dumps(gate), encoding="utf-8")
        registry.promote("v2", reason="first")
        statuses = {v.name: v for v in registry.versions()}
        assert {name: v.status for name, v in statuses.items()} == {
            "default": "shipped",
            "v2": "current",
            "v3": "refused",
        }
        assert statuses["v3"].department_f1 == 0.4
        assert statuses["v3"].metrics_source == "gate"
        assert statuses["v2"].kind == KIND

    def test_a_version_promoted_then_replaced_is_promoted_before(
        self, registry: ModelRegistry
    ) -> None:
        """A version that was current once, then replaced, lists as `promoted-before`."""
        registry.promote("v2", reason="first")
        registry.promote("v3", reason="second")
        statuses = {v.name: v.status for v in registry.versions()}
        assert statuses == {"default": "shipped", "v2": "promoted-before", "v3": "current"}


class TestResolveModelDir:
    """The model directory to load is the pinned one, else the registry's current version."""

    def test_a_pin_wins(self, registry: ModelRegistry, tmp_path: Path) -> None:
        """`settings.model_dir` set: it is used whatever the pointer says."""
        registry.promote("v2", reason="first")
        assert resolve_model_dir(tmp_path / "pinned", registry.root) == tmp_path / "pinned"

    def test_without_a_pin_the_registry_decides(self, registry: ModelRegistry) -> None:
        """No pin: the default before any promotion, the promoted version after."""
        assert resolve_model_dir(None, registry.root) == registry.root / "default"
        registry.promote("v3", reason="first")
        assert resolve_model_dir(None, registry.root) == registry.root / "v3"

    def test_a_missing_current_directory_raises(self, tmp_path: Path) -> None:
        """An empty registry root has no model to resolve to."""
        with pytest.raises(ModelError):
            resolve_model_dir(None, tmp_path / "models")
