"""The on-disk model directory: fixed file names, label checks and the refusal of pickles.

Every model kind writes the same frame (see docs/model-format.md):
- `labels.json`: {"department": [...], "urgency": [...]}, the heads' label order;
- `calibration.json`: {"department": T, "urgency": T}, softmax temperatures;
- `metadata.json`: kind, version, creation date, training data fingerprint, hyper-parameters,
  metrics, library versions;
- `MODEL_CARD.md`: the same, for people;
plus its own weight files, in safetensors or JSON only.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from classifiers.taxonomy import Taxonomy
from worker.errors import ModelError

LABELS_FILE = "labels.json"
CALIBRATION_FILE = "calibration.json"
METADATA_FILE = "metadata.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".bin", ".pt", ".pth", ".ckpt"})


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from exc


def read_json_object(path: Path) -> dict[str, Any]:
    value = read_json(path)
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class ModelFiles:
    """The kind-independent part of a model directory, validated."""

    directory: Path
    kind: str
    version: str
    labels: dict[str, tuple[str, ...]]
    temperatures: dict[str, float]
    metadata: dict[str, Any]


def refuse_pickles(directory: Path) -> None:
    """Raise if the directory holds weights in a pickle-based format (code execution on load)."""
    for path in directory.iterdir():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelError(
                f"{path}: pickle-based weights are refused; the model format is safetensors + JSON"
            )


def read_model_files(directory: Path, taxonomy: Taxonomy) -> ModelFiles:
    """Read the common files of a model directory and check its labels against the taxonomy."""
    if not directory.is_dir():
        raise ModelError(f"{directory}: no model directory (train one with `triage train`)")
    refuse_pickles(directory)
    metadata = read_json_object(directory / METADATA_FILE)
    stored_labels = read_json_object(directory / LABELS_FILE)
    calibration = read_json_object(directory / CALIBRATION_FILE)
    expected = {"department": taxonomy.department_keys, "urgency": taxonomy.urgency_keys}
    labels: dict[str, tuple[str, ...]] = {}
    for head, keys in expected.items():
        found = tuple(stored_labels.get(head, ()))
        if set(found) != set(keys) or len(found) != len(keys):
            missing = sorted(set(keys) - set(found))
            unknown = sorted(set(found) - set(keys))
            raise ModelError(
                f"{directory / LABELS_FILE}: {head} labels differ from the taxonomy "
                f"(missing {missing}, unknown {unknown}); retrain rather than remap"
            )
        labels[head] = found
    try:
        temperatures = {head: float(calibration[head]) for head in expected}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{directory / CALIBRATION_FILE}: needs a temperature per head") from exc
    if not all(math.isfinite(t) and t > 0 for t in temperatures.values()):
        raise ModelError(
            f"{directory / CALIBRATION_FILE}: temperatures must be positive and finite"
        )
    return ModelFiles(
        directory=directory,
        kind=str(metadata.get("kind", "")),
        version=str(metadata.get("version", "unknown")),
        labels=labels,
        temperatures=temperatures,
        metadata=metadata,
    )


def write_model_files(
    directory: Path,
    labels: dict[str, tuple[str, ...]],
    temperatures: dict[str, float],
    metadata: dict[str, Any],
    model_card: str,
) -> None:
    """Write the common files of a model directory."""
    write_json(directory / LABELS_FILE, {head: list(keys) for head, keys in labels.items()})
    write_json(directory / CALIBRATION_FILE, temperatures)
    write_json(directory / METADATA_FILE, metadata)
    (directory / MODEL_CARD_FILE).write_text(model_card, encoding="utf-8")


class SavableModel(Protocol):
    """What every model kind offers for writing its directory."""

    labels: dict[str, tuple[str, ...]]
    temperatures: dict[str, float]

    def save(self, directory: Path) -> None:
        """Write the kind's own files (weights, vocabularies, tokenizer) into `directory`."""
        ...


def write_model_directory(
    model: SavableModel, out: Path, metadata: dict[str, Any], model_card: str
) -> None:
    """Write the whole model directory `out`.

    Written next to `out` and renamed into place, so an interrupted save never leaves a
    half-written model where a worker would load it.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save(staging)
        write_model_files(staging, model.labels, dict(model.temperatures), metadata, model_card)
        staging.chmod(0o755)  # mkdtemp makes it private; a model is read by the worker's user
        for path in staging.iterdir():
            path.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
