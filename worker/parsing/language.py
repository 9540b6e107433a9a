"""A cheap language hint: French or English, from function words."""

from __future__ import annotations

import re

_FRENCH = frozenset(
    [
        "le",
        "la",
        "les",
        "des",
        "une",
        "est",
        "et",
        "pour",
        "dans",
        "que",
        "qui",
        "pas",
        "sur",
        "avec",
        "nous",
        "vous",
        "je",
        "mon",
        "ma",
        "mes",
        "votre",
        "bonjour",
        "merci",
        "madame",
        "monsieur",
        "depuis",
        "au",
        "aux",
        "du",
        "ce",
        "cette",
        "il",
        "elle",
    ]
)
_ENGLISH = frozenset(
    [
        "the",
        "and",
        "is",
        "are",
        "for",
        "with",
        "that",
        "this",
        "you",
        "your",
        "we",
        "our",
        "my",
        "have",
        "has",
        "not",
        "on",
        "of",
        "to",
        "hello",
        "dear",
        "thanks",
        "please",
        "would",
        "could",
        "there",
    ]
)


def guess_language(text: str) -> str | None:
    """'fr', 'en', or None when the text is too short or too mixed to say."""
    words = re.findall(r"[a-zà-ÿ']+", text.lower())
    french = sum(word in _FRENCH for word in words)
    english = sum(word in _ENGLISH for word in words)
    if french + english < 3:
        return None
    if french >= 2 * english:
        return "fr"
    if english >= 2 * french:
        return "en"
    return None
