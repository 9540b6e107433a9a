"""The model registry: versioned model directories under one root and a `current` pointer.

Layout of the root (`Settings.models_root`):
- `<version>/`: a model directory (see `classifiers.model_dir`); the shipped one is `default`.
  It may also hold `gate.json` (the promotion gate's verdict) and `gate-report/`.
- `current`: a text file holding the current version's name; absent means `default`. It is
  replaced atomically, so a worker polling it reads the old name or the new one, never half.
- `registry.jsonl`: the append-only history, one JSON event per line (added, promoted, refused,
  rolled_back) with its time, version, previous current version and reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from classifiers.gate import GATE_FILE, GATE_REPORT_DIR
from classifiers.model_dir import (
    CALIBRATION_FILE,
    LABELS_FILE,
    METADATA_FILE,
    read_json_object,
    read_model_files,
    refuse_pickles,
)
from classifiers.taxonomy import Taxonomy
from worker.errors import ModelError

POINTER_FILE = "current"
HISTORY_FILE = "registry.jsonl"
LOCK_FILE = ".lock"
DEFAULT_VERSION = "default"

# A version name is a single, visible path component that cannot be the pointer's own name.
_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RESERVED = frozenset({POINTER_FILE, HISTORY_FILE})

__all__ = [
    "DEFAULT_VERSION",
    "GATE_FILE",
    "GATE_REPORT_DIR",
    "HISTORY_FILE",
    "POINTER_FILE",
    "ModelRegistry",
    "ModelVersion",
    "check_version_name",
    "resolve_model_dir",
]

Event = Literal["added", "promoted", "refused", "rolled_back"]
Status = Literal["current", "promoted-before", "refused", "candidate", "shipped"]


def check_version_name(version: str) -> str:
    """`version` if it can name a directory of the root, else a `ModelError` saying why."""
    if not _VERSION_NAME.match(version) or version in _RESERVED:
        raise ModelError(
            f"{version!r} cannot name a model version: use letters, digits, '.', '_' and '-' "
            f"(starting with a letter or digit), and not {sorted(_RESERVED)}"
        )
    return version


@dataclass(frozen=True)
class ModelVersion:
    """One version of the registry as `triage model list` shows it.

    `department_f1` and `critique_recall` come from `gate.json` (the gate's held-out data) when
    the version went through the gate, else from its metadata's validation metrics;
    `metrics_source` says which ("gate", "validation", or None when neither is known).
    """

    name: str
    path: Path
    kind: str
    created_at: str
    status: Status
    department_f1: float | None = None
    critique_recall: float | None = None
    metrics_source: str | None = None


def _validation_figures(metadata: dict[str, Any]) -> tuple[float | None, float | None]:
    validation = (metadata.get("metrics") or {}).get("validation") or {}
    f1 = (validation.get("department") or {}).get("macro_f1")
    per_class = (validation.get("urgency_with_safety_rules") or {}).get("per_class") or {}
    critique = per_class.get("critique") or {}
    recall = critique.get("recall") if critique.get("support") else None
    return f1, recall


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelRegistry:
    """The versions under `root`, which one is current, and the history of promotions.

    With a `taxonomy`, `promote` checks a version's labels against it (`read_model_files`);
    without one it checks the format only (files present, JSON readable, no pickle).
    """

    def __init__(
        self, root: Path, default: str = DEFAULT_VERSION, *, taxonomy: Taxonomy | None = None
    ) -> None:
        self.root = root
        self.default = check_version_name(default)
        self.taxonomy = taxonomy

    @property
    def pointer_path(self) -> Path:
        return self.root / POINTER_FILE

    @property
    def history_path(self) -> Path:
        return self.root / HISTORY_FILE

    def pointer_state(self) -> str | None:
        """The pointer file's content, stripped; None when there is none. Cheap: polled often."""
        try:
            return self.pointer_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"{self.pointer_path}: unreadable ({exc})") from exc

    def current_version(self) -> str:
        """The version the pointer names, or the default when there is no pointer."""
        state = self.pointer_state()
        if state is None:
            return self.default
        try:
            return check_version_name(state)
        except ModelError as exc:
            raise ModelError(f"{self.pointer_path}: {exc}") from exc

    def path_of(self, version: str) -> Path:
        return self.root / check_version_name(version)

    def current_dir(self) -> Path:
        """The current version's directory; `ModelError` when it is missing."""
        version = self.current_version()
        directory = self.root / version
        if not directory.is_dir():
            where = "the default" if self.pointer_state() is None else f"named by {POINTER_FILE}"
            raise ModelError(f"{directory}: the current model version ({where}) is missing")
        return directory

    def history(self) -> list[dict[str, Any]]:
        """The events of `registry.jsonl`, oldest first; a torn last line is skipped."""
        try:
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a crash mid-append leaves at most the last line incomplete
            if isinstance(event, dict):
                events.append(event)
        return events

    def versions(self) -> list[ModelVersion]:
        """Every version directory (a visible subdirectory holding metadata.json), oldest first."""
        if not self.root.is_dir():
            return []
        current = self.current_version()
        promoted = {str(e.get("version")) for e in self.history() if e.get("event") == "promoted"}
        found = []
        for directory in sorted(self.root.iterdir()):
            if directory.name.startswith(".") or not (directory / METADATA_FILE).is_file():
                continue
            try:
                metadata = read_json_object(directory / METADATA_FILE)
            except ModelError:
                metadata = {}
            gate = self._gate(directory)
            f1, recall = _validation_figures(metadata)
            source: str | None = "validation" if f1 is not None else None
            if gate is not None:
                candidate = gate.get("candidate") or {}
                f1, recall = candidate.get("department_macro_f1"), candidate.get("critique_recall")
                source = "gate"
            status: Status
            if directory.name == current:
                status = "current"
            elif directory.name in promoted:
                status = "promoted-before"
            elif gate is not None and gate.get("promote") is False:
                status = "refused"
            elif directory.name == self.default:
                status = "shipped"
            else:
                status = "candidate"
            found.append(
                ModelVersion(
                    name=directory.name,
                    path=directory,
                    kind=str(metadata.get("kind", "unknown")),
                    created_at=str(metadata.get("created_at", "")),
                    status=status,
                    department_f1=f1,
                    critique_recall=recall,
                    metrics_source=source,
                )
            )
        return sorted(found, key=lambda v: (v.created_at, v.name))

    @staticmethod
    def _gate(directory: Path) -> dict[str, Any] | None:
        try:
            return read_json_object(directory / GATE_FILE)
        except ModelError:
            return None

    def add(self, source: Path, version: str, *, move: bool = False) -> Path:
        """Bring the model directory `source` in as `<root>/<version>` and record it.

        `source` is copied (left untouched) unless `move`; either way the version appears whole
        or not at all. An existing version name is refused: versions are never overwritten.
        """
        target = self.path_of(version)
        if not (source / METADATA_FILE).is_file():
            raise ModelError(f"{source}: not a model directory (no {METADATA_FILE})")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if target.exists():
                raise ModelError(f"{target}: version {version!r} already exists")
            if move:
                shutil.move(source, target)
            else:
                staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root))
                try:
                    shutil.copytree(source, staging, dirs_exist_ok=True)
                    staging.chmod(0o755)  # mkdtemp's is private; workers may run as another user
                    staging.rename(target)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            self._append("added", version, reason=f"from {source}")
        return target

    def promote(self, version: str, *, reason: str) -> None:
        """Make `version` current: check it loads, write the pointer, record the event.

        Refused (`ModelError`, pointer untouched) when the directory is missing or broken, or
        when it already is the current version.
        """
        directory = self.path_of(version)
        self._check_loadable(directory)
        with self._locked():
            previous = self.current_version()
            if previous == version:
                raise ModelError(f"{version!r} already is the current version")
            self._write_pointer(version)
            self._append("promoted", version, previous=previous, reason=reason)

    def refuse(self, version: str, *, reason: str) -> None:
        """Record that the gate kept `version` aside; the pointer does not move."""
        with self._locked():
            self._append("refused", version, previous=self.current_version(), reason=reason)

    def rollback(self) -> str:
        """Go back to the version current before the last promotion not yet rolled back.

        Promotions stack up: each rollback undoes one. Returns the version now current;
        `ModelError` when there is no promotion to undo or its previous version is unusable.
        """
        with self._locked():
            stack: list[dict[str, Any]] = []
            for event in self.history():
                if event.get("event") == "promoted":
                    stack.append(event)
                elif event.get("event") == "rolled_back" and stack:
                    stack.pop()
            if not stack:
                raise ModelError(f"{self.history_path}: no promotion to roll back")
            undone = stack[-1]
            target = str(undone.get("previous") or self.default)
            self._check_loadable(self.path_of(target))
            current = self.current_version()
            self._write_pointer(target)
            self._append(
                "rolled_back",
                target,
                previous=current,
                reason=f"rollback of the promotion of {undone.get('version')}",
            )
        return target

    def _check_loadable(self, directory: Path) -> None:
        if not directory.is_dir():
            raise ModelError(f"{directory}: no such model version")
        if self.taxonomy is not None:
            read_model_files(directory, self.taxonomy)
            return
        refuse_pickles(directory)
        for name in (METADATA_FILE, LABELS_FILE, CALIBRATION_FILE):
            read_json_object(directory / name)

    def _write_pointer(self, version: str) -> None:
        # Written beside the pointer then renamed over it (os.replace, atomic on POSIX), so a
        # worker polling the pointer never reads a partial name.
        descriptor, temporary = tempfile.mkstemp(prefix=f".{POINTER_FILE}-", dir=self.root)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(version + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            Path(temporary).chmod(0o644)
            Path(temporary).replace(self.pointer_path)
        finally:
            Path(temporary).unlink(missing_ok=True)

    def _append(
        self, event: Event, version: str, *, previous: str | None = None, reason: str = ""
    ) -> None:
        record = {
            "time": _now(),
            "event": event,
            "version": version,
            "previous": previous,
            "reason": reason,
        }
        with self.history_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers (two retrain runs, an operator's promote) on this root."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_model_dir(pinned: Path | None, root: Path) -> Path:
    """The model directory to load: the pinned one when set, else the registry's current."""
    if pinned is not None:
        return pinned
    return ModelRegistry(root).current_dir()
