"""The text a classifier reads for a request, and the normalisation rules share with it."""

from __future__ import annotations

import re
import unicodedata

from worker.request import Request

MAX_INPUT_CHARS = 6000
"""The start of a message carries most of its signal; the rest costs time and adds noise."""


def classifier_input(request: Request, max_chars: int = MAX_INPUT_CHARS) -> str:
    """Subject, then the classifier text of the request, cut to `max_chars`."""
    return f"{request.subject}\n{request.classifier_text}".strip()[:max_chars]


def fold(text: str) -> str:
    """Lower case, accents removed, typographic apostrophes as ', white space folded."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    stripped = stripped.replace("’", "'").replace("ʼ", "'").replace("œ", "oe")
    return re.sub(r"\s+", " ", stripped)
