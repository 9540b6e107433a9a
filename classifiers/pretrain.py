"""Pretraining a small French CamemBERT from scratch (`triage pretrain`).

The recipe: a SentencePiece-style unigram tokenizer trained on the pretraining text
(`classifiers.pretrain_corpus`), the documents packed into fixed-length sequences
(`<s> … </s>`, documents joined by `</s>`, as RoBERTa's "full sentences"), then masked language
modelling: 15 % of the tokens chosen, 80 % of those replaced by `<mask>`, 10 % by a random
token, 10 % kept. The vocabulary projection runs on the chosen positions only, which on a CPU
saves most of a small model's time. Everything random draws from one seed, so the same text,
arguments and library versions give the same base model.

The output is an ordinary checkpoint directory (`CamembertForMaskedLM` in safetensors, its
`config.json`, the tokenizer files) that `triage train --base DIR` fine-tunes, plus
`pretraining.json`: arguments, sources with their sha256, token counts, the loss curve,
held-out masked-token accuracy and timings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm  # type: ignore[import-untyped]
from transformers import CamembertForMaskedLM, PreTrainedTokenizerFast

from classifiers.arguments import check_fields
from classifiers.camembert import decay_groups, library_versions
from classifiers.pretrain_corpus import Source
from classifiers.tokenizer import tiny_config, train_tokenizer

METADATA_FILE = "pretraining.json"
IGNORE = -100


@dataclass(frozen=True)
class PretrainArguments:
    """Hyper-parameters of a pretraining run (config/pretraining.yaml documents each one)."""

    vocab_size: int = 16000
    tokenizer_characters: int = 30_000_000
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    sequence_length: int = 128
    batch_size: int = 64
    steps: int = 3000
    learning_rate: float = 7e-4
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    mask_probability: float = 0.15
    request_repeats: int = 4
    heldout_sequences: int = 512
    evaluate_every: int = 500
    seed: int = 13
    threads: int | None = None

    def __post_init__(self) -> None:
        check_fields(
            self,
            [
                ("vocab_size", self.vocab_size >= 100, ">= 100"),
                ("tokenizer_characters", self.tokenizer_characters >= 1000, ">= 1000"),
                (
                    "hidden",
                    self.hidden >= 8 and self.hidden % self.heads == 0,
                    "a multiple of heads, >= 8",
                ),
                ("layers", self.layers >= 1, ">= 1"),
                ("heads", self.heads >= 1, ">= 1"),
                ("intermediate", self.intermediate >= 1, ">= 1"),
                ("sequence_length", 8 <= self.sequence_length <= 512, "in [8, 512]"),
                ("batch_size", self.batch_size >= 1, ">= 1"),
                ("steps", self.steps >= 1, ">= 1"),
                ("learning_rate", 0 < self.learning_rate < 1, "in (0, 1)"),
                ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
                ("weight_decay", 0 <= self.weight_decay < 1, "in [0, 1)"),
                ("mask_probability", 0 < self.mask_probability < 1, "in (0, 1)"),
                ("request_repeats", self.request_repeats >= 0, ">= 0"),
                ("heldout_sequences", self.heldout_sequences >= 1, ">= 1"),
                ("evaluate_every", self.evaluate_every >= 0, ">= 0"),
                ("threads", self.threads is None or self.threads >= 1, ">= 1 or null"),
            ],
        )


@dataclass(frozen=True)
class PretrainResult:
    directory: Path
    steps: int
    training_tokens: int
    heldout_loss: float
    heldout_accuracy: float
    seconds: float

    def summary(self) -> str:
        return (
            f"pretrained {self.steps} steps on {self.training_tokens:,} tokens in "
            f"{self.seconds / 60:.1f} min; held-out masked-token loss {self.heldout_loss:.3f}, "
            f"accuracy {self.heldout_accuracy:.3f} -> {self.directory}"
        )


def tokenizer_sample(documents: Sequence[str], characters: int, seed: int) -> list[str]:
    """Documents drawn in a seeded order until `characters` are collected."""
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    sample, total = [], 0
    for index in order:
        if total >= characters:
            break
        sample.append(documents[index])
        total += len(documents[index])
    return sample


def pack_sequences(
    documents: Sequence[str], tokenizer: PreTrainedTokenizerFast, length: int
) -> np.ndarray:
    """The documents' token ids joined by `</s>`, cut into rows of `<s> … </s>` of `length`."""
    backend = tokenizer.backend_tokenizer
    content = length - 2
    stream: list[int] = []
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    assert eos is not None and bos is not None
    for start in range(0, len(documents), 2048):
        for encoding in backend.encode_batch(
            list(documents[start : start + 2048]), add_special_tokens=False
        ):
            stream.extend(encoding.ids)
            stream.append(eos)
    rows = len(stream) // content
    body = np.asarray(stream[: rows * content], dtype=np.int32).reshape(rows, content)
    packed = np.empty((rows, length), dtype=np.int32)
    packed[:, 0], packed[:, 1:-1], packed[:, -1] = bos, body, eos
    return packed


def mask_tokens(
    ids: torch.Tensor,
    tokenizer: PreTrainedTokenizerFast,
    probability: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of a batch: the corrupted inputs and labels (`IGNORE` where unchosen)."""
    special = torch.zeros_like(ids, dtype=torch.bool)
    for token in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        special |= ids == token
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    draw = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    mask_id = tokenizer.mask_token_id
    assert mask_id is not None
    inputs[chosen & (draw < 0.8)] = mask_id
    randomise = chosen & (draw >= 0.8) & (draw < 0.9)
    random_ids = torch.randint(len(tokenizer), ids.shape, generator=generator)
    inputs[randomise] = random_ids[randomise]
    return inputs, labels


def masked_loss(
    model: CamembertForMaskedLM, inputs: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Cross-entropy over the chosen positions only, and how many of them were predicted right."""
    hidden = model.roberta(input_ids=inputs).last_hidden_state
    chosen = labels != IGNORE
    logits = model.lm_head(hidden[chosen])
    targets = labels[chosen]
    loss = torch.nn.functional.cross_entropy(logits, targets)
    return loss, int((logits.argmax(-1) == targets).sum())


def _evaluate(
    model: CamembertForMaskedLM,
    rows: np.ndarray,
    tokenizer: PreTrainedTokenizerFast,
    args: PretrainArguments,
) -> tuple[float, float]:
    """Held-out loss and accuracy, with a fixed masking so every evaluation sees the same task."""
    generator = torch.Generator().manual_seed(args.seed + 1)
    torch.nn.Module.eval(model)
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), args.batch_size):
            ids = torch.from_numpy(rows[start : start + args.batch_size]).long()
            inputs, labels = mask_tokens(ids, tokenizer, args.mask_probability, generator)
            chosen = int((labels != IGNORE).sum())
            loss, right = masked_loss(model, inputs, labels)
            total_loss += float(loss) * chosen
            correct += right
            count += chosen
    model.train()
    return total_loss / max(count, 1), correct / max(count, 1)


def _optimizer(model: torch.nn.Module, args: PretrainArguments) -> torch.optim.AdamW:
    groups = decay_groups(model, args.weight_decay)
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.98), eps=1e-6)


def pretrain(
    documents: Sequence[str],
    sources: Sequence[Source],
    out: Path,
    args: PretrainArguments | None = None,
    *,
    progress: bool = True,
) -> PretrainResult:
    """Train a tokenizer and a CamemBERT on `documents`; write the checkpoint to `out`."""
    args = args or PretrainArguments()
    began = time.monotonic()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    sample = tokenizer_sample(documents, args.tokenizer_characters, args.seed)
    tokenizer = train_tokenizer(sample, args.vocab_size)
    tokenizer_seconds = time.monotonic() - began
    rows = pack_sequences(documents, tokenizer, args.sequence_length)
    np.random.default_rng(args.seed).shuffle(rows)
    heldout_count = min(args.heldout_sequences, max(1, len(rows) // 10))
    heldout, train_rows = rows[:heldout_count], rows[heldout_count:]
    if len(train_rows) == 0:
        raise ValueError("not enough text for one training sequence")

    config = tiny_config(
        tokenizer,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        intermediate=args.intermediate,
        max_positions=args.sequence_length + 2,
    )
    model = CamembertForMaskedLM(config)
    model.train()
    optimizer = _optimizer(model, args)
    warmup = max(1, int(args.steps * args.warmup_ratio))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (args.steps - step) / max(1, args.steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(args.seed)
    order = np.random.default_rng(args.seed + 2)
    history: list[dict[str, float]] = []
    position, permutation = 0, order.permutation(len(train_rows))
    tokens_seen, running = 0, 0.0
    train_began = time.monotonic()
    bar = tqdm(total=args.steps, disable=not progress, unit="step", dynamic_ncols=True)
    for step in range(args.steps):
        if position + args.batch_size > len(permutation):
            position, permutation = 0, order.permutation(len(train_rows))
        batch = train_rows[permutation[position : position + args.batch_size]]
        position += args.batch_size
        ids = torch.from_numpy(batch).long()
        inputs, labels = mask_tokens(ids, tokenizer, args.mask_probability, generator)
        loss, _ = masked_loss(model, inputs, labels)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += ids.numel()
        value = loss.item()
        running = value if step == 0 else 0.98 * running + 0.02 * value
        elapsed = time.monotonic() - train_began
        bar.set_postfix(loss=f"{running:.3f}", tok_s=f"{tokens_seen / max(elapsed, 1e-9):,.0f}")
        bar.update(1)
        last = step + 1 == args.steps
        if (args.evaluate_every and (step + 1) % args.evaluate_every == 0) or last:
            heldout_loss, accuracy = _evaluate(model, heldout, tokenizer, args)
            history.append(
                {
                    "step": step + 1,
                    "train_loss": round(running, 4),
                    "heldout_loss": round(heldout_loss, 4),
                    "heldout_accuracy": round(accuracy, 4),
                    "seconds": round(elapsed, 1),
                }
            )
            bar.write(
                f"step {step + 1}: train loss {running:.3f}, held-out loss {heldout_loss:.3f}, "
                f"masked-token accuracy {accuracy:.3f}"
            )
    bar.close()
    train_seconds = time.monotonic() - train_began

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    seconds = time.monotonic() - began
    metadata = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "arguments": dataclasses.asdict(args),
        "sources": [dataclasses.asdict(s) for s in sources],
        "documents": len(documents),
        "sequences": {"train": len(train_rows), "heldout": len(heldout)},
        "vocabulary": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training_tokens": tokens_seen,
        "epochs": round(tokens_seen / (len(train_rows) * args.sequence_length), 3),
        "history": history,
        "seconds": {
            "tokenizer": round(tokenizer_seconds, 1),
            "training": round(train_seconds, 1),
            "total": round(seconds, 1),
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "libraries": library_versions(),
    }
    (out / METADATA_FILE).write_text(
        json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    final = history[-1]
    return PretrainResult(
        out,
        args.steps,
        tokens_seen,
        final["heldout_loss"],
        final["heldout_accuracy"],
        seconds,
    )
