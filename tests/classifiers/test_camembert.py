"""Tests of `classifiers/camembert.py`: the two-headed CamemBERT classifier and its directory.

No checkpoint is downloaded: the tokenizer is trained on the fly and the encoder is tiny.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from classifiers import Classifier, Taxonomy, load_classifier
from classifiers.calibration import softmax
from classifiers.camembert import (
    CONFIG_FILE,
    KIND,
    WEIGHTS_FILE,
    CamembertClassifier,
    Dtype,
    InferenceOptions,
    InputEncoder,
    TriageModel,
    from_pretrained,
    model_metadata,
    native_bf16,
    write_model_directory,
)
from classifiers.dataset import LabelledRequest
from classifiers.model_dir import (
    LABELS_FILE,
    METADATA_FILE,
    MODEL_CARD_FILE,
    PICKLE_SUFFIXES,
    read_model_files,
)
from classifiers.tokenizer import tiny_config
from tests.conftest import make_request
from worker.errors import ModelError
from worker.request import Request

pytestmark = pytest.mark.usefixtures("hub_offline")

TEMPERATURES = {"department": 1.5, "urgency": 0.7}
LONG_TEXT = "Le lampadaire de la rue est éteint depuis trois jours. " * 400


def _labels(taxonomy: Taxonomy) -> dict[str, tuple[str, ...]]:
    return {"department": taxonomy.department_keys, "urgency": taxonomy.urgency_keys}


def _fit_toy(
    model: TriageModel, tokenizer: PreTrainedTokenizerFast, corpus: list[LabelledRequest]
) -> None:
    """A few full-batch steps on the corpus, so labels vary and margins exceed rounding noise."""
    encoded = InputEncoder(tokenizer, max_tokens=64).encode_requests([e.request for e in corpus])
    ids = torch.full((len(encoded), 64), tokenizer.pad_token_id, dtype=torch.long)
    for row, sequence in enumerate(encoded):
        ids[row, : len(sequence)] = torch.tensor(sequence)
    mask = (ids != tokenizer.pad_token_id).long()
    departments, urgencies = (
        torch.tensor([model.labels[head].index(getattr(e, head)) for e in corpus])
        for head in ("department", "urgency")
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        department, urgency = model(ids, mask)
        loss = torch.nn.functional.cross_entropy(department, departments)
        loss = loss + torch.nn.functional.cross_entropy(urgency, urgencies)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


@pytest.fixture(scope="module")
def toy_model(
    tiny_tokenizer: PreTrainedTokenizerFast, corpus: list[LabelledRequest], taxonomy: Taxonomy
) -> TriageModel:
    """A tiny CamemBERT with both heads, briefly fitted on the corpus."""
    torch.manual_seed(0)
    model = TriageModel(tiny_config(tiny_tokenizer), _labels(taxonomy))
    _fit_toy(model, tiny_tokenizer, corpus)
    return model


@pytest.fixture(scope="module")
def classifier(
    toy_model: TriageModel, tiny_tokenizer: PreTrainedTokenizerFast
) -> CamembertClassifier:
    """The toy model as a classifier, fp32, with non-trivial temperatures and small batches."""
    options = InferenceOptions(batch_size=4, dtype="fp32")
    return CamembertClassifier(toy_model, tiny_tokenizer, TEMPERATURES, "toy-1", options)


@pytest.fixture(scope="module")
def requests(corpus: list[LabelledRequest]) -> list[Request]:
    """The corpus's requests plus a very long one and one without subject."""
    extra = [
        make_request(LONG_TEXT, subject="Éclairage public", request_id="em-long"),
        make_request("Bonjour, une question sur la cantine.", subject="", request_id="em-bare"),
    ]
    return [e.request for e in corpus] + extra


def _save(classifier: CamembertClassifier, directory: Path, taxonomy: Taxonomy) -> None:
    metadata = model_metadata(
        classifier, base_checkpoint="tiny (trained on the fly)", hyperparameters={"steps": 30}
    )
    write_model_directory(classifier, directory, taxonomy, metadata)


class TestNativeBf16:
    @pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
    def test_bf16_flag_is_detected(self, tmp_path: Path, flag: str) -> None:
        """A cpuinfo whose flags name AVX-512 BF16 or AMX BF16 means native bf16."""
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flag} avx512f\n")
        assert native_bf16(cpuinfo)

    def test_cpu_without_the_flags_has_none(self, tmp_path: Path) -> None:
        """A cpuinfo with AVX-512 but no bf16 flag means no native bf16."""
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
        assert not native_bf16(cpuinfo)

    def test_unreadable_cpuinfo_means_none(self, tmp_path: Path) -> None:
        """Without /proc/cpuinfo (another OS) bf16 is not assumed."""
        assert not native_bf16(tmp_path / "absent")


class TestInferenceOptions:
    @pytest.mark.parametrize(
        ("field", "value"),
        [("max_tokens", 4), ("batch_size", 0), ("threads", 0), ("dtype", "fp16")],
    )
    def test_bad_value_names_its_field(self, field: str, value: object) -> None:
        """An out-of-range option raises ValueError naming the option."""
        with pytest.raises(ValueError, match=field):
            InferenceOptions(**{field: value})  # type: ignore[arg-type]


class TestInputEncoder:
    def test_short_request_is_the_tokenizers_pair_encoding(
        self, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """Within budget, the input is exactly `<s> subject </s></s> text </s>`."""
        request = make_request("Le lampadaire est éteint.", subject="Éclairage")
        [ids] = InputEncoder(tiny_tokenizer).encode_requests([request])
        assert ids == tiny_tokenizer(request.subject, request.classifier_text)["input_ids"]

    def test_long_text_is_cut_and_the_subject_kept(
        self, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """A very long text fills the budget from its start; the whole subject stays in front."""
        subject = tiny_tokenizer("Éclairage public", add_special_tokens=False)["input_ids"]
        start = tiny_tokenizer(LONG_TEXT[:200], add_special_tokens=False)["input_ids"][:20]
        [ids] = InputEncoder(tiny_tokenizer, max_tokens=100).encode(
            ["Éclairage public"], [LONG_TEXT]
        )
        assert len(ids) == 100
        assert ids[: len(subject) + 3] == [0, *subject, 2, 2]
        assert ids[len(subject) + 3 : len(subject) + 23] == start
        assert ids[-1] == 2

    def test_long_subject_keeps_at_most_half_the_budget(
        self, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """A subject longer than the budget leaves the text the other half."""
        [ids] = InputEncoder(tiny_tokenizer, max_tokens=100).encode([LONG_TEXT], [LONG_TEXT])
        separator = ids.index(2)
        assert len(ids) == 100
        assert separator - 1 == (100 - 4) // 2

    def test_budget_is_capped_by_the_encoders_positions(
        self, toy_model: TriageModel, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """A budget beyond the encoder's position embeddings is lowered to what it can read."""
        model = TriageModel(tiny_config(tiny_tokenizer, max_positions=66), toy_model.labels)
        options = InferenceOptions(max_tokens=512)
        classifier = CamembertClassifier(model, tiny_tokenizer, TEMPERATURES, "toy", options)
        [ids] = classifier.encoder.encode_requests([make_request(LONG_TEXT)])
        assert classifier.encoder.max_tokens == len(ids) == 64
        assert len(classifier.predict([make_request(LONG_TEXT)])) == 1


class TestTriageModel:
    def test_one_forward_pass_gives_both_heads(self, toy_model: TriageModel) -> None:
        """The forward pass returns department and urgency logits for every row."""
        ids = torch.tensor([[0, 10, 11, 2, 2, 12, 2], [0, 13, 2, 2, 14, 2, 1]])
        with torch.inference_mode():
            department, urgency = toy_model(ids, (ids != 1).long())
        assert department.shape == (2, 12)
        assert urgency.shape == (2, 4)


class TestCamembertClassifier:
    def test_predictions_cover_every_label_and_sum_to_one(
        self, classifier: CamembertClassifier, requests: list[Request], taxonomy: Taxonomy
    ) -> None:
        """Each head reports a probability for every taxonomy label, summing to 1."""
        for prediction in classifier.predict(requests):
            assert tuple(prediction.department.probabilities) == taxonomy.department_keys
            assert tuple(prediction.urgency.probabilities) == taxonomy.urgency_keys
            assert sum(prediction.department.probabilities.values()) == pytest.approx(1.0)
            assert sum(prediction.urgency.probabilities.values()) == pytest.approx(1.0)
            assert prediction.model_version == "toy-1"

    def test_probabilities_use_the_configured_temperatures(
        self, classifier: CamembertClassifier, requests: list[Request]
    ) -> None:
        """Probabilities are the softmax of the logits divided by each head's temperature."""
        logits = classifier.logits(requests)
        predictions = classifier.predict(requests)
        for head, temperature in TEMPERATURES.items():
            expected = softmax(logits[head], temperature)
            actual = np.array([list(getattr(p, head).probabilities.values()) for p in predictions])
            np.testing.assert_allclose(actual, expected, atol=1e-12)
            assert not np.allclose(actual, softmax(logits[head]), atol=1e-3)

    def test_batch_equals_one_by_one(
        self, classifier: CamembertClassifier, requests: list[Request]
    ) -> None:
        """Padded, length-sorted micro-batches give, in order, what each request alone gives."""
        assert len({len(ids) for ids in classifier.encoder.encode_requests(requests)}) > 5
        batch = classifier.predict(requests)
        alone = [classifier.predict([request])[0] for request in requests]
        assert [p.request_id for p in batch] == [r.id for r in requests]
        assert len({p.department.label for p in batch}) > 1  # else a reordering could hide
        for together, single in zip(batch, alone, strict=True):
            assert together.department.label == single.department.label
            assert together.urgency.label == single.urgency.label
            assert together.department.probabilities == pytest.approx(
                single.department.probabilities, abs=1e-5
            )
            assert together.urgency.probabilities == pytest.approx(
                single.urgency.probabilities, abs=1e-5
            )

    def test_predict_of_no_requests_is_empty(self, classifier: CamembertClassifier) -> None:
        """An empty batch gives an empty list of predictions."""
        assert classifier.predict([]) == []

    def test_prediction_leaves_training_mode_as_it_was(
        self, classifier: CamembertClassifier, requests: list[Request]
    ) -> None:
        """Predicting switches dropout off for the call only, so a trainer can validate mid-run."""
        expected = classifier.logits(requests[:3])
        classifier.model.train()
        try:
            actual = classifier.logits(requests[:3])
            assert classifier.model.training
        finally:
            classifier.model.eval()
        for head in expected:
            np.testing.assert_array_equal(actual[head], expected[head])

    @pytest.mark.parametrize(("dtype", "bf16"), [("fp32", False), ("bf16", True)])
    def test_explicit_dtype_is_obeyed(
        self, classifier: CamembertClassifier, dtype: Dtype, bf16: bool
    ) -> None:
        """dtype "fp32" or "bf16" is used whatever the CPU."""
        options = replace(classifier.options, dtype=dtype)
        other = CamembertClassifier(
            classifier.model, classifier.tokenizer, TEMPERATURES, "toy-1", options
        )
        assert other.uses_bf16 is bf16

    def test_auto_dtype_follows_the_cpu(self, classifier: CamembertClassifier) -> None:
        """dtype "auto" uses bf16 exactly when the CPU has it natively."""
        options = replace(classifier.options, dtype="auto")
        other = CamembertClassifier(
            classifier.model, classifier.tokenizer, TEMPERATURES, "toy-1", options
        )
        assert other.uses_bf16 is native_bf16()

    def test_threads_are_set_only_when_asked(self, classifier: CamembertClassifier) -> None:
        """`threads` sets torch's thread count; leaving it unset keeps the current one."""
        before = torch.get_num_threads()
        try:
            CamembertClassifier(classifier.model, classifier.tokenizer, TEMPERATURES, "t")
            assert torch.get_num_threads() == before
            options = replace(classifier.options, threads=1)
            CamembertClassifier(classifier.model, classifier.tokenizer, TEMPERATURES, "t", options)
            assert torch.get_num_threads() == 1
        finally:
            torch.set_num_threads(before)

    def test_bf16_gives_the_labels_of_fp32(
        self, classifier: CamembertClassifier, requests: list[Request]
    ) -> None:
        """On a CPU with native bf16, bf16 autocast picks the labels fp32 picks."""
        if not native_bf16():
            pytest.skip("this CPU has no native bf16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo)")
        options = replace(classifier.options, dtype="bf16")
        bf16 = CamembertClassifier(
            classifier.model, classifier.tokenizer, TEMPERATURES, "toy-1", options
        )
        expected, actual = classifier.logits(requests), bf16.logits(requests)
        for head in expected:
            np.testing.assert_allclose(actual[head], expected[head], atol=0.05)
            top = np.sort(expected[head], axis=1)
            clear = top[:, -1] - top[:, -2] > 0.05  # a closer tie may flip under any rounding
            assert clear.mean() > 0.8
            np.testing.assert_array_equal(
                actual[head].argmax(axis=1)[clear], expected[head].argmax(axis=1)[clear]
            )


class TestModelDirectory:
    def test_save_and_load_give_identical_probabilities(
        self,
        classifier: CamembertClassifier,
        requests: list[Request],
        taxonomy: Taxonomy,
        tmp_path: Path,
    ) -> None:
        """A saved then reloaded classifier computes the same probabilities and version."""
        _save(classifier, tmp_path / "model", taxonomy)
        loaded = CamembertClassifier.load(
            read_model_files(tmp_path / "model", taxonomy), replace(classifier.options)
        )
        assert loaded.version == "toy-1"
        assert loaded.temperatures == TEMPERATURES
        expected, actual = classifier.probabilities(requests), loaded.probabilities(requests)
        for head in expected:
            np.testing.assert_array_equal(actual[head], expected[head])

    def test_saved_directory_holds_safetensors_and_no_pickle(
        self, classifier: CamembertClassifier, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """The directory holds model.safetensors, config.json, the tokenizer, JSON and Markdown."""
        directory = tmp_path / "model"
        _save(classifier, directory, taxonomy)
        names = {path.name for path in directory.iterdir()}
        assert {WEIGHTS_FILE, CONFIG_FILE, "tokenizer.json", LABELS_FILE, MODEL_CARD_FILE} <= names
        for path in directory.iterdir():
            assert path.suffix.lower() not in PICKLE_SUFFIXES
            assert path.suffix in {".json", ".md", ".safetensors"}
            assert not path.read_bytes().startswith(b"\x80")  # the PROTO opcode of pickles >= 2

    def test_metadata_and_card_describe_the_model(
        self, classifier: CamembertClassifier, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """metadata.json names the kind, base, budget and library versions; the card the base."""
        _save(classifier, tmp_path / "model", taxonomy)
        metadata = json.loads((tmp_path / "model" / METADATA_FILE).read_text(encoding="utf-8"))
        assert metadata["kind"] == KIND == "camembert"
        assert metadata["base_checkpoint"] == "tiny (trained on the fly)"
        assert metadata["max_tokens"] == 256
        assert metadata["hyperparameters"] == {"steps": 30}
        assert metadata["training_data"]["fingerprint"] is None
        assert {"torch", "transformers", "tokenizers"} <= set(metadata["library_versions"])
        card = (tmp_path / "model" / MODEL_CARD_FILE).read_text(encoding="utf-8")
        assert "Base checkpoint: `tiny (trained on the fly)`" in card
        assert "Training data: none recorded" in card

    def test_pickled_weights_are_refused(
        self, classifier: CamembertClassifier, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """A directory that also holds a pytorch_model.bin is refused before anything loads."""
        _save(classifier, tmp_path / "model", taxonomy)
        (tmp_path / "model" / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
        with pytest.raises(ModelError, match="pickle"):
            load_classifier(tmp_path / "model", taxonomy)

    def test_labels_differing_from_the_taxonomy_are_refused(
        self, classifier: CamembertClassifier, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """labels.json naming a department the taxonomy lacks is an error, not a remap."""
        _save(classifier, tmp_path / "model", taxonomy)
        labels_path = tmp_path / "model" / LABELS_FILE
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
        labels["department"][0] = "cabinet_du_maire"
        labels_path.write_text(json.dumps(labels), encoding="utf-8")
        with pytest.raises(ModelError, match="labels differ from the taxonomy"):
            load_classifier(tmp_path / "model", taxonomy)

    def test_weights_of_other_heads_are_refused(
        self, tiny_tokenizer: PreTrainedTokenizerFast, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """Weights whose heads have fewer outputs than labels.json lists raise ModelError."""
        labels = {"department": taxonomy.department_keys[:3], "urgency": taxonomy.urgency_keys}
        model = TriageModel(tiny_config(tiny_tokenizer), labels)
        small = CamembertClassifier(model, tiny_tokenizer, TEMPERATURES, "small")
        _save(small, tmp_path / "model", taxonomy)
        (tmp_path / "model" / LABELS_FILE).write_text(json.dumps(_labels(taxonomy)))
        with pytest.raises(ModelError, match="does not match"):
            load_classifier(tmp_path / "model", taxonomy)

    def test_missing_weights_are_refused(
        self, classifier: CamembertClassifier, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """A directory without model.safetensors raises ModelError."""
        _save(classifier, tmp_path / "model", taxonomy)
        (tmp_path / "model" / WEIGHTS_FILE).unlink()
        with pytest.raises(ModelError, match="incomplete camembert model"):
            load_classifier(tmp_path / "model", taxonomy)

    def test_bad_token_budget_in_metadata_is_refused(
        self, classifier: CamembertClassifier, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """A metadata.json max_tokens that is no usable budget raises ModelError naming the file."""
        _save(classifier, tmp_path / "model", taxonomy)
        metadata_path = tmp_path / "model" / METADATA_FILE
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        metadata["max_tokens"] = 3
        metadata_path.write_text(json.dumps(metadata), encoding="utf-8")
        with pytest.raises(ModelError, match="max_tokens") as caught:
            load_classifier(tmp_path / "model", taxonomy)
        assert METADATA_FILE in str(caught.value)

    def test_load_classifier_dispatches_the_camembert_kind(
        self,
        classifier: CamembertClassifier,
        requests: list[Request],
        taxonomy: Taxonomy,
        tmp_path: Path,
    ) -> None:
        """`load_classifier` recognises the camembert kind and predicts like the saved model."""
        _save(classifier, tmp_path / "model", taxonomy)
        loaded = load_classifier(tmp_path / "model", taxonomy)
        assert isinstance(loaded, CamembertClassifier)
        assert isinstance(loaded, Classifier)
        assert [p.department.label for p in loaded.predict(requests)] == [
            p.department.label for p in classifier.predict(requests)
        ]


class TestFromPretrained:
    def test_local_checkpoint_gives_its_encoder_and_tokenizer(
        self,
        toy_model: TriageModel,
        tiny_tokenizer: PreTrainedTokenizerFast,
        taxonomy: Taxonomy,
        tmp_path: Path,
    ) -> None:
        """A checkpoint directory loads with its encoder weights, its tokenizer and fresh heads."""
        toy_model.encoder.save_pretrained(tmp_path)
        tiny_tokenizer.save_pretrained(tmp_path)
        model, tokenizer = from_pretrained(tmp_path, _labels(taxonomy))
        expected = toy_model.encoder.state_dict()
        for name, tensor in model.encoder.state_dict().items():
            torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
        assert (
            tokenizer("Objet", "Texte")["input_ids"]
            == tiny_tokenizer("Objet", "Texte")["input_ids"]
        )
        assert model.labels == _labels(taxonomy)
        assert not torch.equal(model.department.weight, toy_model.department.weight)

    def test_checkpoint_without_safetensors_is_refused(
        self, tiny_tokenizer: PreTrainedTokenizerFast, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """A checkpoint with only pickled weights raises ModelError instead of unpickling."""
        tiny_config(tiny_tokenizer).save_pretrained(tmp_path)
        tiny_tokenizer.save_pretrained(tmp_path)
        (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
        with pytest.raises(ModelError, match="not a usable CamemBERT checkpoint"):
            from_pretrained(tmp_path, _labels(taxonomy))
