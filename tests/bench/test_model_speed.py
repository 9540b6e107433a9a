"""Tests of `bench/model_speed.py`'s FLOP count and of the model `bench/models.py` writes for it.

The benchmark itself is too slow for `make test` (`make bench` runs it); these check the two
pieces its figures rest on, on a tiny shape.
"""

from __future__ import annotations

from pathlib import Path

from bench.model_speed import flops_per_sequence
from bench.models import TRAIN_DATA, VERSION, camembert_base_sized, corpus_texts, length_mix
from classifiers import Taxonomy, load_classifier
from classifiers.camembert import WEIGHTS_FILE, CamembertClassifier


def _tiny(directory: Path, texts: list[str]) -> Path:
    return camembert_base_sized(
        directory, texts=texts, hidden=32, layers=2, heads=2, intermediate=64, vocab_size=400
    )


class TestFlopsPerSequence:
    def test_counts_projections_feed_forward_attention_and_heads(self) -> None:
        """2 tokens, d=4, f=8, 3 labels, one layer: 2·2·(4·16 + 2·4·8) + 4·2²·4 + 2·4·3 = 600."""
        shape = {"hidden": 4, "intermediate": 8, "labels": 3}
        assert flops_per_sequence(2, layers=1, **shape) == 512 + 64 + 24
        assert flops_per_sequence(2, layers=3, **shape) == 3 * (512 + 64) + 24


class TestCamembertBaseSized:
    def test_writes_a_loadable_directory_once(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        """A tiny shape loads through `load_classifier`, predicts, and a second call reuses it."""
        texts = corpus_texts(TRAIN_DATA / "voirie")
        directory = _tiny(tmp_path / "model", texts)
        written = (directory / WEIGHTS_FILE).stat().st_mtime_ns

        classifier = load_classifier(directory, taxonomy)
        predictions = classifier.predict(length_mix(3))

        assert isinstance(classifier, CamembertClassifier)
        assert classifier.version == VERSION
        assert classifier.model.config.num_hidden_layers == 2
        assert [p.department.label in taxonomy.department_keys for p in predictions] == [True] * 3
        again = _tiny(tmp_path / "model", texts)
        assert (again / WEIGHTS_FILE).stat().st_mtime_ns == written
