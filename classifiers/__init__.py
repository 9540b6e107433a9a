"""Classifiers of mairie-triage: the interface, the models, their training and evaluation."""

from __future__ import annotations

from pathlib import Path

from classifiers.base import Classifier, LabelScores, Prediction
from classifiers.model_dir import read_model_files
from classifiers.taxonomy import Taxonomy, load_taxonomy
from worker.config import InferenceSettings
from worker.errors import ModelError

__all__ = [
    "Classifier",
    "LabelScores",
    "Prediction",
    "Taxonomy",
    "load_classifier",
    "load_taxonomy",
]


def load_classifier(
    directory: Path, taxonomy: Taxonomy, inference: InferenceSettings | None = None
) -> Classifier:
    """Load whichever model kind `directory` holds, after checking its labels and format.

    `inference` (threads, dtype, int8, micro-batch, token budget) applies to CamemBERT only.
    """
    from classifiers import baseline  # imported here: each kind pulls in its own libraries

    files = read_model_files(directory, taxonomy)
    if files.kind == baseline.KIND:
        return baseline.TfidfBaseline.load(files)
    if files.kind == "camembert":  # the name of camembert.KIND: importing it pulls in torch
        from classifiers.camembert import CamembertClassifier, InferenceOptions

        options = None
        if inference is not None:
            options = InferenceOptions(
                max_tokens=inference.max_tokens,
                batch_size=inference.micro_batch,
                threads=inference.threads,
                dtype=inference.dtype,
                quantize=inference.quantize,
            )
        return CamembertClassifier.load(files, options)
    raise ModelError(f"{directory}: unknown model kind {files.kind!r}")
