"""`triage retrain`: a candidate model from the corpus and agents' corrections, gated, promoted.

The candidate is trained on the corpus folders plus the stored corrections, less a held-out
slice of the most recent corrections (or taken ready-made with `--candidate`). It joins the
registry as a new version; it and the current model are scored on the same held-out data (the
test folders plus the held-out corrections); the gate's verdict and a report are written into
the version's directory; the registry pointer moves only when the gate passes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field

from classifiers import baseline, load_classifier
from classifiers.dataset import LABELS_FILE, LabelledRequest, load_labelled
from classifiers.evaluation import evaluate
from classifiers.gate import DEFAULT_TOLERANCE, GateVerdict, decide, write_gate_files
from classifiers.model_dir import ModelFiles, read_model_files
from classifiers.registry import DEFAULT_VERSION, ModelRegistry, check_version_name
from classifiers.taxonomy import Taxonomy
from classifiers.training import BaselineOptions, train_baseline
from worker.config import PROJECT_ROOT, StrictModel, load_yaml_model
from worker.errors import ConfigError, ModelError
from worker.feedback import Correction, FeedbackStore
from worker.request import Channel, Request
from worker.runtime import Configuration

log = structlog.get_logger("worker.retrain")

RETRAINING_FILE = "retraining.yaml"
MIN_CORRECTIONS_TO_HOLD_OUT = 5
CAMEMBERT_KIND = "camembert"  # classifiers.camembert.KIND, without importing torch
_RANDOM_INIT_SUFFIX = " (architecture and tokenizer only)"  # how finetune records random_init


class RetrainingConfig(StrictModel):
    """`config/retraining.yaml`: folders, the held-out share of corrections, the gate, the seed."""

    corpus: tuple[Path, ...] = (Path("data/train"),)
    validation: tuple[Path, ...] = (Path("data/validation"),)
    test: tuple[Path, ...] = (Path("data/test"),)
    holdout_fraction: float = Field(default=0.2, ge=0, lt=1)
    tolerance: float = Field(default=DEFAULT_TOLERANCE, ge=0, lt=1)
    seed: int = Field(default=0, ge=0)


def load_retraining_config(config_dir: Path) -> RetrainingConfig:
    """The validated `retraining.yaml` of `config_dir`; the defaults when there is none."""
    path = config_dir / RETRAINING_FILE
    return load_yaml_model(path, RetrainingConfig) if path.exists() else RetrainingConfig()


def _folders(given: Sequence[Path], configured: Sequence[Path]) -> list[Path]:
    """Folders of the command line as given, else the configured ones, which are relative to
    the project root (not to wherever the command runs)."""
    if given:
        return list(given)
    return [folder if folder.is_absolute() else PROJECT_ROOT / folder for folder in configured]


@dataclass(frozen=True)
class RetrainOptions:
    """What the command line chooses; empty folder lists mean the configured ones."""

    base: str | None = None
    candidate: Path | None = None
    promote: bool = True
    data: tuple[Path, ...] = ()
    validation: tuple[Path, ...] = ()
    test: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.base is not None and self.candidate is not None:
            raise ValueError("candidate: --candidate gates a trained model, --base trains one")


Outcome = Literal["promoted", "refused", "evaluated"]


@dataclass(frozen=True)
class RetrainResult:
    """The new version, the verdict and what became of it, with the data counts behind them."""

    version: str
    directory: Path
    current_version: str
    verdict: GateVerdict
    outcome: Outcome
    training_examples: int | None  # None: a ready-made candidate
    corrections_used: int
    corrections_held_out: int
    corrections_skipped: int
    test_examples: int
    pinned: Path | None = None

    def summary(self) -> str:
        """The lines `triage retrain` prints: version, both models' figures, verdict, reasons."""
        ours, theirs = self.verdict.candidate, self.verdict.current
        trained = "trained elsewhere"
        if self.training_examples is not None:
            trained = f"trained on {self.training_examples} requests"
            trained += f" including {self.corrections_used} corrections"
        lines = [
            f"candidate {self.version} ({trained})",
            f"held-out data: {ours['examples']} requests ({self.test_examples} from the test "
            f"folders, {self.corrections_held_out} most recent corrections)",
            f"{'':<34}{'candidate':>10}{'current':>10}   (current: {self.current_version})",
        ]
        for name, key in (
            ("department macro-F1", "department_macro_f1"),
            ("critique recall (+ safety rules)", "critique_recall"),
        ):
            cells = ["—" if d[key] is None else f"{d[key]:.3f}" for d in (ours, theirs)]
            lines.append(f"{name:<34}{cells[0]:>10}{cells[1]:>10}")
        verdict = {
            "promoted": "promoted: it is now the current version",
            "refused": "refused: kept aside, the current version is unchanged",
            "evaluated": "evaluated only (--no-promote): the gate would "
            + ("promote it" if self.verdict.promote else "refuse it"),
        }[self.outcome]
        lines += [f"verdict: {verdict}", *(f"  - {reason}" for reason in self.verdict.reasons)]
        if self.corrections_skipped:
            skipped = self.corrections_skipped
            lines.append(f"note: {skipped} corrections unusable (no text, or unknown labels)")
        if self.pinned is not None:
            lines.append(f"note: settings.model_dir pins {self.pinned}: workers ignore `current`")
        return "\n".join(lines)


def usable_corrections(
    corrections: Sequence[Correction], taxonomy: Taxonomy
) -> tuple[list[Correction], int]:
    """The corrections that can be examples (text present, labels in the taxonomy), and how many
    could not."""
    usable = [
        c
        for c in corrections
        if c.text.strip()
        and c.department in taxonomy.departments
        and c.urgency in taxonomy.urgencies
    ]
    return usable, len(corrections) - len(usable)


def split_corrections(
    corrections: Sequence[Correction], fraction: float
) -> tuple[list[Correction], list[Correction]]:
    """(for training, held out): the most recent `fraction` is held out, none below 5 corrections.

    At least one is held out when `fraction` is above 0 and there are enough corrections.
    """
    ordered = sorted(corrections, key=lambda c: c.created_at)
    if len(ordered) < MIN_CORRECTIONS_TO_HOLD_OUT or fraction <= 0:
        return ordered, []
    held = max(1, round(fraction * len(ordered)))
    return ordered[:-held], ordered[-held:]


def correction_example(correction: Correction, store: Path) -> LabelledRequest:
    """A correction as a labelled request: no subject, the stored (pseudonymised) text.

    Its `path` is `<store>/<request id>`, which names where it came from and never a file.
    """
    request = Request(
        id=correction.request_id,
        channel=Channel.EMAIL,  # not stored; no classifier reads the channel
        received_at=correction.created_at,
        subject="",
        classifier_text=correction.text,
        full_text=correction.text,
    )
    return LabelledRequest(
        request, correction.department, correction.urgency, store / correction.request_id
    )


def write_corrections_folder(corrections: Sequence[Correction], folder: Path) -> Path:
    """Corrections as a labelled folder of e-form files, for trainers that read folders only.

    The e-form parser gives back each text as the classifier text, with an empty subject.
    """
    folder.mkdir(parents=True)
    labels = []
    for number, correction in enumerate(corrections, start=1):
        name = f"correction-{number:05d}.json"
        form = {
            "form_id": "correction",
            "submitted_at": correction.created_at.isoformat(),
            "message": correction.text,
        }
        (folder / name).write_text(json.dumps(form, ensure_ascii=False), encoding="utf-8")
        record = {"file": name, "department": correction.department, "urgency": correction.urgency}
        labels.append(json.dumps(record))
    (folder / LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
    return folder


def finetune_base(option: str | None, metadata: dict[str, Any]) -> str:
    """`--base` when given, else the base checkpoint the current model records (a directory).

    A recorded hub id or an in-memory model is refused: retraining must not reach the network
    unasked, so `--base` has to name it.
    """
    if option:
        return option
    recorded = str(metadata.get("base_checkpoint") or "").removesuffix(_RANDOM_INIT_SUFFIX)
    if not recorded or not Path(recorded).is_dir():
        raise ModelError(
            f"the current model's base checkpoint ({recorded or 'none recorded'}) is not a "
            "directory here: pass --base DIR"
        )
    return recorded


def _free_name(registry: ModelRegistry, files: ModelFiles) -> str:
    """The model's own version as the registry name (what predictions report), made unique."""
    try:
        name = check_version_name(files.version)
    except ModelError:
        name = f"{files.kind or 'model'}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    if name == DEFAULT_VERSION:
        name = f"{name}-retrained"
    candidate, number = name, 1
    while registry.path_of(candidate).exists():
        number += 1
        candidate = f"{name}-{number}"
    return candidate


def _train(
    configuration: Configuration,
    config: RetrainingConfig,
    options: RetrainOptions,
    current: ModelFiles,
    corrections: Sequence[Correction],
    staging: Path,
    provenance: str,
) -> tuple[Path, int]:
    """Train the candidate into `staging`; its directory and training-set size.

    `provenance` says which corrections these are, for the model's metadata.
    """
    settings = configuration.settings
    out = staging / "model"
    corpus = _folders(options.data, config.corpus)
    validation = _folders(options.validation, config.validation)
    if options.base is None and current.kind == baseline.KIND:
        # The current model's hyper-parameters: the gate then compares data, not settings.
        hyper = current.metadata.get("hyperparameters")
        regularisation = hyper.get("regularisation", 10.0) if isinstance(hyper, dict) else 10.0
        trained = train_baseline(
            corpus,
            out,
            configuration.taxonomy,
            configuration.safety,
            validation=validation,
            options=BaselineOptions(regularisation=float(regularisation), seed=config.seed),
            limits=settings.limits,
            examples=[correction_example(c, settings.feedback_path) for c in corrections],
            examples_source=provenance,
        )
        return out, trained.examples
    if options.base is None and current.kind != CAMEMBERT_KIND:
        raise ModelError(f"cannot retrain a model of kind {current.kind!r}; use --candidate")
    from classifiers.finetune import finetune, load_training_arguments

    folders = list(corpus)
    if corrections:
        folders.append(write_corrections_folder(corrections, staging / "feedback-corrections"))
    result = finetune(
        finetune_base(options.base, current.metadata),
        folders,
        out,
        configuration.taxonomy,
        configuration.safety,
        validation=validation,
        args=load_training_arguments(settings.config_dir / "training.yaml"),
        # Outside the staging folder: an interrupted run resumes when started again on the same
        # data (finetune checks the data fingerprint, base and arguments before resuming).
        checkpoint_dir=settings.state_dir / "retrain.checkpoint",
    )
    examples = read_model_files(out, configuration.taxonomy).metadata["training_data"]["examples"]
    return result.directory, int(examples)


def retrain(configuration: Configuration, options: RetrainOptions) -> RetrainResult:
    """Train (or take) a candidate, add it to the registry, gate it, and promote it if it passes.

    Raises `ModelError` when the current model or the candidate cannot be loaded, and
    `ConfigError` for unusable folders or configuration.
    """
    settings, taxonomy = configuration.settings, configuration.taxonomy
    config = load_retraining_config(settings.config_dir)
    registry = ModelRegistry(settings.models_root, taxonomy=taxonomy)
    current_version = registry.current_version()
    current_dir = registry.current_dir()
    current = read_model_files(current_dir, taxonomy)

    store = FeedbackStore(settings.feedback_path)
    try:
        usable, skipped = usable_corrections(store.corrections(), taxonomy)
    finally:
        store.close()
    for_training, held_out = split_corrections(usable, config.holdout_fraction)

    # Loaded before training: a bad test folder should fail in seconds, not after an hour.
    test_folders = _folders(options.test, config.test)
    test_examples = load_labelled(test_folders, taxonomy, settings.limits) if test_folders else []
    gate_data = test_examples + [correction_example(c, settings.feedback_path) for c in held_out]
    if not gate_data:
        problem = "no test folder and no held-out correction: the gate has nothing to score"
        raise ConfigError(str(settings.config_dir / RETRAINING_FILE), "test", problem)

    # Trained inside the root, so that adding it to the registry is a rename, not a copy.
    settings.models_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".retrain-", dir=settings.models_root))
    try:
        if options.candidate is not None:
            source, training_examples = options.candidate, None
        else:
            newest = for_training[-1].created_at.isoformat() if for_training else "-"
            provenance = (
                f"feedback store: {len(for_training)} corrections up to {newest}, "
                f"{len(held_out)} more recent ones held out for the gate"
            )
            source, training_examples = _train(
                configuration, config, options, current, for_training, staging, provenance
            )
        name = _free_name(registry, read_model_files(source, taxonomy))
        directory = registry.add(source, name, move=options.candidate is None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    scores = tuple(
        evaluate(
            load_classifier(path, taxonomy, settings.inference),
            gate_data,
            taxonomy,
            configuration.safety,
        )
        for path in (directory, current_dir)
    )
    verdict = decide(scores[0], scores[1], tolerance=config.tolerance)
    data = [f"{len(test_examples)} requests from {', '.join(map(str, test_folders)) or '-'}"]
    data.append(f"{len(held_out)} most recent corrections, held out of training")
    write_gate_files(directory, verdict, scores[0], scores[1], data)

    outcome: Outcome = "evaluated"
    if options.promote and verdict.promote:
        registry.promote(name, reason="gate passed: " + "; ".join(verdict.reasons))
        outcome = "promoted"
    elif options.promote:
        registry.refuse(name, reason="gate refused: " + "; ".join(verdict.reasons))
        outcome = "refused"
    log.info(
        "retrain.gated",
        version=name,
        current=current_version,
        outcome=outcome,
        candidate_department_f1=round(verdict.candidate["department_macro_f1"], 4),
        current_department_f1=round(verdict.current["department_macro_f1"], 4),
        held_out=len(gate_data),
    )
    return RetrainResult(
        version=name,
        directory=directory,
        current_version=current_version,
        verdict=verdict,
        outcome=outcome,
        training_examples=training_examples,
        corrections_used=len(for_training) if options.candidate is None else 0,
        corrections_held_out=len(held_out),
        corrections_skipped=skipped,
        test_examples=len(test_examples),
        pinned=settings.model_dir,
    )
