"""Labelled request folders: request files plus a `labels.jsonl` per folder.

Each line of `labels.jsonl` is `{"file": "...", "department": "...", "urgency": "..."}`, `file`
relative to the folder holding the labels file. Folders are walked recursively, so a split
(`data/train`) may be organised in sub-folders, each with its own labels file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from classifiers.taxonomy import Taxonomy
from worker.errors import ConfigError, ParseError
from worker.parsing import ParseLimits, channel_for_path, parse_raw, read_raw
from worker.request import Request

LABELS_FILE = "labels.jsonl"


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    department: str
    urgency: str


@dataclass(frozen=True)
class LabelledRequest:
    request: Request
    department: str
    urgency: str
    path: Path


def _read_labels_file(labels_path: Path, taxonomy: Taxonomy) -> list[LabelledFile]:
    entries = []
    seen: set[str] = set()
    lines = labels_path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line)
            name, department, urgency = record["file"], record["department"], record["urgency"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            problem = "expected {'file', 'department', 'urgency'}"
            raise ConfigError(str(labels_path), where, problem) from exc
        if not all(isinstance(value, str) for value in (name, department, urgency)):
            raise ConfigError(
                str(labels_path), where, "file, department and urgency must be strings"
            )
        if department not in taxonomy.departments:
            raise ConfigError(str(labels_path), where, f"unknown department {department!r}")
        if urgency not in taxonomy.urgencies:
            raise ConfigError(str(labels_path), where, f"unknown urgency {urgency!r}")
        path = labels_path.parent / name
        if name in seen or not path.is_file() or channel_for_path(path) is None:
            problem = f"{name!r} is listed twice, missing, or not an .eml/.json file"
            raise ConfigError(str(labels_path), where, problem)
        seen.add(name)
        entries.append(LabelledFile(path, department, urgency))
    return entries


def find_labelled(folders: Sequence[Path], taxonomy: Taxonomy) -> list[LabelledFile]:
    """Every labelled file under `folders`, in a stable order."""
    entries: list[LabelledFile] = []
    for folder in folders:
        labels_files = sorted(folder.rglob(LABELS_FILE)) if folder.is_dir() else []
        if not labels_files:
            raise ConfigError(str(folder), "", f"no {LABELS_FILE} found in this folder")
        for labels_path in labels_files:
            entries.extend(_read_labels_file(labels_path, taxonomy))
    return entries


def load_labelled(
    folders: Sequence[Path], taxonomy: Taxonomy, limits: ParseLimits | None = None
) -> list[LabelledRequest]:
    """Parse every labelled file; a file that does not parse is an error in a training set."""
    loaded = []
    for entry in find_labelled(folders, taxonomy):
        try:
            request = parse_raw(read_raw(entry.path, limits), limits)
        except ParseError as exc:
            raise ConfigError(str(entry.path), "", f"does not parse: {exc}") from exc
        loaded.append(LabelledRequest(request, entry.department, entry.urgency, entry.path))
    return loaded


def fingerprint(entries: Iterable[LabelledRequest]) -> str:
    """A digest of the training data: file contents and labels, order-independent."""
    digests = sorted(
        hashlib.sha256(
            entry.path.read_bytes() + f"|{entry.department}|{entry.urgency}".encode()
        ).hexdigest()
        for entry in entries
    )
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def request_files(paths: Sequence[Path]) -> list[Path]:
    """Request files named by `paths`: files as given, folders walked for .eml and .json."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and channel_for_path(p)))
        else:
            found.append(path)
    return found
