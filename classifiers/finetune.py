"""Fine-tuning the two-headed CamemBERT on labelled folders: the loop, checkpoints, calibration.

The loop minimises CE(department) + CE(urgency) with AdamW, a linear warm-up then linear decay,
gradient accumulation and optional inverse-frequency class weights. It evaluates both heads on
validation data after every epoch, keeps the best weights (department macro-F1, urgency macro-F1
breaking ties) and stops early after `early_stopping_patience` epochs without progress.

Checkpoints hold no pickle: tensors (weights, best weights, optimiser moments, torch's RNG state)
in safetensors, everything else in JSON. A run resumes from a checkpoint whose run key (data
fingerprint, base and hyper-parameters) matches, and starts over otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.model_selection import train_test_split
from tqdm import tqdm  # type: ignore[import-untyped]
from transformers import PreTrainedTokenizerFast

from classifiers.arguments import check_fields, load_arguments
from classifiers.calibration import expected_calibration_error, fit_temperature, softmax
from classifiers.camembert import (
    HEADS,
    KIND,
    CamembertClassifier,
    InferenceOptions,
    InputEncoder,
    TriageModel,
    decay_groups,
    from_pretrained,
    model_metadata,
    pad_batch,
    write_model_directory,
)
from classifiers.dataset import LabelledRequest, fingerprint, load_labelled
from classifiers.evaluation import evaluate, score_head
from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from classifiers.variants import METADATA_KEY as VARIANTS_KEY
from classifiers.variants import check_variants
from worker.errors import ModelError

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"


@dataclass(frozen=True)
class TrainingArguments:
    """Hyper-parameters of a fine-tuning run (config/training.yaml documents each one)."""

    epochs: int = 8
    batch_size: int = 16
    gradient_accumulation: int = 2
    learning_rate: float = 3e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_tokens: int = 256
    dropout: float | None = 0.1
    early_stopping_patience: int = 2
    validation_fraction: float = 0.15
    seed: int = 13
    class_weighting: bool = True
    threads: int | None = None
    checkpoint_every: int = 200
    random_init: bool = False

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("gradient_accumulation", self.gradient_accumulation >= 1, ">= 1"),
            ("learning_rate", 0 < self.learning_rate < 1, "in (0, 1)"),
            ("weight_decay", 0 <= self.weight_decay < 1, "in [0, 1)"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("max_tokens", self.max_tokens >= 8, ">= 8"),
            ("dropout", self.dropout is None or 0 <= self.dropout < 1, "in [0, 1) or null"),
            ("early_stopping_patience", self.early_stopping_patience >= 0, ">= 0"),
            ("validation_fraction", 0 < self.validation_fraction <= 0.5, "in (0, 0.5]"),
            ("threads", self.threads is None or self.threads >= 1, ">= 1 or null"),
            ("checkpoint_every", self.checkpoint_every >= 0, ">= 0"),
        ]
        check_fields(self, checks)


def load_training_arguments(
    path: Path | None, overrides: Mapping[str, str] | None = None
) -> TrainingArguments:
    """Arguments from a YAML file (None: the defaults) then `--set key=value` overrides."""
    return load_arguments(TrainingArguments, path, overrides)


@dataclass(frozen=True)
class EpochReport:
    """The mean training loss and validation macro-F1 of both heads after one epoch."""

    epoch: int
    train_loss: float
    department_f1: float
    urgency_f1: float
    seconds: float

    @property
    def score(self) -> tuple[float, float]:
        return (self.department_f1, self.urgency_f1)


@dataclass(frozen=True)
class FinetuneResult:
    directory: Path
    version: str
    best_epoch: int
    history: list[EpochReport]
    calibration: dict[str, dict[str, float]]
    resumed_from_epoch: int
    seconds: float
    examples_per_second: float

    def summary(self) -> str:
        best = self.history[self.best_epoch - 1]
        lines = [
            f"model {self.version} written to {self.directory}",
            f"best epoch {self.best_epoch}/{len(self.history)}: validation macro-F1 department "
            f"{best.department_f1:.3f}, urgency {best.urgency_f1:.3f}",
            f"time {self.seconds:.1f} s, {self.examples_per_second:.1f} examples/s",
        ]
        lines += [
            f"{head}: temperature {c['temperature']:.3f}, ECE {c['ece_before']:.3f} -> "
            f"{c['ece_after']:.3f}"
            for head, c in self.calibration.items()
        ]
        return "\n".join(lines)


@dataclass
class _Progress:
    """The bookkeeping a checkpoint restores besides tensors."""

    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of the current epoch already trained
    loss_sum: float = 0.0
    best_epoch: int = 0
    bad_epochs: int = 0
    examples_seen: int = 0
    seconds: float = 0.0
    history: list[EpochReport] = field(default_factory=list)


def split_validation(
    examples: Sequence[LabelledRequest], fraction: float, seed: int
) -> tuple[list[LabelledRequest], list[LabelledRequest]]:
    """A train/validation split stratified by department; single-example departments train."""
    counts: dict[str, int] = {}
    for example in examples:
        counts[example.department] = counts.get(example.department, 0) + 1
    alone = [e for e in examples if counts[e.department] < 2]
    rest = [e for e in examples if counts[e.department] >= 2]
    departments = {e.department for e in rest}
    size = max(len(departments), round(fraction * len(rest)))
    if len(rest) - size < len(departments):
        raise ModelError("too few labelled requests for a stratified validation split")
    train, held_out = train_test_split(
        rest, test_size=size, random_state=seed, stratify=[e.department for e in rest]
    )
    return list(train) + alone, list(held_out)


def class_weights(labels: Sequence[int], size: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the classes present; absent classes weigh 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=size).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0), 0.0)
    weights *= (counts > 0).sum() / weights.sum()
    return torch.tensor(weights, dtype=torch.float32)


def _targets(model: TriageModel, examples: Sequence[LabelledRequest]) -> dict[str, list[int]]:
    return {head: [model.labels[head].index(getattr(e, head)) for e in examples] for head in HEADS}


def _logits(
    model: TriageModel, encoded: Sequence[Sequence[int]], pad_id: int, batch: int
) -> dict[str, np.ndarray[Any, np.dtype[np.float64]]]:
    model.eval()
    parts: dict[str, list[np.ndarray[Any, np.dtype[np.float64]]]] = {head: [] for head in HEADS}
    with torch.inference_mode():
        for start in range(0, len(encoded), batch):
            outputs = model(*pad_batch(encoded[start : start + batch], pad_id))
            for head, output in zip(HEADS, outputs, strict=True):
                parts[head].append(output.double().numpy())
    model.train()
    return {head: np.concatenate(parts[head]) for head in HEADS}


def _save_checkpoint(
    directory: Path,
    run_key: dict[str, Any],
    progress: _Progress,
    model: TriageModel,
    best: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> None:
    """Write the checkpoint beside `directory`, then swap it in, so a crash keeps the last one."""
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(
        {k: v.detach().contiguous() for k, v in model.state_dict().items()},
        str(staging / WEIGHTS_FILE),
    )
    save_file(best, str(staging / BEST_FILE))
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in opt_state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    save_file(tensors, str(staging / OPTIMIZER_FILE))
    save_file({"torch": torch.get_rng_state()}, str(staging / RNG_FILE))
    state = {
        "run_key": run_key,
        "progress": dataclasses.asdict(progress),
        "optimizer": {"param_groups": opt_state["param_groups"], "scalars": scalars},
        "scheduler": scheduler.state_dict(),
    }
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def _load_checkpoint(
    directory: Path,
    run_key: dict[str, Any],
    model: TriageModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> tuple[_Progress, dict[str, torch.Tensor]] | None:
    """Restore a matching checkpoint; None (and a message) when there is none or it differs."""
    if not (directory / STATE_FILE).is_file():
        return None
    state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    if state.get("run_key") != run_key:
        print(f"{directory}: checkpoint of other data or settings, starting over", file=sys.stderr)
        return None
    model.load_state_dict(load_file(directory / WEIGHTS_FILE), strict=True)
    flat = load_file(directory / OPTIMIZER_FILE)
    opt_state: dict[str, Any] = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        opt_state["state"].setdefault(int(index), {})[name] = value
    for index, entries in state["optimizer"]["scalars"].items():
        opt_state["state"].setdefault(int(index), {}).update(entries)
    for group in opt_state["param_groups"]:
        group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(load_file(directory / RNG_FILE)["torch"])
    raw = state["progress"]
    raw["history"] = [EpochReport(**h) for h in raw["history"]]
    print(f"{directory}: resuming after epoch {raw['epoch']}", file=sys.stderr)
    return _Progress(**raw), load_file(directory / BEST_FILE)


def _set_dropout(model: TriageModel, dropout: float) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    model.config.hidden_dropout_prob = dropout
    model.config.classifier_dropout = dropout


def finetune(
    base: Path | str | None,
    data: Sequence[Path],
    out: Path,
    taxonomy: Taxonomy,
    safety: SafetyRules,
    *,
    validation: Sequence[Path] = (),
    args: TrainingArguments,
    tokenizer_and_model: tuple[PreTrainedTokenizerFast, TriageModel] | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
) -> FinetuneResult:
    """Fine-tune `base` (or the injected tokenizer and model) on `data`, calibrate, write `out`.

    `on_epoch_end` runs after each epoch's checkpoint is written; an exception it raises
    interrupts the run as a crash would, and the next call resumes from that checkpoint.
    The written metrics score the calibrated model on validation data, with `safety` applied.
    """
    started = time.monotonic()
    # Seeded before the model exists: the heads (and a random-init encoder) draw from torch.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    labels = {"department": taxonomy.department_keys, "urgency": taxonomy.urgency_keys}
    if tokenizer_and_model is not None:
        tokenizer, model = tokenizer_and_model
        base_name = str(base) if base is not None else "injected (in-memory) model"
    elif base is not None:
        model, tokenizer = from_pretrained(base, labels, random_init=args.random_init)
        base_name = f"{base} (architecture and tokenizer only)" if args.random_init else str(base)
    else:
        raise ModelError("a base checkpoint directory is needed to fine-tune")
    if {h: list(model.labels[h]) for h in HEADS} != {h: list(labels[h]) for h in HEADS}:
        raise ModelError("the model's label lists differ from the taxonomy's")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    examples = load_labelled(data, taxonomy)
    if validation:
        train, held_out = examples, load_labelled(validation, taxonomy)
    else:
        train, held_out = split_validation(examples, args.validation_fraction, args.seed)
    if not train or not held_out:
        raise ModelError("training and validation sets must both be non-empty")
    digest = fingerprint(examples)
    run_key = {
        "fingerprint": digest,
        "validation_fingerprint": fingerprint(held_out),
        "base": base_name,
        "arguments": {k: v for k, v in dataclasses.asdict(args).items() if k != "threads"},
    }

    if args.dropout is not None:
        _set_dropout(model, args.dropout)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ModelError("the tokenizer has no padding token")
    longest = model.config.max_position_embeddings - pad_id - 1
    encoder = InputEncoder(tokenizer, min(args.max_tokens, longest))
    train_ids = encoder.encode_requests([e.request for e in train])
    held_ids = encoder.encode_requests([e.request for e in held_out])
    train_targets = {h: torch.tensor(v) for h, v in _targets(model, train).items()}
    held_targets = _targets(model, held_out)
    losses = {
        head: torch.nn.CrossEntropyLoss(
            weight=class_weights(train_targets[head].tolist(), len(labels[head]))
            if args.class_weighting
            else None
        )
        for head in HEADS
    }

    optimizer = torch.optim.AdamW(decay_groups(model, args.weight_decay), lr=args.learning_rate)
    batches = -(-len(train) // args.batch_size)
    steps_per_epoch = -(-batches // args.gradient_accumulation)
    total_steps = steps_per_epoch * args.epochs
    warmup = int(args.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    checkpoint_dir = checkpoint_dir or out.with_name(out.name + ".checkpoint")
    restored = _load_checkpoint(checkpoint_dir, run_key, model, optimizer, scheduler)
    state, best = restored or (_Progress(), {})
    resumed_from = state.epoch
    show = progress and sys.stderr.isatty()
    model.train()
    session_seen, session_start = 0, time.monotonic()
    stopped = args.early_stopping_patience and state.bad_epochs >= args.early_stopping_patience
    while state.epoch < args.epochs and not stopped:
        epoch_start = time.monotonic()
        order = torch.randperm(
            len(train), generator=torch.Generator().manual_seed(args.seed * 1009 + state.epoch)
        ).tolist()
        bar = tqdm(
            total=len(train),
            desc=f"epoch {state.epoch + 1}/{args.epochs}",
            unit="ex",
            disable=not show,
            initial=state.batch_in_epoch * args.batch_size,
        )
        for index in range(state.batch_in_epoch, batches):
            rows = order[index * args.batch_size : (index + 1) * args.batch_size]
            outputs = model(*pad_batch([train_ids[i] for i in rows], pad_id))
            loss = losses["department"](outputs[0], train_targets["department"][rows])
            loss = loss + losses["urgency"](outputs[1], train_targets["urgency"][rows])
            (loss / args.gradient_accumulation).backward()
            state.loss_sum += float(loss.detach())
            state.batch_in_epoch = index + 1
            state.examples_seen += len(rows)
            session_seen += len(rows)
            if (index + 1) % args.gradient_accumulation == 0 or index + 1 == batches:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step = scheduler.last_epoch
                due = args.checkpoint_every and step % args.checkpoint_every == 0
                if due and index + 1 < batches:
                    _save_checkpoint(
                        checkpoint_dir, run_key, state, model, best, optimizer, scheduler
                    )
            rate = session_seen / max(time.monotonic() - session_start, 1e-9)
            bar.set_postfix(loss=f"{state.loss_sum / state.batch_in_epoch:.4f}", ex_s=f"{rate:.1f}")
            bar.update(len(rows))
        bar.close()
        scores = _logits(model, held_ids, pad_id, args.batch_size)
        f1 = {
            head: score_head(
                head,
                labels[head],
                [labels[head][i] for i in held_targets[head]],
                [labels[head][i] for i in scores[head].argmax(axis=1)],
            ).macro_f1
            for head in HEADS
        }
        report = EpochReport(
            state.epoch + 1,
            state.loss_sum / batches,
            f1["department"],
            f1["urgency"],
            time.monotonic() - epoch_start,
        )
        state.history.append(report)
        if not best or report.score > state.history[state.best_epoch - 1].score:
            best = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
            state.best_epoch, state.bad_epochs = report.epoch, 0
        else:
            state.bad_epochs += 1
        state.epoch, state.batch_in_epoch, state.loss_sum = state.epoch + 1, 0, 0.0
        state.seconds += time.monotonic() - epoch_start
        stopped = bool(args.early_stopping_patience) and (
            state.bad_epochs >= args.early_stopping_patience
        )
        _save_checkpoint(checkpoint_dir, run_key, state, model, best, optimizer, scheduler)
        if on_epoch_end is not None:
            on_epoch_end(report)

    model.load_state_dict(best)
    model.eval()
    scores = _logits(model, held_ids, pad_id, args.batch_size)
    calibration: dict[str, dict[str, float]] = {}
    for head in HEADS:
        truth = np.asarray(held_targets[head], dtype=np.int64)
        fitted = fit_temperature(scores[head], truth)
        before = expected_calibration_error(softmax(scores[head]), truth)
        after = expected_calibration_error(softmax(scores[head], fitted), truth)
        # Fitted on NLL; kept only when it does not worsen the calibration error it is meant to fix.
        kept = after <= before
        calibration[head] = {
            "temperature": fitted if kept else 1.0,
            "fitted_temperature": fitted,
            "ece_before": before,
            "ece_after": after if kept else before,
        }
    created = datetime.now(UTC)
    # Data, base and hyper-parameters: two runs on the same data from different bases differ.
    run_digest = hashlib.sha256(json.dumps(run_key, sort_keys=True).encode()).hexdigest()
    version = f"{KIND}-{created:%Y%m%d}-{run_digest[:8]}"
    classifier = CamembertClassifier(
        model,
        tokenizer,
        {h: c["temperature"] for h, c in calibration.items()},
        version,
        InferenceOptions(max_tokens=encoder.max_tokens, batch_size=args.batch_size, dtype="fp32"),
    )
    # fp32 (the classifier's options): the reference the faster variants are checked against.
    validation_scores = evaluate(classifier, held_out, taxonomy, safety)
    metadata = model_metadata(
        classifier,
        base_checkpoint=base_name,
        training_data={
            "folders": [str(f) for f in data],
            "validation_folders": [str(f) for f in validation],
            "examples": len(train),
            "validation_examples": len(held_out),
            "fingerprint": digest,
        },
        hyperparameters=dataclasses.asdict(args),
        calibration=calibration,
        metrics={
            "validation": validation_scores.to_dict(),
            "best_epoch": state.best_epoch,
            "history": [dataclasses.asdict(r) for r in state.history],
        },
    )
    # Which faster variants (bf16, int8) keep the validation scores: loading honours this.
    metadata[VARIANTS_KEY] = check_variants(
        classifier, held_out, taxonomy, safety, fp32_scores=validation_scores
    )
    metadata["timing"] = {
        "training_seconds": state.seconds,
        "examples_seen": state.examples_seen,
        "examples_per_second": state.examples_seen / max(state.seconds, 1e-9),
    }
    write_model_directory(classifier, out, taxonomy, metadata)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    result = FinetuneResult(
        out,
        version,
        state.best_epoch,
        list(state.history),
        calibration,
        resumed_from,
        time.monotonic() - started,
        metadata["timing"]["examples_per_second"],
    )
    if progress:
        print(result.summary())
    return result
