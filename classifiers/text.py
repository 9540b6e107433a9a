"""The text a classifier reads for a request, and the normalisation rules share with it."""

from __future__ import annotations

from classifiers.folding import fold
from classifiers.pseudonymise import pseudonymise
from worker.request import Request

__all__ = ["MAX_INPUT_CHARS", "classifier_input", "fold"]

MAX_INPUT_CHARS = 6000
"""The start of a message carries most of its signal; the rest costs time and adds noise."""


def classifier_input(request: Request, max_chars: int = MAX_INPUT_CHARS) -> str:
    """Subject, then the classifier text of the request, pseudonymised, cut to `max_chars`.

    Every model is trained, evaluated and served on this text, so names, addresses and numbers
    never reach a model (nor the feedback store, which keeps this text) and training matches
    serving. Pseudonymising is idempotent: stored texts read back through here are unchanged.
    """
    text = f"{request.subject}\n{request.classifier_text}".strip()[:max_chars]
    return pseudonymise(text)
