"""Which words of a request weighed most in its classification.

Two attribution methods, one presentation:

- **occlusion** (any classifier that gives probabilities, used for the TF-IDF baseline, where
  a variant costs microseconds): each word of the subject and first sentences is removed in
  turn (all its occurrences), and its weight is how much the chosen label's probability drops
  without it;
- **gradient × input** (the CamemBERT classifier): one backward pass from the chosen label's
  logit to the input embeddings; a token's weight is the dot product of that gradient with the
  difference between its embedding and the `<mask>` embedding — the first-order estimate of
  what masking the token would cost the logit, i.e. occlusion at the price of one pass — and a
  word's weight the sum over its tokens.

Either way, the words with the largest positive weight are kept (function words and
single characters aside), neighbours merged into phrases, strongest first. Evidence quotes the
request, so it may hold personal data: it goes to the service in the forwarded summary and to
`triage classify --explain`, never to logs or the decision log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from classifiers.base import Evidence, Prediction

TOP_WORDS = 5
EXPLAINED_CHARS = 600
"""Subject and first sentences: where a request states its business, and a bound on the cost."""

_WORD = re.compile(r"[\w'’-]+", re.UNICODE)
_FUNCTION_WORDS_TEXT = """
    a à au aux avec ce ces cet cette d de des du elle en et eux il ils je j l la le les leur
    leurs lui m ma mais me mes moi mon n ne nos notre nous on ou où par pas pour qu que qui s sa
    se ses si son sur t ta te tes toi ton tu un une vos votre vous y c ça est sont ai as avons
    avez ont été être avoir bonjour madame monsieur merci cordialement svp the and to of is in
    it for you my i we on at this that be are was devant derriere derrière depuis dans sous
    entre chez vers très tres plus bien aussi tout tous toute toutes encore déjà deja comme
"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())


@dataclass(frozen=True)
class Word:
    """A word of the explained text and its character span."""

    text: str
    start: int
    end: int


def words_of(text: str) -> list[Word]:
    return [Word(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def _content_word(word: str) -> bool:
    folded = word.lower().strip("'’-")
    return len(folded) > 1 and folded not in _FUNCTION_WORDS and not folded.isdigit()


def top_phrases(
    text: str, words: Sequence[Word], weights: Sequence[float], head: str, top: int = TOP_WORDS
) -> tuple[Evidence, ...]:
    """The `top` heaviest content words, adjacent ones merged, heaviest phrase first."""
    candidates = [i for i, w in enumerate(words) if weights[i] > 0 and _content_word(w.text)]
    chosen = sorted(sorted(candidates, key=lambda i: -weights[i])[:top])
    phrases: list[tuple[int, int, float]] = []  # (first word, last word, weight)
    for index in chosen:
        joined = phrases and phrases[-1][1] == index - 1
        if joined and "\n" not in text[words[index - 1].end : words[index].start]:
            first, _, weight = phrases[-1]
            phrases[-1] = (first, index, weight + weights[index])
        else:
            phrases.append((index, index, weights[index]))
    total = sum(weight for _, _, weight in phrases) or 1.0
    evidence = [
        Evidence(
            head=head,
            text=" ".join(text[words[first].start : words[last].end].split()),
            weight=round(weight / total, 4),
        )
        for first, last, weight in phrases
    ]
    return tuple(sorted(evidence, key=lambda e: -e.weight))


def occlusion_weights(
    text: str,
    words: Sequence[Word],
    label_probability: Callable[[Sequence[str]], Sequence[float]],
) -> list[float]:
    """Each word's weight: the drop of the label's probability when that word is removed.

    A word is removed everywhere at once (case aside): "chaussée" in the subject and again in
    the text would otherwise each seem worthless, the other occurrence still standing. The
    drop goes to its first occurrence; the others weigh nothing, so it is shown once.
    """
    groups: dict[str, list[int]] = {}
    for index, word in enumerate(words):
        groups.setdefault(word.text.lower(), []).append(index)
    variants = [text]
    for indices in groups.values():
        kept, start = [], 0
        for index in indices:
            kept.append(text[start : words[index].start])
            start = words[index].end
        variants.append("".join(kept) + text[start:])
    probabilities = label_probability(variants)
    weights = [0.0] * len(words)
    for indices, probability in zip(groups.values(), probabilities[1:], strict=True):
        weights[indices[0]] = probabilities[0] - probability
    return weights


def explained_text(subject: str, text: str, limit: int = EXPLAINED_CHARS) -> str:
    """The part of a request explanations look at: subject and the start of the text."""
    return f"{subject}\n{text}".strip()[:limit]


def model_labels(prediction: Prediction) -> dict[str, str]:
    """The label each head chose, before any safety rule raised the urgency."""
    return {
        "department": prediction.department.label,
        "urgency": prediction.model_urgency or prediction.urgency.label,
    }


def format_evidence(evidence: Sequence[Evidence], head: str = "department") -> str:
    """« arbre tombé », « chaussée » — for the French summary an agent reads."""
    return ", ".join(f"« {e.text} »" for e in evidence if e.head == head)
