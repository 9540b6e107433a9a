"""The TF-IDF + logistic-regression baseline (the approach of Amsterdam's Signalen).

Two feature sets, word unigrams+bigrams and character n-grams within word boundaries (robust to
typos and missing accents), feed two independent multinomial logistic regressions: one for the
department, one for the urgency. It stays as the reference a neural model must beat.

Persistence uses no pickle: the vectorisers' parameters and vocabularies go to JSON, the IDF
vectors and the regression weights to safetensors. Probabilities are computed here from the saved
weights (softmax of the logits divided by the calibrated temperature), so a saved and reloaded
model gives identical predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from classifiers.base import Evidence, Prediction, predictions_from_probabilities
from classifiers.calibration import FloatArray, softmax
from classifiers.explain import (
    explained_text,
    model_labels,
    occlusion_weights,
    top_phrases,
    words_of,
)
from classifiers.model_dir import ModelFiles, read_json, write_json
from classifiers.pseudonymise import is_placeholder, pseudonymise
from classifiers.text import classifier_input
from worker.errors import ModelError
from worker.request import Request

KIND = "tfidf-logreg"
VECTORIZERS_FILE = "vectorizers.json"
WEIGHTS_FILE = "weights.safetensors"
HEADS = ("department", "urgency")

_VECTORIZER_PARAMS: dict[str, dict[str, Any]] = {
    "word": {
        "analyzer": "word",
        "ngram_range": (1, 2),
        "min_df": 1,
        "sublinear_tf": True,
        "strip_accents": "unicode",
        "lowercase": True,
        "token_pattern": r"(?u)\b\w\w+\b",
    },
    "char": {
        "analyzer": "char_wb",
        "ngram_range": (2, 5),
        "min_df": 2,
        "sublinear_tf": True,
        "strip_accents": "unicode",
        "lowercase": True,
    },
}


def _vectorizer(
    params: dict[str, Any], vocabulary: dict[str, int] | None = None
) -> TfidfVectorizer:
    params = {**params, "ngram_range": tuple(params["ngram_range"])}
    return TfidfVectorizer(vocabulary=vocabulary, dtype=np.float64, **params)


class _OneScoring:
    """A model's probabilities of the last batch of variants, computed once for every head."""

    def __init__(self, model: TfidfBaseline) -> None:
        self._model = model
        self._texts: tuple[str, ...] = ()
        self._scores: dict[str, FloatArray] = {}

    def column(self, head: str, column: int, texts: Sequence[str]) -> list[float]:
        if tuple(texts) != self._texts:
            self._texts = tuple(texts)
            self._scores = self._model.probabilities(texts)
        return [float(p) for p in self._scores[head][:, column]]


class TfidfBaseline:
    """A trained baseline: vectorisers, per-head weights, label lists and temperatures."""

    def __init__(
        self,
        vectorizers: dict[str, TfidfVectorizer],
        weights: dict[str, tuple[FloatArray, FloatArray]],
        labels: dict[str, tuple[str, ...]],
        temperatures: dict[str, float],
        version: str,
    ) -> None:
        self._vectorizers = vectorizers
        self._weights = weights
        self.labels = labels
        self.temperatures = temperatures
        self._version = version

    @property
    def version(self) -> str:
        return self._version

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        targets: dict[str, Sequence[str]],
        labels: dict[str, tuple[str, ...]],
        *,
        regularisation: float = 10.0,
        seed: int = 0,
        version: str = "untrained",
    ) -> TfidfBaseline:
        """Fit both heads on `texts`; every label of `labels` is a column even if unseen."""
        vectorizers = {name: _vectorizer(params) for name, params in _VECTORIZER_PARAMS.items()}
        features = sp.hstack([v.fit_transform(texts) for v in vectorizers.values()]).tocsr()
        weights: dict[str, tuple[FloatArray, FloatArray]] = {}
        for head in HEADS:
            index = {label: i for i, label in enumerate(labels[head])}
            y = np.array([index[label] for label in targets[head]])
            model = LogisticRegression(
                C=regularisation, class_weight="balanced", max_iter=3000, random_state=seed
            )
            model.fit(features, y)
            coef = np.zeros((len(labels[head]), features.shape[1]))
            intercept = np.full(len(labels[head]), -1e4)  # labels never seen stay impossible
            if len(model.classes_) == 2:  # sklearn stores one row for binary problems
                coef[model.classes_[1]], intercept[model.classes_[1]] = (
                    model.coef_[0],
                    model.intercept_[0],
                )
                coef[model.classes_[0]], intercept[model.classes_[0]] = 0.0, 0.0
            else:
                coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
            weights[head] = (coef, intercept)
        return cls(vectorizers, weights, labels, {head: 1.0 for head in HEADS}, version)

    def logits(self, texts: Sequence[str]) -> dict[str, FloatArray]:
        """Raw scores of every label, per head, before temperature scaling."""
        features = sp.hstack([v.transform(texts) for v in self._vectorizers.values()]).tocsr()
        return {
            head: np.asarray(features @ coef.T) + intercept
            for head, (coef, intercept) in self._weights.items()
        }

    def probabilities(self, texts: Sequence[str]) -> dict[str, FloatArray]:
        return {
            head: softmax(scores, self.temperatures[head])
            for head, scores in self.logits(texts).items()
        }

    def predict(self, requests: Sequence[Request]) -> list[Prediction]:
        if not requests:
            return []
        probabilities = self.probabilities([classifier_input(r) for r in requests])
        return predictions_from_probabilities(requests, probabilities, self.labels, self.version)

    def explain(
        self, requests: Sequence[Request], predictions: Sequence[Prediction]
    ) -> list[tuple[Evidence, ...]]:
        """Occlusion over the subject and first sentences (see `classifiers.explain`).

        The explained text is pseudonymised first, as the model reads it: evidence never quotes
        a name or a number, placeholders are never evidence, and each occluded variant is scored
        once for both heads.
        """
        found = []
        for request, prediction in zip(requests, predictions, strict=True):
            text = pseudonymise(explained_text(request.subject, request.classifier_text))
            words = words_of(text)
            scored = _OneScoring(self)
            evidence: list[Evidence] = []
            for head, label in model_labels(prediction).items():
                column = self.labels[head].index(label)
                weights = occlusion_weights(text, words, partial(scored.column, head, column))
                for index, word in enumerate(words):
                    if is_placeholder(text, word):
                        weights[index] = 0.0
                evidence += top_phrases(text, words, weights, head)
            found.append(tuple(evidence))
        return found

    def save(self, directory: Path) -> None:
        """Write the vectorisers and weights; `model_dir` writes labels, calibration, metadata."""
        vocabularies = {
            name: {term: int(i) for term, i in vectorizer.vocabulary_.items()}
            for name, vectorizer in self._vectorizers.items()
        }
        write_json(
            directory / VECTORIZERS_FILE,
            {"params": _VECTORIZER_PARAMS, "vocabularies": vocabularies},
        )
        tensors: dict[str, NDArray[Any]] = {}
        for name, vectorizer in self._vectorizers.items():
            tensors[f"idf.{name}"] = np.ascontiguousarray(vectorizer.idf_)
        for head, (coef, intercept) in self._weights.items():
            tensors[f"{head}.coef"] = np.ascontiguousarray(coef)
            tensors[f"{head}.intercept"] = np.ascontiguousarray(intercept)
        save_file(tensors, str(directory / WEIGHTS_FILE))

    @classmethod
    def load(cls, files: ModelFiles) -> TfidfBaseline:
        directory = files.directory
        try:
            stored = read_json(directory / VECTORIZERS_FILE)
            tensors = load_file(str(directory / WEIGHTS_FILE))
            vectorizers = {}
            for name, params in stored["params"].items():
                vectorizer = _vectorizer(params, stored["vocabularies"][name])
                vectorizer.idf_ = tensors[f"idf.{name}"]
                vectorizers[name] = vectorizer
            weights = {
                head: (tensors[f"{head}.coef"], tensors[f"{head}.intercept"]) for head in HEADS
            }
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ModelError(f"{directory}: incomplete baseline model ({exc!r})") from exc
        for head in HEADS:
            if weights[head][0].shape[0] != len(files.labels[head]):
                raise ModelError(f"{directory}: {head} weights do not match labels.json")
        return cls(vectorizers, weights, files.labels, files.temperatures, files.version)
