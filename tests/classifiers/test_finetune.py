"""Tests of `classifiers/finetune.py`: arguments, split, the loop, checkpoints and calibration.

A tiny CamemBERT learns a toy signal (departments and urgencies told apart by distinctive words)
from form files written in a temporary folder; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from classifiers import Taxonomy, load_classifier
from classifiers.base import explain
from classifiers.camembert import CamembertClassifier, TriageModel, native_bf16
from classifiers.dataset import load_labelled
from classifiers.finetune import (
    EpochReport,
    FinetuneResult,
    TrainingArguments,
    finetune,
    load_training_arguments,
    split_validation,
)
from classifiers.model_dir import PICKLE_SUFFIXES
from classifiers.safety import SafetyRules
from classifiers.tokenizer import tiny_config
from tests.conftest import CONFIG_DIR, make_prediction, make_request
from worker.config import InferenceSettings
from worker.errors import ConfigError

pytestmark = pytest.mark.usefixtures("hub_offline")

DEPARTMENTS = {
    "voirie": "lampadaire éteint chaussée trou",
    "etat_civil": "passeport naissance mariage acte",
    "urbanisme": "permis construire clôture piscine",
    "social": "logement aide ccas isolée",
}
URGENCIES = {"haute": "danger urgent immédiatement vite", "basse": "tranquillement plus tard"}
FILLERS = ["Bonjour", "Madame", "Monsieur le maire", "Merci", "Cordialement"]
ARGS = TrainingArguments(
    epochs=30,
    batch_size=8,
    gradient_accumulation=1,
    learning_rate=3e-3,
    warmup_ratio=0.1,
    max_tokens=32,
    dropout=0.0,
    early_stopping_patience=0,
    validation_fraction=0.25,
    seed=3,
    checkpoint_every=0,
)


def _text(department: str, urgency: str, filler: str) -> tuple[str, str]:
    subject = f"{DEPARTMENTS[department].split()[0]} {URGENCIES[urgency].split()[0]}"
    return subject, f"{filler}, {URGENCIES[urgency]} : {DEPARTMENTS[department]}."


def _write_folder(folder: Path) -> Path:
    """Forty labelled form files: every department × urgency × filler."""
    folder.mkdir(parents=True)
    lines = []
    for department in DEPARTMENTS:
        for urgency in URGENCIES:
            for n, filler in enumerate(FILLERS):
                name = f"{department}_{urgency}_{n}.json"
                subject, message = _text(department, urgency, filler)
                form = {
                    "form_id": "contact",
                    "submitted_at": "2025-11-12T16:48:05+01:00",
                    "subject": subject,
                    "message": message,
                }
                (folder / name).write_text(json.dumps(form), encoding="utf-8")
                record = {"file": name, "department": department, "urgency": urgency}
                lines.append(json.dumps(record))
    (folder / "labels.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _tiny(tokenizer: PreTrainedTokenizerFast, taxonomy: Taxonomy) -> TriageModel:
    torch.manual_seed(0)
    labels = {"department": taxonomy.department_keys, "urgency": taxonomy.urgency_keys}
    config = tiny_config(tokenizer, hidden=64, layers=2, heads=4, intermediate=128)
    return TriageModel(config, labels)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_folder(tmp_path_factory.mktemp("toy") / "train")


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
    data: Path,
    tiny_tokenizer: PreTrainedTokenizerFast,
    taxonomy: Taxonomy,
    safety_rules: SafetyRules,
) -> FinetuneResult:
    """One uninterrupted run, shared by the tests that only read its outcome."""
    out = tmp_path_factory.mktemp("models") / "camembert"
    return finetune(
        None,
        [data],
        out,
        taxonomy,
        safety_rules,
        args=ARGS,
        tokenizer_and_model=(tiny_tokenizer, _tiny(tiny_tokenizer, taxonomy)),
        progress=False,
    )


class TestTrainingArguments:
    def test_bad_value_names_its_field(self) -> None:
        """An out-of-range argument raises ValueError naming the field."""
        with pytest.raises(ValueError, match="warmup_ratio"):
            TrainingArguments(warmup_ratio=1.5)


class TestLoadTrainingArguments:
    def test_project_defaults_load(self) -> None:
        """config/training.yaml is valid and overrides are converted to the field's type."""
        args = load_training_arguments(
            CONFIG_DIR / "training.yaml",
            {"epochs": "3", "class_weighting": "off", "threads": "null", "dropout": "0.2"},
        )
        assert (args.epochs, args.class_weighting, args.threads, args.dropout) == (
            3,
            False,
            None,
            0.2,
        )

    def test_unknown_key_in_file_is_named(self, tmp_path: Path) -> None:
        """An unknown YAML key gives a ConfigError naming the file and the key."""
        path = tmp_path / "training.yaml"
        path.write_text("epochs: 2\nlearnig_rate: 0.1\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="learnig_rate") as caught:
            load_training_arguments(path, {})
        assert caught.value.source == str(path)

    def test_bad_yaml_value_is_named(self, tmp_path: Path) -> None:
        """An out-of-range or mistyped YAML value gives a ConfigError naming the key."""
        path = tmp_path / "training.yaml"
        path.write_text("batch_size: 0\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_training_arguments(path, {})
        assert caught.value.key == "batch_size"
        path.write_text("epochs: many\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_training_arguments(path, {})
        assert caught.value.key == "epochs"

    def test_bad_override_is_named(self) -> None:
        """An unknown or unparsable `--set` override gives a ConfigError naming the key."""
        with pytest.raises(ConfigError, match="--set seeds"):
            load_training_arguments(None, {"seeds": "1"})
        with pytest.raises(ConfigError) as caught:
            load_training_arguments(None, {"learning_rate": "fast"})
        assert caught.value.key == "learning_rate"


class TestSplitValidation:
    def test_every_department_is_on_both_sides(self, data: Path, taxonomy: Taxonomy) -> None:
        """The stratified split keeps each department in training and in validation."""
        examples = load_labelled([data], taxonomy)
        train, held_out = split_validation(examples, 0.25, seed=1)
        assert len(train) + len(held_out) == len(examples)
        assert {e.department for e in train} == set(DEPARTMENTS)
        assert {e.department for e in held_out} == set(DEPARTMENTS)
        assert set(Counter(e.department for e in held_out).values()) <= {2, 3}


class TestFinetune:
    def test_training_loss_decreases(self, trained: FinetuneResult) -> None:
        """The last epoch's mean training loss is well below the first one's."""
        assert trained.history[-1].train_loss < 0.5 * trained.history[0].train_loss

    def test_both_heads_learn_the_toy_signal(
        self, trained: FinetuneResult, taxonomy: Taxonomy
    ) -> None:
        """The written directory loads and beats chance on texts with an unseen greeting."""
        classifier = load_classifier(trained.directory, taxonomy)
        cases = [
            (d, u, make_request(text, subject=subject))
            for d in DEPARTMENTS
            for u in URGENCIES
            for subject, text in [_text(d, u, "Bonsoir à vous")]
        ]
        predictions = classifier.predict([request for _, _, request in cases])
        departments = sum(
            p.department.label == d for (d, _, _), p in zip(cases, predictions, strict=True)
        )
        urgencies = sum(
            p.urgency.label == u for (_, u, _), p in zip(cases, predictions, strict=True)
        )
        assert departments >= 6  # chance: 2 of 8
        assert urgencies >= 7  # chance: 4 of 8

    def test_calibration_is_stored_and_does_not_worsen_ece(self, trained: FinetuneResult) -> None:
        """calibration.json holds both temperatures; ECE after scaling is at most ECE before."""
        stored = json.loads((trained.directory / "calibration.json").read_text(encoding="utf-8"))
        for head, report in trained.calibration.items():
            assert stored[head] == pytest.approx(report["temperature"])
            assert report["ece_after"] <= report["ece_before"]

    def test_checkpoint_is_removed_after_the_write(self, trained: FinetuneResult) -> None:
        """A successful run leaves the model directory and no checkpoint."""
        assert (trained.directory / "model.safetensors").is_file()
        assert not trained.directory.with_name("camembert.checkpoint").exists()


class SimulatedCrashError(Exception):
    """Stands for a crash or Ctrl-C after an epoch."""


class TestResume:
    def test_interrupted_run_resumes_to_the_same_model(
        self,
        tmp_path: Path,
        data: Path,
        tiny_tokenizer: PreTrainedTokenizerFast,
        taxonomy: Taxonomy,
        safety_rules: SafetyRules,
        trained: FinetuneResult,
    ) -> None:
        """After a stop at epoch 2 the rerun continues from epoch 3, ends like the uninterrupted
        run, and the checkpoint holds no pickle."""
        out, checkpoint = tmp_path / "camembert", tmp_path / "ckpt"

        def stop_at_two(report: EpochReport) -> None:
            if report.epoch == 2:
                raise SimulatedCrashError

        with pytest.raises(SimulatedCrashError):
            finetune(
                None,
                [data],
                out,
                taxonomy,
                safety_rules,
                args=ARGS,
                tokenizer_and_model=(tiny_tokenizer, _tiny(tiny_tokenizer, taxonomy)),
                checkpoint_dir=checkpoint,
                progress=False,
                on_epoch_end=stop_at_two,
            )
        files = [p for p in checkpoint.rglob("*") if p.is_file()]
        assert {p.suffix for p in files} == {".json", ".safetensors"}
        assert not any(p.suffix in PICKLE_SUFFIXES for p in files)
        seen: list[int] = []
        resumed = finetune(
            None,
            [data],
            out,
            taxonomy,
            safety_rules,
            args=ARGS,
            tokenizer_and_model=(tiny_tokenizer, _tiny(tiny_tokenizer, taxonomy)),
            checkpoint_dir=checkpoint,
            progress=False,
            on_epoch_end=lambda r: seen.append(r.epoch),
        )
        assert resumed.resumed_from_epoch == 2
        assert seen == list(range(3, ARGS.epochs + 1))
        for mine, theirs in zip(resumed.history, trained.history, strict=True):
            assert mine.train_loss == pytest.approx(theirs.train_loss, rel=1e-4)
        assert resumed.calibration["department"]["temperature"] == pytest.approx(
            trained.calibration["department"]["temperature"], rel=1e-3
        )
        assert not checkpoint.exists()

    def test_checkpoint_of_other_data_is_ignored(
        self,
        tmp_path: Path,
        data: Path,
        tiny_tokenizer: PreTrainedTokenizerFast,
        taxonomy: Taxonomy,
        safety_rules: SafetyRules,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A checkpoint whose run key differs is reported and training starts from epoch 0."""
        checkpoint = tmp_path / "ckpt"
        checkpoint.mkdir()
        (checkpoint / "state.json").write_text('{"run_key": {"fingerprint": "other"}}')
        args = TrainingArguments(**{**vars(ARGS), "epochs": 1})
        result = finetune(
            None,
            [data],
            tmp_path / "m",
            taxonomy,
            safety_rules,
            args=args,
            tokenizer_and_model=(tiny_tokenizer, _tiny(tiny_tokenizer, taxonomy)),
            checkpoint_dir=checkpoint,
            progress=False,
        )
        assert result.resumed_from_epoch == 0
        assert "starting over" in capsys.readouterr().err


class TestExplanationsAndVariants:
    def test_gradient_explanation_quotes_the_request_for_both_heads(
        self, trained: FinetuneResult, taxonomy: Taxonomy
    ) -> None:
        """On the trained toy model, evidence is words of the request, per head, weights > 0."""
        classifier = load_classifier(trained.directory, taxonomy)
        cases = [_text(d, u, "Bonsoir à vous") for d in DEPARTMENTS for u in URGENCIES]
        requests = [make_request(text, subject=subject) for subject, text in cases]
        explained = explain(classifier, requests, classifier.predict(requests))
        for (subject, text), prediction in zip(cases, explained, strict=True):
            assert prediction.evidence
            assert {e.head for e in prediction.evidence} <= {"department", "urgency"}
            assert all(e.text in f"{subject}\n{text}" and e.weight > 0 for e in prediction.evidence)

    def test_gradient_times_input_lands_on_the_word_the_logit_reads(
        self, trained: FinetuneResult, taxonomy: Taxonomy
    ) -> None:
        """With heads that read one token's embedding only, the attribution is exact: all of
        it goes to the word holding that token, whatever the toy model learnt."""
        classifier = load_classifier(trained.directory, taxonomy)
        assert isinstance(classifier, CamembertClassifier)
        request = make_request("Bonsoir, je voudrais un acte de naissance", subject="Demande")
        ids, spans = classifier.encoder.encode_with_spans(request.subject, request.classifier_text)
        full = f"{request.subject}\n{request.classifier_text}"
        start = full.index("naissance")
        position = next(i for i, span in enumerate(spans) if span and span[0] == start)
        table = classifier.model.encoder.embeddings.word_embeddings.weight.detach()
        direction = table[ids[position]] - table[classifier.tokenizer.mask_token_id]

        def one_token_heads(
            embeddings: torch.Tensor, attention_mask: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            score = (embeddings[:, position] @ direction).unsqueeze(-1)
            return score.repeat(1, len(taxonomy.department_keys)), score.repeat(1, 4)

        classifier.model.from_embeddings = one_token_heads  # type: ignore[method-assign]
        prediction = make_prediction("etat_civil", "normale", taxonomy=taxonomy)
        [explained] = explain(classifier, [request], [prediction])
        assert [(e.head, e.text) for e in explained.evidence] == [
            ("department", "naissance"),
            ("urgency", "naissance"),
        ]

    def test_training_records_the_variant_checks(self, trained: FinetuneResult) -> None:
        """metadata.json says whether int8 (and bf16, where native) keep validation macro-F1."""
        metadata = json.loads((trained.directory / "metadata.json").read_text(encoding="utf-8"))
        verdicts = metadata["inference_variants"]
        assert verdicts["int8"]["checked"] is True
        losses = verdicts["int8"]["macro_f1_loss"]
        assert verdicts["int8"]["allowed"] == all(loss <= 0.005 for loss in losses.values())
        assert verdicts["bf16"]["checked"] is native_bf16()

    @pytest.mark.parametrize("allowed", [True, False])
    def test_int8_runs_only_where_the_check_allowed_it(
        self, trained: FinetuneResult, taxonomy: Taxonomy, allowed: bool, tmp_path: Path
    ) -> None:
        """A refused int8 falls back to fp32; an allowed one quantises the linear layers."""
        model = tmp_path / "model"
        shutil.copytree(trained.directory, model)
        metadata = json.loads((model / "metadata.json").read_text(encoding="utf-8"))
        metadata["inference_variants"]["int8"]["allowed"] = allowed
        (model / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
        classifier = load_classifier(model, taxonomy, InferenceSettings(quantize="int8"))
        assert isinstance(classifier, CamembertClassifier)
        assert classifier.options.quantize == ("int8" if allowed else "none")
        quantized = any("quantized" in type(m).__module__ for m in classifier._runner.modules())
        assert quantized is allowed
        requests = [
            make_request(text, subject=subject)
            for subject, text in (_text(d, "haute", "Bonsoir à vous") for d in DEPARTMENTS)
        ]
        reference = load_classifier(model, taxonomy, InferenceSettings(quantize="none"))
        labels = [p.department.label for p in classifier.predict(requests)]
        assert labels == [p.department.label for p in reference.predict(requests)]
