"""Tests of `classifiers/explain.py` and the TF-IDF baseline's occlusion explanations."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifiers import Taxonomy, load_classifier
from classifiers.base import Evidence, explain
from classifiers.explain import (
    format_evidence,
    occlusion_weights,
    top_phrases,
    words_of,
)
from tests.conftest import make_prediction, make_request
from tests.twins import KeywordClassifier


class TestTopPhrases:
    def test_adjacent_heavy_words_merge_into_one_phrase(self) -> None:
        """Neighbouring chosen words become one phrase whose weight is their sum."""
        text = "un arbre tombé bloque la route"
        words = words_of(text)
        weights = [0.0, 0.5, 0.3, 0.0, 0.0, 0.2]
        evidence = top_phrases(text, words, weights, "department", top=3)
        assert [e.text for e in evidence] == ["arbre tombé", "route"]
        assert evidence[0].weight == pytest.approx(0.8)

    def test_function_words_and_negative_weights_are_never_evidence(self) -> None:
        """'le', 'Bonjour' and a word that argues against the label are left out."""
        text = "Bonjour le lampadaire clignote"
        words = words_of(text)
        evidence = top_phrases(text, words, [0.9, 0.8, -0.4, 0.1], "department", top=4)
        assert [e.text for e in evidence] == ["clignote"]

    def test_format_evidence_quotes_in_french_and_filters_by_head(self) -> None:
        evidence = (
            Evidence(head="department", text="arbre", weight=0.6),
            Evidence(head="urgency", text="bloque", weight=1.0),
            Evidence(head="department", text="chaussée", weight=0.4),
        )
        assert format_evidence(evidence) == "« arbre », « chaussée »"
        assert format_evidence(evidence, "urgency") == "« bloque »"


class TestOcclusion:
    def test_the_decisive_word_gets_the_weight(self) -> None:
        """A label that depends on one word: removing it is the only drop."""
        text = "Bonjour, un nid de poule rue Haute"
        words = words_of(text)

        def probability(texts: list[str]) -> list[float]:
            return [0.9 if "poule" in t else 0.2 for t in texts]

        weights = occlusion_weights(text, words, probability)
        assert weights[words.index(next(w for w in words if w.text == "poule"))] == pytest.approx(
            0.7
        )
        assert sum(abs(w) for w in weights) == pytest.approx(0.7)


class TestBaselineExplanations:
    def test_pothole_is_explained_by_its_own_words(
        self, baseline_model_dir: Path, taxonomy: Taxonomy
    ) -> None:
        """Evidence quotes the request, for both heads, and names a voirie word first."""
        classifier = load_classifier(baseline_model_dir, taxonomy)
        request = make_request(
            "Bonjour, il y a un énorme nid de poule sur la chaussée devant le 12 rue Pasteur.",
            subject="Trou dans la chaussée",
        )
        [prediction] = explain(classifier, [request], classifier.predict([request]))
        assert prediction.department.label == "voirie"
        department = [e for e in prediction.evidence if e.head == "department"]
        assert department and {e.head for e in prediction.evidence} == {"department", "urgency"}
        text = f"{request.subject}\n{request.classifier_text}"
        assert all(e.text in text for e in prediction.evidence)
        assert any(
            word in department[0].text.lower() for word in ("trou", "chaussée", "poule", "nid")
        )

    def test_a_classifier_that_cannot_explain_leaves_predictions_alone(
        self, taxonomy: Taxonomy
    ) -> None:
        classifier = KeywordClassifier(taxonomy)
        request = make_request("lampadaire éteint")
        predictions = classifier.predict([request])
        assert explain(classifier, [request], predictions) == predictions

    def test_evidence_survives_the_safety_rules_copy(self, taxonomy: Taxonomy) -> None:
        """Evidence is a field of the frozen prediction: model_copy keeps it."""
        prediction = make_prediction(taxonomy=taxonomy).model_copy(
            update={"evidence": (Evidence(head="department", text="trou", weight=1.0),)}
        )
        assert prediction.model_copy(update={"model_urgency": "basse"}).evidence
