"""The models and requests the benchmarks measure: a camembert-base-sized classifier and a mix.

`camembert_base_sized` writes a complete model directory (docs/model-format.md) with the shape of
`camembert-base` (hidden 768, 12 layers, 12 heads, intermediate 3072) and random weights: speed
depends on the shape, not on the values, and nothing is downloaded. Its tokenizer is trained on
the training split, so token lengths are those of the corpus. `length_mix` is the deterministic
sample of test requests every measurement reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from classifiers.camembert import (
    CamembertClassifier,
    TriageModel,
    model_metadata,
    write_model_directory,
)
from classifiers.dataset import request_files
from classifiers.model_dir import METADATA_FILE, read_json_object
from classifiers.taxonomy import Taxonomy, load_taxonomy
from classifiers.text import classifier_input
from classifiers.tokenizer import tiny_config, train_tokenizer
from worker.config import PROJECT_ROOT
from worker.errors import ModelError
from worker.parsing import parse_raw, read_raw
from worker.request import Request

__all__ = [
    "BASE_SHAPE",
    "TAXONOMY_FILE",
    "TEST_DATA",
    "TRAIN_DATA",
    "VERSION",
    "camembert_base_sized",
    "corpus_texts",
    "length_mix",
]

VERSION = "camembert-base-sized-random"
TRAIN_DATA = PROJECT_ROOT / "data" / "train"
TEST_DATA = PROJECT_ROOT / "data" / "test"
TAXONOMY_FILE = PROJECT_ROOT / "config" / "taxonomy.yaml"
BASE_SHAPE = {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072}
"""camembert-base's encoder shape; its vocabulary (32,005 pieces) is asked of the tokenizer."""
BASE_VOCAB = 32000
BASE_MAX_POSITIONS = 514
"""As camembert-base; the classifier still reads at most its 256-token budget."""


def _parse(paths: Sequence[Path]) -> list[Request]:
    return [parse_raw(read_raw(path)) for path in paths]


def corpus_texts(folder: Path = TRAIN_DATA) -> list[str]:
    """What the models read of every request under `folder`: subject and text, pseudonymised."""
    return [classifier_input(request) for request in _parse(request_files([folder]))]


def length_mix(n: int, *, folder: Path = TEST_DATA) -> list[Request]:
    """`n` requests of `folder`, evenly spaced over its sorted files: the corpus's length mix.

    Files are sorted by path, hence by department, so every department is represented; the same
    `n` gives the same requests on every run.
    """
    paths = request_files([folder])
    if not 1 <= n <= len(paths):
        raise ValueError(f"n must be between 1 and {len(paths)} (the files of {folder}), got {n}")
    return _parse([paths[i * len(paths) // n] for i in range(n)])


def _wanted(shape: dict[str, int], seed: int, vocab_size: int) -> dict[str, Any]:
    return {**shape, "seed": seed, "requested_vocab_size": vocab_size}


def _is_current(directory: Path, wanted: dict[str, Any]) -> bool:
    """Whether `directory` already holds the model these parameters would write."""
    if not (directory / METADATA_FILE).is_file():
        return False
    try:
        metadata = read_json_object(directory / METADATA_FILE)
    except ModelError:
        return False
    recorded = metadata.get("hyperparameters") or {}
    same = all(recorded.get(key) == value for key, value in wanted.items())
    return same and metadata.get("version") == VERSION


def camembert_base_sized(
    directory: Path,
    *,
    seed: int = 0,
    hidden: int = BASE_SHAPE["hidden"],
    layers: int = BASE_SHAPE["layers"],
    heads: int = BASE_SHAPE["heads"],
    intermediate: int = BASE_SHAPE["intermediate"],
    vocab_size: int = BASE_VOCAB,
    texts: Sequence[str] | None = None,
    taxonomy: Taxonomy | None = None,
) -> Path:
    """Write a randomly initialised CamemBERT classifier to `directory` unless it is there already.

    The shape defaults to camembert-base's; the tokenizer is trained on `texts` (by default
    `corpus_texts()` of data/train) with `vocab_size` asked, and keeps what the corpus gives
    (metadata `hyperparameters.vocab_size`). Labels are those of config/taxonomy.yaml. A
    directory written with other parameters is replaced. Returns `directory`.
    """
    wanted = _wanted(
        {"hidden": hidden, "layers": layers, "heads": heads, "intermediate": intermediate},
        seed,
        vocab_size,
    )
    if _is_current(directory, wanted):
        return directory
    taxonomy = taxonomy or load_taxonomy(TAXONOMY_FILE)
    tokenizer = train_tokenizer(corpus_texts() if texts is None else texts, vocab_size)
    config = tiny_config(
        tokenizer,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        max_positions=BASE_MAX_POSITIONS,
    )
    labels = {"department": taxonomy.department_keys, "urgency": taxonomy.urgency_keys}
    with torch.random.fork_rng():  # seeded weights without disturbing the caller's generator
        torch.manual_seed(seed)
        model = TriageModel(config, labels)
    model.eval()
    classifier = CamembertClassifier(model, tokenizer, {"department": 1.0, "urgency": 1.0}, VERSION)
    metadata = model_metadata(
        classifier,
        base_checkpoint="none: random weights with camembert-base's shape (benchmark only)",
        hyperparameters={**wanted, "vocab_size": len(tokenizer)},
    )
    write_model_directory(classifier, directory, taxonomy, metadata)
    return directory
