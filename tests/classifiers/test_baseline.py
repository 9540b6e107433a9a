"""Tests of `classifiers/baseline.py`: the TF-IDF + logistic-regression baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from classifiers import Taxonomy, load_classifier
from classifiers.baseline import KIND, WEIGHTS_FILE, TfidfBaseline
from classifiers.model_dir import PICKLE_SUFFIXES, read_model_files, write_model_files
from classifiers.text import classifier_input
from tests.conftest import make_request

# Department and urgency are each carried by their own vocabulary, so a bag-of-words model can
# separate them: every department text appears once with an urgent and once with a calm ending.
_DEPARTMENT_TEXTS = (
    ("Le lampadaire de la rue est éteint", "voirie"),
    ("Un nid-de-poule sur la chaussée de la rue", "voirie"),
    ("Le trottoir de la rue est défoncé", "voirie"),
    ("Le feu de la chaussée ne fonctionne plus rue des Lilas", "voirie"),
    ("Je voudrais un acte de naissance", "etat_civil"),
    ("Demande de passeport et carte d'identité", "etat_civil"),
    ("Copie intégrale de mon acte de mariage", "etat_civil"),
    ("Rendez-vous pour un passeport et un acte", "etat_civil"),
    ("La poubelle n'a pas été collectée", "proprete_dechets"),
    ("Dépôt sauvage de déchets et encombrants", "proprete_dechets"),
    ("Le bac de tri des déchets est cassé", "proprete_dechets"),
    ("Collecte des encombrants et de la poubelle", "proprete_dechets"),
)
_URGENCY_ENDINGS = (
    ("Danger immédiat, c'est urgent, venez tout de suite !", "critique"),
    ("Aucune urgence, simple question, merci d'avance.", "basse"),
)
TOY_TEXTS = tuple(
    f"{text}. {ending}" for text, _ in _DEPARTMENT_TEXTS for ending, _ in _URGENCY_ENDINGS
)
TOY_DEPARTMENTS = tuple(dep for _, dep in _DEPARTMENT_TEXTS for _ in _URGENCY_ENDINGS)
TOY_URGENCIES = tuple(urg for _ in _DEPARTMENT_TEXTS for _, urg in _URGENCY_ENDINGS)

HELD_OUT = (
    ("Le lampadaire du trottoir est cassé. Danger immédiat, venez vite", "voirie", "critique"),
    ("Je souhaite un acte de décès. Aucune urgence, merci", "etat_civil", "basse"),
    ("Les déchets de la poubelle débordent. C'est urgent, danger", "proprete_dechets", "critique"),
    ("Nid-de-poule dans la chaussée, simple question, merci", "voirie", "basse"),
    ("Passeport perdu, rendez-vous possible ? merci d'avance", "etat_civil", "basse"),
    ("Encombrants déposés dans la rue, danger immédiat !", "proprete_dechets", "critique"),
)


def _labels(taxonomy: Taxonomy) -> dict[str, tuple[str, ...]]:
    return {"department": taxonomy.department_keys, "urgency": taxonomy.urgency_keys}


def _fit_toy(taxonomy: Taxonomy) -> TfidfBaseline:
    return TfidfBaseline.fit(
        TOY_TEXTS,
        {"department": TOY_DEPARTMENTS, "urgency": TOY_URGENCIES},
        _labels(taxonomy),
        version="toy-1",
    )


@pytest.fixture(scope="module")
def toy_model(taxonomy: Taxonomy) -> TfidfBaseline:
    """The baseline fitted on the toy set: three departments, two urgencies."""
    return _fit_toy(taxonomy)


def _save(model: TfidfBaseline, directory: Path, taxonomy: Taxonomy) -> None:
    directory.mkdir()
    model.save(directory)
    write_model_files(
        directory,
        _labels(taxonomy),
        dict(model.temperatures),
        {"kind": KIND, "version": model.version},
        "# toy model\n",
    )


class TestTfidfBaseline:
    def test_predicts_held_out_departments(self, toy_model: TfidfBaseline) -> None:
        """Unseen texts that share the department vocabulary get the right department."""
        requests = [make_request(text, subject="") for text, _, _ in HELD_OUT]
        predicted = [p.department.label for p in toy_model.predict(requests)]
        assert predicted == [department for _, department, _ in HELD_OUT]

    def test_predicts_held_out_urgencies(self, toy_model: TfidfBaseline) -> None:
        """Unseen texts that share the urgency vocabulary get the right urgency (binary head)."""
        requests = [make_request(text, subject="") for text, _, _ in HELD_OUT]
        predicted = [p.urgency.label for p in toy_model.predict(requests)]
        assert predicted == [urgency for _, _, urgency in HELD_OUT]

    def test_probabilities_cover_every_taxonomy_label_and_sum_to_one(
        self, toy_model: TfidfBaseline, taxonomy: Taxonomy
    ) -> None:
        """Each head reports a probability for every taxonomy label, summing to 1."""
        predictions = toy_model.predict([make_request(text) for text, _, _ in HELD_OUT])
        for prediction in predictions:
            assert tuple(prediction.department.probabilities) == taxonomy.department_keys
            assert tuple(prediction.urgency.probabilities) == taxonomy.urgency_keys
            assert sum(prediction.department.probabilities.values()) == pytest.approx(1.0)
            assert sum(prediction.urgency.probabilities.values()) == pytest.approx(1.0)
            assert prediction.department.confidence == max(
                prediction.department.probabilities.values()
            )

    def test_labels_absent_from_training_get_no_probability(
        self, toy_model: TfidfBaseline, taxonomy: Taxonomy
    ) -> None:
        """Departments and urgencies never seen in training keep a probability of about 0."""
        probabilities = toy_model.probabilities([text for text, _, _ in HELD_OUT])
        unseen = {
            "department": set(taxonomy.department_keys) - set(TOY_DEPARTMENTS),
            "urgency": set(taxonomy.urgency_keys) - set(TOY_URGENCIES),
        }
        for head, labels in unseen.items():
            assert labels
            columns = [toy_model.labels[head].index(label) for label in labels]
            assert probabilities[head][:, columns].max() < 1e-12

    def test_probability_rows_sum_to_one(self, toy_model: TfidfBaseline) -> None:
        """The raw probability matrices are row-stochastic for both heads."""
        probabilities = toy_model.probabilities(list(TOY_TEXTS))
        for head in ("department", "urgency"):
            np.testing.assert_allclose(probabilities[head].sum(axis=1), 1.0, atol=1e-12)

    def test_save_and_load_give_identical_probabilities(
        self, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """A saved then reloaded model computes the same probabilities as the fitted one."""
        model = _fit_toy(taxonomy)
        model.temperatures["department"] = 1.7  # a non-trivial temperature must survive too
        _save(model, tmp_path / "model", taxonomy)
        texts = [text for text, _, _ in HELD_OUT] + ["texte sans rapport : bonjour"]
        expected = model.probabilities(texts)
        loaded = TfidfBaseline.load(read_model_files(tmp_path / "model", taxonomy))
        assert loaded.version == "toy-1"
        assert loaded.temperatures["department"] == 1.7
        actual = loaded.probabilities(texts)
        for head in ("department", "urgency"):
            np.testing.assert_array_equal(actual[head], expected[head])

    def test_load_classifier_loads_the_saved_baseline(
        self, toy_model: TfidfBaseline, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """`load_classifier` recognises the baseline kind and predicts like the fitted model."""
        _save(toy_model, tmp_path / "model", taxonomy)
        classifier = load_classifier(tmp_path / "model", taxonomy)
        requests = [make_request(text) for text, _, _ in HELD_OUT]
        assert isinstance(classifier, TfidfBaseline)
        assert [p.department.label for p in classifier.predict(requests)] == [
            p.department.label for p in toy_model.predict(requests)
        ]

    def test_saved_directory_holds_no_pickle(
        self, toy_model: TfidfBaseline, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """Every saved file is JSON, Markdown or safetensors; none is pickle-based."""
        directory = tmp_path / "model"
        _save(toy_model, directory, taxonomy)
        files = sorted(path for path in directory.iterdir())
        assert files
        for path in files:
            assert path.is_file()
            assert path.suffix.lower() not in PICKLE_SUFFIXES
            assert path.suffix in {".json", ".md", ".safetensors"}
            assert not path.read_bytes().startswith(b"\x80")  # the PROTO opcode of pickles >= 2
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))

    def test_weights_file_is_safetensors(
        self, toy_model: TfidfBaseline, taxonomy: Taxonomy, tmp_path: Path
    ) -> None:
        """The weights file opens with safetensors and holds each head's coefficients."""
        directory = tmp_path / "model"
        _save(toy_model, directory, taxonomy)
        tensors = load_file(str(directory / WEIGHTS_FILE))
        assert {"department.coef", "department.intercept", "urgency.coef"} <= set(tensors)
        assert tensors["department.coef"].shape[0] == len(taxonomy.department_keys)
        assert tensors["urgency.intercept"].shape == (len(taxonomy.urgency_keys),)

    def test_predict_of_no_requests_is_empty(self, toy_model: TfidfBaseline) -> None:
        """An empty batch gives an empty list of predictions."""
        assert toy_model.predict([]) == []

    def test_batch_prediction_equals_one_by_one(self, toy_model: TfidfBaseline) -> None:
        """Predicting a batch gives, in order, what predicting each request alone gives."""
        requests = [
            make_request(text, request_id=f"em-{i}") for i, (text, _, _) in enumerate(HELD_OUT)
        ]
        batch = toy_model.predict(requests)
        alone = [toy_model.predict([request])[0] for request in requests]
        assert [p.request_id for p in batch] == [r.id for r in requests]
        for together, single in zip(batch, alone, strict=True):
            assert together.department.label == single.department.label
            assert together.urgency.label == single.urgency.label
            assert together.department.probabilities == pytest.approx(
                single.department.probabilities, abs=1e-12
            )
            assert together.urgency.probabilities == pytest.approx(
                single.urgency.probabilities, abs=1e-12
            )

    def test_prediction_reads_subject_and_text(self, toy_model: TfidfBaseline) -> None:
        """The subject is part of what the model reads, as `classifier_input` says."""
        request = make_request("Danger immédiat, venez vite", subject="Acte de naissance")
        probabilities = toy_model.probabilities([classifier_input(request)])
        [prediction] = toy_model.predict([request])
        assert prediction.department.label == "etat_civil"
        index = toy_model.labels["department"].index("etat_civil")
        assert prediction.department.confidence == pytest.approx(
            probabilities["department"][0, index], abs=1e-12
        )

    def test_prediction_carries_request_id_and_version(self, toy_model: TfidfBaseline) -> None:
        """Each prediction names its request and the model version."""
        [prediction] = toy_model.predict([make_request(request_id="form-42")])
        assert prediction.request_id == "form-42"
        assert prediction.model_version == "toy-1"
        assert prediction.safety_rules == ()
