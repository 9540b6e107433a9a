"""A CamemBERT-style tokenizer trained from scratch, and a tiny encoder configuration for tests.

CamemBERT's own tokenizer is a SentencePiece unigram model over NFKC-normalised text, with the
special tokens `<s>`, `</s>`, `<pad>`, `<unk>`, `<mask>` and the RoBERTa layout `<s> A </s>` (and
`<s> A </s></s> B </s>` for pairs). `train_tokenizer` rebuilds that recipe with the `tokenizers`
library, so tests, and the project's own pretraining, need nothing from a hub.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import CamembertConfig, PreTrainedTokenizerFast

BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKENS = (BOS, PAD, EOS, UNK, MASK)
"""In RoBERTa's order, so `<s>`=0, `<pad>`=1, `</s>`=2: the ids `CamembertConfig` defaults to."""

DEFAULT_MAX_POSITIONS = 258
"""RoBERTa-style position embeddings start after the padding index (1), so 258 fit 256 tokens."""


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    algorithm: Literal["unigram", "bpe"] = "unigram",
    min_frequency: int = 2,
    max_piece_length: int = 16,
) -> PreTrainedTokenizerFast:
    """Train a CamemBERT-style tokenizer on `texts`; the vocabulary may end up below `vocab_size`.

    `min_frequency` applies to BPE merges only; `max_piece_length` to unigram pieces only.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    model: models.Model
    trainer: trainers.Trainer
    if algorithm == "unigram":
        model = models.Unigram()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            unk_token=UNK,
            max_piece_length=max_piece_length,
            show_progress=False,
        )
    elif algorithm == "bpe":
        model = models.BPE(unk_token=UNK)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
    else:
        raise ValueError(f"algorithm must be 'unigram' or 'bpe', got {algorithm!r}")
    tokenizer = Tokenizer(model)
    # NFKC, as SentencePiece's nmt_nfkc: folds ligatures and full-width forms, keeps accents.
    tokenizer.normalizer = normalizers.NFKC()
    # As CamemBERT: runs of white space count once, and "▁" marks word starts like SentencePiece,
    # so a mail's blank lines cost no tokens and decoding restores the spaces.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]
    )
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainer)
    if algorithm == "unigram":
        tokenizer.model = _rounded_unigram(tokenizer)
    bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, bos), (EOS, eos)],
    )
    # transformers 5 declares this constructor as (*args, **kwargs), untyped.
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        cls_token=BOS,
        sep_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        mask_token=MASK,
    )


def _rounded_unigram(tokenizer: Tokenizer) -> models.Unigram:
    """The trained unigram model with its pieces in a canonical order and rounded scores.

    The trainer sums floats in a varying order, and appends the characters that must stay
    representable with scores 1e-4 apart in a varying (hash) order, so two runs on the same
    text differ in the last digits of some scores and in piece ids. Rounding the scores, giving
    the appended characters one score and sorting the pieces make the same text give the same
    tokenizer, which a seeded, reproducible pretraining needs.
    """
    state = json.loads(tokenizer.to_str())["model"]
    special = len(SPECIAL_TOKENS)  # first, in their fixed order: their ids are the config's
    learnt = [(piece, round(score, 6)) for piece, score in state["vocab"][special:]]
    tail = len(learnt)
    while tail > 0 and len(learnt[tail - 1][0]) == 1:
        tail -= 1
    if tail < len(learnt):
        floor = min(score for _, score in learnt[tail:])
        learnt[tail:] = [(piece, floor) for piece, _ in learnt[tail:]]
    pieces = sorted(learnt, key=lambda item: (-item[1], item[0]))
    head = [(piece, score) for piece, score in state["vocab"][:special]]
    return models.Unigram(head + pieces, unk_id=state["unk_id"], byte_fallback=False)


def tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    max_positions: int = DEFAULT_MAX_POSITIONS,
) -> CamembertConfig:
    """A small CamemBERT configuration matching `tokenizer`, for tests and toy experiments.

    `max_positions` is `max_position_embeddings`: the longest input is `max_positions - 2`.
    """
    return CamembertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        type_vocab_size=1,  # as CamemBERT: one segment embedding, pairs are told apart by </s></s>
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
