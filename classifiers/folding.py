"""Text folding for matching: what safety rules, pseudonymisation and label names compare."""

from __future__ import annotations

import re
import unicodedata


def fold(text: str) -> str:
    """Lower case, accents removed, typographic apostrophes as ', white space folded."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    stripped = stripped.replace("’", "'").replace("ʼ", "'").replace("œ", "oe")
    return re.sub(r"\s+", " ", stripped)
