"""The CamemBERT classifier: one encoder, a department head and an urgency head.

A `CamembertModel` encoder reads `<s> subject </s></s> text </s>`; two linear heads read the
representation of the first token, so one forward pass gives both answers. Probabilities are
`softmax(logits / T)` per head with the temperatures of `calibration.json`.

The model directory (docs/model-format.md) holds the weights in safetensors only, the encoder's
`config.json` and the tokenizer's files, next to the common files of `model_dir`. Loading builds
the model from `config.json` and reads the weights with `safetensors.torch.load_file`: no pickle
is ever unpickled, and nothing is fetched from a hub.
"""

from __future__ import annotations

import bisect
import dataclasses
import platform
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import AutoTokenizer, CamembertConfig, CamembertModel, PreTrainedTokenizerFast

from classifiers import model_dir
from classifiers.base import Evidence, Prediction, predictions_from_probabilities
from classifiers.calibration import FloatArray, softmax
from classifiers.explain import EXPLAINED_CHARS, Word, model_labels, top_phrases, words_of
from classifiers.model_card import render_model_card
from classifiers.model_dir import METADATA_FILE, ModelFiles
from classifiers.pseudonymise import pseudonymise
from classifiers.taxonomy import Taxonomy
from worker.errors import ModelError
from worker.request import Request

KIND = "camembert"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HEADS = ("department", "urgency")
MAX_TOKENS = 256
"""Default token budget of an input, special tokens included."""

Dtype = Literal["auto", "fp32", "bf16"]
Quantize = Literal["none", "int8"]
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_CHARS_PER_TOKEN = 16
"""Texts are cut to `budget × 16` characters before tokenising: far more than the budget needs
(French averages 3–5 characters a token), and a 1 MB message is not tokenised to keep 256."""


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bf16 arithmetic (AVX-512 BF16 or AMX), according to the kernel.

    Without it, bf16 is emulated and slower than fp32, so an unknown CPU counts as not having it.
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(
        _BF16_CPU_FLAGS & set(line.partition(":")[2].split())
        for line in text.splitlines()
        if line.startswith("flags")
    )


@dataclass(frozen=True)
class InferenceOptions:
    """How to run the model; `__post_init__` raises `ValueError` naming a bad field.

    `max_tokens` None means the budget the model was trained with. `threads` sets torch's
    process-wide intra-op thread count, hence only when given. `dtype` "auto" uses bf16 where
    the CPU has it natively, and `quantize` "int8" quantises the linear layers dynamically;
    loading a model allows either only where its validation check did (`classifiers.variants`).
    """

    max_tokens: int | None = None
    batch_size: int = 8
    threads: int | None = None
    dtype: Dtype = "auto"
    quantize: Quantize = "none"

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 8:
            raise ValueError(f"max_tokens must be >= 8 or unset, got {self.max_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or unset, got {self.threads}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"dtype must be 'auto', 'fp32' or 'bf16', got {self.dtype!r}")
        if self.quantize not in ("none", "int8"):
            raise ValueError(f"quantize must be 'none' or 'int8', got {self.quantize!r}")


class InputEncoder:
    """Token ids of `<s> subject </s></s> text </s>` (the tokenizer's pair layout) per request.

    The subject is kept, up to half the budget; the classifier text fills the rest and loses its
    end, since the start of a message carries most of its signal.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, max_tokens: int = MAX_TOKENS) -> None:
        # A private copy without truncation or padding: transformers toggles those on the shared
        # backend per call, and either would silently change what `encode_batch` returns.
        self._backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self.max_tokens = max_tokens
        self._content = max_tokens - self._backend.num_special_tokens_to_add(is_pair=True)
        if self._content < 2:
            raise ValueError(f"max_tokens {max_tokens} leaves no room for text")

    def encode(self, subjects: Sequence[str], texts: Sequence[str]) -> list[list[int]]:
        cap = self.max_tokens * _CHARS_PER_TOKEN
        firsts = self._backend.encode_batch([s[:cap] for s in subjects], add_special_tokens=False)
        seconds = self._backend.encode_batch([t[:cap] for t in texts], add_special_tokens=False)
        encoded = []
        for first, second in zip(firsts, seconds, strict=True):
            first.truncate(self._content // 2)
            second.truncate(self._content - len(first.ids))
            encoded.append(list(self._backend.post_process(first, second).ids))
        return encoded

    def encode_with_spans(
        self, subject: str, text: str
    ) -> tuple[list[int], list[tuple[int, int] | None]]:
        """One input's ids, and each token's span in `subject + "\n" + text` (None: special)."""
        cap = self.max_tokens * _CHARS_PER_TOKEN
        first = self._backend.encode(subject[:cap], add_special_tokens=False)
        second = self._backend.encode(text[:cap], add_special_tokens=False)
        first.truncate(self._content // 2)
        second.truncate(self._content - len(first.ids))
        pair = self._backend.post_process(first, second)
        shift = len(subject) + 1
        spans: list[tuple[int, int] | None] = []
        for sequence, special, (start, end) in zip(
            pair.sequence_ids, pair.special_tokens_mask, pair.offsets, strict=True
        ):
            if special or sequence is None:
                spans.append(None)
            else:
                offset = 0 if sequence == 0 else shift
                spans.append((start + offset, end + offset))
        return list(pair.ids), spans

    def encode_requests(self, requests: Sequence[Request]) -> list[list[int]]:
        """Subject and text as a pair, pseudonymised as `classifier_input` does for every model.

        (Explanations encode the raw text instead: their spans must point into what agents read.)
        """
        return self.encode(
            [pseudonymise(r.subject) for r in requests],
            [pseudonymise(r.classifier_text) for r in requests],
        )


class TriageModel(torch.nn.Module):
    """A CamemBERT encoder and two linear heads reading the first token (`<s>`)."""

    def __init__(
        self,
        config: CamembertConfig,
        labels: Mapping[str, Sequence[str]],
        *,
        encoder: CamembertModel | None = None,
    ) -> None:
        super().__init__()
        self.labels = {head: tuple(labels[head]) for head in HEADS}
        self.encoder = (
            encoder if encoder is not None else CamembertModel(config, add_pooling_layer=False)
        )
        dropout = config.classifier_dropout
        self.dropout = torch.nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.department = torch.nn.Linear(config.hidden_size, len(self.labels["department"]))
        self.urgency = torch.nn.Linear(config.hidden_size, len(self.labels["urgency"]))
        for head in (self.department, self.urgency):  # as transformers initialises its heads
            torch.nn.init.normal_(head.weight, std=config.initializer_range)
            torch.nn.init.zeros_(head.bias)

    @property
    def config(self) -> CamembertConfig:
        config: CamembertConfig = self.encoder.config
        return config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Department and urgency logits, each of shape (batch, labels)."""
        return self._heads(self.encoder(input_ids=input_ids, attention_mask=attention_mask))

    def from_embeddings(
        self, embeddings: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` from word embeddings (unpadded rows), for gradient attributions."""
        return self._heads(self.encoder(inputs_embeds=embeddings, attention_mask=attention_mask))

    def _heads(self, output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.dropout(output.last_hidden_state[:, 0])
        return self.department(first), self.urgency(first)


def from_pretrained(
    base: str | Path, labels: Mapping[str, Sequence[str]], *, random_init: bool = False
) -> tuple[TriageModel, PreTrainedTokenizerFast]:
    """A CamemBERT (or RoBERTa-architecture) checkpoint's encoder and tokenizer, with new heads.

    `base` is a local checkpoint directory (`camembert-base` downloaded by a user, or the
    project's own base model) or a hub id, which transformers downloads unless `HF_HUB_OFFLINE`
    is set. Only safetensors weights are read: a checkpoint with pickled weights only is refused.
    `random_init` keeps the checkpoint's tokenizer and architecture but not its weights: the
    reference that shows what pretraining brings.
    """
    try:
        if random_init:
            config = CamembertConfig.from_pretrained(str(base))
            encoder = CamembertModel(config, add_pooling_layer=False)
        else:
            # dtype pinned: transformers 5 would otherwise keep a half-precision checkpoint's.
            encoder = CamembertModel.from_pretrained(
                str(base), add_pooling_layer=False, use_safetensors=True, dtype=torch.float32
            )
        tokenizer = AutoTokenizer.from_pretrained(str(base), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{base}: not a usable CamemBERT checkpoint ({exc})") from exc
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ModelError(f"{base}: the tokenizer must be a fast (tokenizers) one")
    return TriageModel(encoder.config, labels, encoder=encoder), tokenizer


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decoupled weight decay on weight matrices and embeddings, none on
    biases and layer-norm scales (the one-dimensional parameters)."""
    named = list(model.named_parameters())
    return [
        {"params": [p for _, p in named if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0},
    ]


def quantize_int8(model: TriageModel) -> torch.nn.Module:
    """A copy of `model` whose linear layers compute in int8 with dynamic activation scales."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch announces a move of this API to torchao
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        quantized: torch.nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False
        )
    return quantized


def _word_at(words: Sequence[Word], position: int) -> int | None:
    """The index of the word holding character `position`, if any (words are in order)."""
    index = bisect.bisect_right([w.start for w in words], position) - 1
    if index >= 0 and position < words[index].end:
        return index
    return None


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their attention mask, as wide as the longest row."""
    ids = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


class CamembertClassifier:
    """A `TriageModel`, its tokenizer, label lists and temperatures: the `Classifier` protocol."""

    def __init__(
        self,
        model: TriageModel,
        tokenizer: PreTrainedTokenizerFast,
        temperatures: Mapping[str, float],
        version: str,
        options: InferenceOptions | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.labels = model.labels
        self.temperatures = dict(temperatures)
        self._version = version
        self.options = options or InferenceOptions()
        config = model.config
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id != config.pad_token_id:
            # The encoder derives positions from the padding id: a mismatch shifts every one.
            raise ModelError("the tokenizer and the encoder must share a padding token id")
        self._pad_id: int = tokenizer.pad_token_id
        # RoBERTa-style positions start after the padding index: the model's longest input.
        longest = config.max_position_embeddings - self._pad_id - 1
        budget = self.options.max_tokens or MAX_TOKENS
        self.encoder = InputEncoder(tokenizer, min(budget, longest))
        if self.options.quantize == "int8":
            self.uses_bf16 = False  # int8 kernels take fp32 activations: int8 wins over bf16
        elif self.options.dtype == "auto":
            self.uses_bf16 = native_bf16()
        else:
            self.uses_bf16 = self.options.dtype == "bf16"
        if self.options.threads is not None:
            torch.set_num_threads(self.options.threads)
        # Inference runs `_runner`: the model itself, or an int8 copy of its linear layers.
        # Explanations need gradients, which quantised layers lack: they use `model`.
        self._runner: torch.nn.Module = model
        if self.options.quantize == "int8":
            self._runner = quantize_int8(model)

    def with_options(self, options: InferenceOptions) -> CamembertClassifier:
        """The same weights run another way (sharing them, except an int8 copy)."""
        return CamembertClassifier(
            self.model, self.tokenizer, self.temperatures, self._version, options
        )

    @property
    def version(self) -> str:
        return self._version

    def logits(self, requests: Sequence[Request]) -> dict[str, FloatArray]:
        """Raw scores of every label, per head, before temperature scaling, in request order."""
        encoded = self.encoder.encode_requests(requests)
        scores = {head: np.zeros((len(requests), len(self.labels[head]))) for head in HEADS}
        # Longest first, so each micro-batch pads little and the memory peak comes at once.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        was_training = self.model.training
        self.model.eval()
        self._runner.eval()
        try:
            with (
                torch.inference_mode(),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.uses_bf16),
            ):
                for start in range(0, len(order), self.options.batch_size):
                    rows = order[start : start + self.options.batch_size]
                    ids, mask = pad_batch([encoded[i] for i in rows], self._pad_id)
                    outputs = self._runner(ids, mask)
                    for head, output in zip(HEADS, outputs, strict=True):
                        scores[head][rows] = output.float().numpy()
        finally:
            self.model.train(was_training)
        return scores

    def probabilities(self, requests: Sequence[Request]) -> dict[str, FloatArray]:
        return {
            head: softmax(scores, self.temperatures[head])
            for head, scores in self.logits(requests).items()
        }

    def predict(self, requests: Sequence[Request]) -> list[Prediction]:
        if not requests:
            return []
        probabilities = self.probabilities(requests)
        return predictions_from_probabilities(requests, probabilities, self.labels, self.version)

    def explain(
        self, requests: Sequence[Request], predictions: Sequence[Prediction]
    ) -> list[tuple[Evidence, ...]]:
        """Gradient × input over the subject and first sentences (see `classifiers.explain`)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return [self._explain(r, p) for r, p in zip(requests, predictions, strict=True)]
        finally:
            self.model.train(was_training)

    def _explain(self, request: Request, prediction: Prediction) -> tuple[Evidence, ...]:
        body = request.classifier_text[:EXPLAINED_CHARS]
        ids, spans = self.encoder.encode_with_spans(request.subject, body)
        text = f"{request.subject}\n{body}"
        words = words_of(text)
        table = self.model.encoder.embeddings.word_embeddings
        mask_id = self.tokenizer.mask_token_id
        reference = table(torch.tensor([mask_id if mask_id is not None else self._pad_id]))
        with torch.enable_grad():
            embeddings = table(torch.tensor([ids])).detach().requires_grad_(True)
            outputs = self.model.from_embeddings(embeddings, torch.ones(1, len(ids)))
            evidence: list[Evidence] = []
            labels = model_labels(prediction)
            for head, output in zip(HEADS, outputs, strict=True):
                target = output[0, self.labels[head].index(labels[head])]
                (gradient,) = torch.autograd.grad(target, embeddings, retain_graph=True)
                tokens = (gradient * (embeddings - reference)).sum(-1)[0].tolist()
                weights = [0.0] * len(words)
                for span, weight in zip(spans, tokens, strict=True):
                    if span is None:
                        continue
                    index = _word_at(words, span[0])
                    if index is not None:
                        weights[index] += weight
                evidence += top_phrases(text, words, weights, head)
        return tuple(evidence)

    def save(self, directory: Path) -> None:
        """Write the weights, `config.json` and the tokenizer; not the common files."""
        state = {name: t.detach().contiguous() for name, t in self.model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        self.model.config.to_json_file(directory / CONFIG_FILE)
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def load(
        cls, files: ModelFiles, options: InferenceOptions | None = None
    ) -> CamembertClassifier:
        """Rebuild the classifier of a checked directory; the saved token budget is the default."""
        directory = files.directory
        from classifiers.variants import allowed_options  # it builds on this module

        options = options or InferenceOptions()
        if options.max_tokens is None:
            try:
                saved = int(files.metadata.get("max_tokens", MAX_TOKENS))
                options = dataclasses.replace(options, max_tokens=saved)
            except (TypeError, ValueError) as exc:
                raise ModelError(f"{directory / METADATA_FILE}: bad max_tokens ({exc})") from exc
        options = allowed_options(options, files.metadata)
        try:
            config = CamembertConfig.from_json_file(directory / CONFIG_FILE)
            # A local directory only; remote code would run at load time, so it is refused too.
            tokenizer = AutoTokenizer.from_pretrained(
                directory, local_files_only=True, trust_remote_code=False
            )
            state = load_file(directory / WEIGHTS_FILE)
        except (OSError, ValueError, safetensors.SafetensorError) as exc:
            raise ModelError(f"{directory}: incomplete camembert model ({exc})") from exc
        if not isinstance(tokenizer, PreTrainedTokenizerFast):
            raise ModelError(f"{directory}: the tokenizer must be a fast (tokenizers) one")
        model = TriageModel(config, files.labels)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(
                f"{directory}: {WEIGHTS_FILE} does not match {CONFIG_FILE} and labels.json ({exc})"
            ) from exc
        return cls(model, tokenizer, files.temperatures, files.version, options)


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def model_metadata(
    classifier: CamembertClassifier,
    *,
    base_checkpoint: str,
    training_data: Mapping[str, Any] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `metadata.json` of a camembert model directory (docs/model-format.md)."""
    data: dict[str, Any] = {
        "folders": [],
        "validation_folders": [],
        "examples": 0,
        "validation_examples": 0,
        "fingerprint": None,
    }
    return {
        "kind": KIND,
        "version": classifier.version,
        "created_at": datetime.now(UTC).isoformat(),
        "base_checkpoint": base_checkpoint,
        "max_tokens": classifier.encoder.max_tokens,
        "training_data": data | dict(training_data or {}),
        "hyperparameters": dict(hyperparameters or {}),
        "calibration": dict(calibration or {}),
        "metrics": dict(metrics or {}),
        "library_versions": library_versions(),
    }


def write_model_directory(
    classifier: CamembertClassifier,
    out: Path,
    taxonomy: Taxonomy,
    metadata: dict[str, Any],
) -> None:
    """Write the whole model directory `out` (staged, then renamed into place)."""
    model_dir.write_model_directory(
        classifier, out, metadata, render_model_card(metadata, taxonomy)
    )
