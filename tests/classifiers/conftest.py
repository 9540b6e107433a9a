"""Fixtures of the neural classifier's tests: a small parsed corpus and a tokenizer trained on it.

transformers is imported inside the fixtures, so the other classifier tests do not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from classifiers import Taxonomy
from classifiers.dataset import LabelledRequest, find_labelled
from tests.conftest import DATA_DIR
from worker.parsing import parse_raw, read_raw

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

CORPUS_STEP = 10
"""Every tenth file of data/train: a few dozen requests spread over every department."""


@pytest.fixture(scope="session")
def hub_offline() -> Iterator[None]:
    """No test may reach a model hub; huggingface_hub reads the variable at import, so both."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="session")
def corpus(taxonomy: Taxonomy) -> list[LabelledRequest]:
    """A few dozen labelled requests of the starter corpus, parsed."""
    entries = find_labelled([DATA_DIR / "train"], taxonomy)[::CORPUS_STEP]
    return [
        LabelledRequest(parse_raw(read_raw(e.path)), e.department, e.urgency, e.path)
        for e in entries
    ]


@pytest.fixture(scope="session")
def tiny_tokenizer(corpus: list[LabelledRequest]) -> PreTrainedTokenizerFast:
    """A 500-piece unigram tokenizer trained on the corpus's subjects and texts."""
    from classifiers.tokenizer import train_tokenizer

    texts = [f"{e.request.subject}\n{e.request.classifier_text}" for e in corpus]
    return train_tokenizer(texts, vocab_size=500)
