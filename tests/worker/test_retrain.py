"""Tests of `worker/retrain.py` and `worker/cli_models.py`: retraining, the gate, the registry."""

from __future__ import annotations

import argparse
import json
import random
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from classifiers import Taxonomy
from classifiers.dataset import LABELS_FILE, find_labelled, load_labelled
from classifiers.gate import GATE_FILE, GATE_REPORT_DIR
from classifiers.model_dir import read_json_object
from classifiers.registry import HISTORY_FILE, ModelRegistry
from classifiers.safety import SafetyRules
from classifiers.text import classifier_input
from classifiers.training import examples_fingerprint, train_baseline
from tests.conftest import CONFIG_DIR, DATA_DIR
from worker import exit_codes
from worker.cli_models import COMMANDS, add_parsers
from worker.config import Settings
from worker.errors import ConfigError, ModelError
from worker.feedback import Correction, FeedbackStore
from worker.parsing import parse_raw, read_raw
from worker.retrain import (
    RetrainOptions,
    RetrainResult,
    correction_example,
    finetune_base,
    load_retraining_config,
    retrain,
    split_corrections,
    write_corrections_folder,
)
from worker.runtime import Configuration, load_configuration

CORRECTIONS = 90
HELD_OUT = 18  # 20 % of the corrections, the most recent ones
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Corpus:
    """Small labelled folders cut from the starter corpus, and texts to correct."""

    train: Path
    validation: Path
    test: Path
    shuffled: Path  # the training files with their labels shuffled
    no_critique: Path  # the training files less the critique requests
    corrections: tuple[tuple[str, str, str], ...]  # (classifier text, department, urgency)


def _subset(
    taxonomy: Taxonomy, source: Path, out: Path, step: int, *, skip_urgency: str = ""
) -> Path:
    """Every `step`-th labelled file of `source` (less those of `skip_urgency`), copied with its
    labels into `out`."""
    out.mkdir(parents=True)
    lines = []
    for entry in find_labelled([source], taxonomy)[::step]:
        if entry.urgency == skip_urgency:
            continue
        shutil.copy(entry.path, out / entry.path.name)
        record = {"file": entry.path.name, "department": entry.department}
        lines.append(json.dumps(record | {"urgency": entry.urgency}))
    (out / LABELS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _shuffled(folder: Path, out: Path) -> Path:
    """A copy of `folder` whose labels are shuffled across its files (a broken training set)."""
    shutil.copytree(folder, out)
    records = [json.loads(line) for line in (folder / LABELS_FILE).read_text().splitlines()]
    labels = [(r["department"], r["urgency"]) for r in records]
    random.Random(7).shuffle(labels)
    lines = [
        json.dumps({"file": r["file"], "department": d, "urgency": u})
        for r, (d, u) in zip(records, labels, strict=True)
    ]
    (out / LABELS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, taxonomy: Taxonomy) -> Corpus:
    """A few dozen requests per split, and 90 other training requests to store as corrections."""
    root = tmp_path_factory.mktemp("corpus")
    train = _subset(taxonomy, DATA_DIR / "train", root / "train", 40)
    # Files the corpus does not hold, from every department, in an order mixing departments.
    entries = find_labelled([DATA_DIR / "train"], taxonomy)[5::16][:CORRECTIONS]
    random.Random(3).shuffle(entries)
    corrections = tuple(
        (classifier_input(parse_raw(read_raw(e.path))), e.department, e.urgency) for e in entries
    )
    return Corpus(
        train=train,
        validation=_subset(taxonomy, DATA_DIR / "validation", root / "validation", 10),
        test=_subset(taxonomy, DATA_DIR / "test", root / "test", 10),
        shuffled=_shuffled(train, root / "shuffled"),
        no_critique=_subset(
            taxonomy, DATA_DIR / "train", root / "no-critique", 40, skip_urgency="critique"
        ),
        corrections=corrections,
    )


@pytest.fixture(scope="module")
def shipped(
    tmp_path_factory: pytest.TempPathFactory,
    corpus: Corpus,
    taxonomy: Taxonomy,
    safety_rules: SafetyRules,
) -> Path:
    """The `default` model of the tests: a baseline trained on the small corpus, less its
    critique requests.

    Never having seen one, it predicts no critique, so its critique recall is the safety rules'
    alone, which any candidate's (rules included) matches or beats: the gate's outcome for a
    candidate with more data then hangs on department macro-F1 only, not on a handful of cases.
    """
    out = tmp_path_factory.mktemp("shipped") / "default"
    train_baseline(
        [corpus.no_critique], out, taxonomy, safety_rules, validation=[corpus.validation]
    )
    return out


@pytest.fixture(scope="module")
def degraded(
    tmp_path_factory: pytest.TempPathFactory,
    corpus: Corpus,
    taxonomy: Taxonomy,
    safety_rules: SafetyRules,
) -> Path:
    """A candidate trained elsewhere on shuffled labels: it has learnt nothing useful."""
    out = tmp_path_factory.mktemp("degraded") / "model"
    train_baseline([corpus.shuffled], out, taxonomy, safety_rules)
    return out


def _configuration(root: Path, shipped: Path) -> Configuration:
    """A registry under `root` holding only the shipped model, and an empty feedback store."""
    shutil.copytree(shipped, root / "models" / "default")
    settings = Settings(
        config_dir=CONFIG_DIR, models_root=root / "models", state_dir=root / "state"
    )
    return load_configuration(settings)


def _store_corrections(configuration: Configuration, corpus: Corpus) -> list[Correction]:
    """Record the corpus's corrections, one minute apart, the last ones the most recent."""
    store = FeedbackStore(configuration.settings.feedback_path)
    try:
        for number, (text, department, urgency) in enumerate(corpus.corrections):
            store.correct(
                f"fm-{number:04d}", department=department, urgency=urgency, source="cli",
                text=text, at=START + timedelta(minutes=number),
            )  # fmt: skip
        return store.corrections()
    finally:
        store.close()


def _options(
    corpus: Corpus, *, candidate: Path | None = None, promote: bool = True
) -> RetrainOptions:
    """Retraining on the small folders instead of the configured (full) corpus."""
    return RetrainOptions(
        candidate=candidate,
        promote=promote,
        data=(corpus.train,),
        validation=(corpus.validation,),
        test=(corpus.test,),
    )


@dataclass(frozen=True)
class Retrained:
    """A registry after one retraining, the corrections it read, and what it returned."""

    configuration: Configuration
    corrections: list[Correction]
    result: RetrainResult


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus, shipped: Path) -> Retrained:
    """A registry after `triage retrain` with stored corrections and the small corpus."""
    configuration = _configuration(tmp_path_factory.mktemp("retrained"), shipped)
    corrections = _store_corrections(configuration, corpus)
    return Retrained(configuration, corrections, retrain(configuration, _options(corpus)))


def _registry(configuration: Configuration) -> ModelRegistry:
    return ModelRegistry(configuration.settings.models_root)


class TestRetrain:
    """A candidate is trained on corpus + corrections, gated, and promoted only if it passes."""

    def test_a_degraded_candidate_is_refused_and_the_pointer_stays(
        self, tmp_path: Path, corpus: Corpus, shipped: Path, degraded: Path
    ) -> None:
        """A model trained on shuffled labels fails the gate; `default` stays current."""
        configuration = _configuration(tmp_path, shipped)
        result = retrain(configuration, _options(corpus, candidate=degraded))
        registry = _registry(configuration)
        assert result.outcome == "refused"
        assert registry.pointer_state() is None
        assert registry.current_version() == "default"
        gate = read_json_object(result.directory / GATE_FILE)
        assert gate["promote"] is False
        assert any(r.startswith("department macro-F1") and " < " in r for r in gate["reasons"])
        assert gate["candidate"]["department_macro_f1"] < gate["current"]["department_macro_f1"]
        assert (result.directory / GATE_REPORT_DIR / "report.md").is_file()
        events = [e["event"] for e in registry.history()]
        assert events == ["added", "refused"]
        statuses = {v.name: v.status for v in registry.versions()}
        assert statuses == {"default": "current", result.version: "refused"}

    def test_a_candidate_retrained_with_corrections_is_promoted(self, retrained: Retrained) -> None:
        """The retrained candidate passes the gate and `current` points to it."""
        result, registry = retrained.result, _registry(retrained.configuration)
        assert result.outcome == "promoted", result.summary()
        assert registry.pointer_state() == result.version
        assert registry.current_dir() == result.directory
        assert read_json_object(result.directory / GATE_FILE)["promote"] is True
        [promotion] = [e for e in registry.history() if e["event"] == "promoted"]
        assert promotion["previous"] == "default"
        assert str(promotion["reason"]).startswith("gate passed: department macro-F1")

    def test_the_newest_corrections_are_held_out_of_training(
        self, retrained: Retrained, corpus: Corpus, taxonomy: Taxonomy
    ) -> None:
        """The candidate's training fingerprint covers the corpus and the oldest corrections."""
        store = retrained.configuration.settings.feedback_path
        metadata = read_json_object(retrained.result.directory / "metadata.json")
        data = metadata["training_data"]
        base = load_labelled([corpus.train], taxonomy)
        kept = [correction_example(c, store) for c in retrained.corrections[:-HELD_OUT]]
        everything = [correction_example(c, store) for c in retrained.corrections]
        assert retrained.result.corrections_held_out == HELD_OUT
        assert data["examples"] == len(base) + CORRECTIONS - HELD_OUT
        assert data["loaded"]["examples"] == CORRECTIONS - HELD_OUT
        assert data["fingerprint"] == examples_fingerprint(base + kept)
        assert data["fingerprint"] != examples_fingerprint(base + everything)

    def test_the_gate_scores_both_models_on_test_folders_and_held_out_corrections(
        self, retrained: Retrained, corpus: Corpus, taxonomy: Taxonomy
    ) -> None:
        """Both models are scored on the same requests: test folder plus held-out corrections."""
        expected = len(load_labelled([corpus.test], taxonomy)) + HELD_OUT
        gate = read_json_object(retrained.result.directory / GATE_FILE)
        assert gate["candidate"]["examples"] == gate["current"]["examples"] == expected
        assert gate["current"]["version"] != gate["candidate"]["version"]

    def test_no_promote_evaluates_without_moving_the_pointer(
        self, tmp_path: Path, corpus: Corpus, shipped: Path, degraded: Path
    ) -> None:
        """With promotion off the version is added and gated, and nothing else happens."""
        configuration = _configuration(tmp_path, shipped)
        result = retrain(configuration, _options(corpus, candidate=degraded, promote=False))
        registry = _registry(configuration)
        assert result.outcome == "evaluated"
        assert "would refuse it" in result.summary()
        assert registry.pointer_state() is None
        assert [e["event"] for e in registry.history()] == ["added"]
        assert (result.directory / GATE_FILE).is_file()

    def test_base_and_candidate_together_are_refused(self, tmp_path: Path) -> None:
        """Training from a base and gating a ready-made model exclude each other."""
        with pytest.raises(ValueError, match="candidate"):
            RetrainOptions(base="camembert-base", candidate=tmp_path)


def _correction(number: int, text: str = "Le lampadaire est éteint.") -> Correction:
    return Correction(
        request_id=f"fm-{number:04d}", text=text, department="voirie", urgency="normale",
        urgency_corrected=False, predicted_department="accueil", predicted_urgency="normale",
        model_version="v1", source="cli", created_at=START + timedelta(minutes=number),
    )  # fmt: skip


class TestCorrections:
    """Corrections become examples; the most recent slice is kept for the gate."""

    def test_the_most_recent_fraction_is_held_out(self) -> None:
        """Of ten corrections given out of order, the two most recent are held out."""
        corrections = [_correction(n) for n in (3, 9, 0, 8, 1, 2, 4, 5, 6, 7)]
        training, held_out = split_corrections(corrections, 0.2)
        assert [c.request_id for c in held_out] == ["fm-0008", "fm-0009"]
        assert [c.request_id for c in training] == [f"fm-{n:04d}" for n in range(8)]

    def test_fewer_than_five_corrections_are_all_used_for_training(self) -> None:
        """Four corrections are too few to hold any out."""
        training, held_out = split_corrections([_correction(n) for n in range(4)], 0.5)
        assert (len(training), held_out) == (4, [])

    def test_a_correction_is_a_request_without_subject(self, tmp_path: Path) -> None:
        """The example reads the stored text only, with the correction's labels."""
        example = correction_example(_correction(1, "Texte pseudonymisé."), tmp_path / "f.db")
        assert classifier_input(example.request) == "Texte pseudonymisé."
        assert (example.department, example.urgency) == ("voirie", "normale")
        assert not example.path.is_file()

    def test_corrections_written_as_a_folder_read_back_unchanged(
        self, tmp_path: Path, taxonomy: Taxonomy
    ) -> None:
        """The folder given to folder-only trainers parses back to the same texts and labels."""
        corrections = [_correction(n, f"Demande {n} : le lampadaire est éteint.") for n in range(3)]
        folder = write_corrections_folder(corrections, tmp_path / "corrections")
        examples = load_labelled([folder], taxonomy)
        assert [classifier_input(e.request) for e in examples] == [c.text for c in corrections]
        assert {(e.department, e.urgency) for e in examples} == {("voirie", "normale")}


class TestFinetuneBase:
    """A CamemBERT retrain starts from --base, else from the base the current model records."""

    def test_the_option_wins(self, tmp_path: Path) -> None:
        """`--base` is used whatever the metadata says."""
        assert finetune_base("other", {"base_checkpoint": str(tmp_path)}) == "other"

    def test_the_recorded_base_directory_is_reused(self, tmp_path: Path) -> None:
        """Without --base, the recorded directory is used, random-init note removed."""
        recorded = f"{tmp_path} (architecture and tokenizer only)"
        assert finetune_base(None, {"base_checkpoint": recorded}) == str(tmp_path)

    def test_a_recorded_hub_id_needs_an_explicit_base(self) -> None:
        """A base that is no local directory is refused rather than downloaded."""
        with pytest.raises(ModelError, match="--base"):
            finetune_base(None, {"base_checkpoint": "almanach/camembert-base"})


class TestRetrainingConfig:
    """config/retraining.yaml is validated; every key has a default."""

    def test_the_shipped_file_holds_the_defaults(self) -> None:
        """The documented file and the built-in defaults agree."""
        config = load_retraining_config(CONFIG_DIR)
        assert config.corpus == (Path("data/train"),)
        assert config.test == (Path("data/test"),)
        assert (config.holdout_fraction, config.tolerance) == (0.2, 0.005)

    def test_a_bad_value_names_the_key(self, tmp_path: Path) -> None:
        """A hold-out fraction of 1 stops with an error naming the key."""
        (tmp_path / "retraining.yaml").write_text("holdout_fraction: 1\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="holdout_fraction"):
            load_retraining_config(tmp_path)


def _run(configuration: Configuration, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="triage")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return COMMANDS[args.command](configuration, args)


class TestModelCommands:
    """`triage retrain` and `triage model list | promote | rollback` through their parsers."""

    def test_retrain_exits_with_gate_refused(
        self, tmp_path: Path, corpus: Corpus, shipped: Path, degraded: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:  # fmt: skip
        """A refused candidate gives the GATE_REFUSED exit code and a summary with reasons."""
        configuration = _configuration(tmp_path, shipped)
        code = _run(
            configuration, "retrain", "--candidate", str(degraded), "--test", str(corpus.test)
        )
        out = capsys.readouterr().out
        assert code == exit_codes.GATE_REFUSED
        assert "verdict: refused" in out and "department macro-F1" in out

    def test_list_promote_and_rollback(
        self, tmp_path: Path, corpus: Corpus, shipped: Path, degraded: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:  # fmt: skip
        """A refused version can be promoted by hand, listed as current, then rolled back."""
        configuration = _configuration(tmp_path, shipped)
        _run(configuration, "retrain", "--candidate", str(degraded), "--test", str(corpus.test))
        [version] = [v.name for v in _registry(configuration).versions() if v.name != "default"]
        capsys.readouterr()

        assert _run(configuration, "model", "list") == exit_codes.OK
        listing = capsys.readouterr().out
        assert any(line.startswith("*") and "default" in line for line in listing.splitlines())
        assert any(version in line and "refused" in line for line in listing.splitlines())

        assert _run(configuration, "model", "promote", version, "--reason", "test") == 0
        assert _registry(configuration).pointer_state() == version
        _run(configuration, "model", "list")
        listing = capsys.readouterr().out
        assert any(line.startswith("*") and version in line for line in listing.splitlines())

        assert _run(configuration, "model", "rollback") == exit_codes.OK
        assert "rolled back to default" in capsys.readouterr().out
        assert _registry(configuration).current_version() == "default"
        events = [e["event"] for e in _registry(configuration).history()]
        assert events[-2:] == ["promoted", "rolled_back"]
        assert (configuration.settings.models_root / HISTORY_FILE).is_file()

    def test_promote_of_an_unknown_version_raises(self, tmp_path: Path, shipped: Path) -> None:
        """`model promote` of a missing version is a model error; the pointer stays absent."""
        configuration = _configuration(tmp_path, shipped)
        with pytest.raises(ModelError):
            _run(configuration, "model", "promote", "nope")
        assert _registry(configuration).pointer_state() is None
