"""Tests of `classifiers/tokenizer.py`: a CamemBERT-style tokenizer and a tiny configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, CamembertModel, PreTrainedTokenizerFast

from classifiers.dataset import LabelledRequest
from classifiers.tokenizer import SPECIAL_TOKENS, tiny_config, train_tokenizer

pytestmark = pytest.mark.usefixtures("hub_offline")

SENTENCE = "Bonjour, le lampadaire de la rue est éteint."


class TestTrainTokenizer:
    def test_special_tokens_take_robertas_ids(
        self, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """<s>, <pad>, </s>, <unk>, <mask> are ids 0 to 4, the ids CamembertConfig expects."""
        assert tiny_tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
        assert tiny_tokenizer.pad_token_id == 1
        assert (tiny_tokenizer.cls_token, tiny_tokenizer.sep_token) == ("<s>", "</s>")
        assert tiny_tokenizer.mask_token == "<mask>"

    def test_vocabulary_has_the_requested_size(
        self, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """A corpus of a few dozen requests fills a 500-piece vocabulary."""
        assert len(tiny_tokenizer) == 500

    def test_single_text_is_wrapped_in_s_and_end_of_sequence(
        self, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """One text encodes as `<s> A </s>`, CamemBERT's layout."""
        tokens = tiny_tokenizer.convert_ids_to_tokens(tiny_tokenizer(SENTENCE)["input_ids"])
        assert tokens[0] == "<s>"
        assert tokens[-1] == "</s>"
        assert tokens.count("</s>") == 1
        assert "<unk>" not in tokens

    def test_pair_is_separated_by_two_end_tokens(
        self, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """A pair encodes as `<s> A </s></s> B </s>`, RoBERTa's layout."""
        alone = tiny_tokenizer("Lampadaire", add_special_tokens=False)["input_ids"]
        text = tiny_tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
        pair = tiny_tokenizer("Lampadaire", SENTENCE)["input_ids"]
        assert pair == [0, *alone, 2, 2, *text, 2]

    def test_decoding_restores_the_text(self, tiny_tokenizer: PreTrainedTokenizerFast) -> None:
        """Decoding a sentence's pieces gives the sentence back, spaces and accents included."""
        ids = tiny_tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
        assert tiny_tokenizer.decode(ids) == SENTENCE

    def test_nfkc_folds_compatibility_characters(
        self, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """The "ﬁ" ligature and a full-width letter encode as their plain equivalents."""
        assert tiny_tokenizer("ﬁche Ａ")["input_ids"] == tiny_tokenizer("fiche A")["input_ids"]

    def test_white_space_runs_count_once(self, tiny_tokenizer: PreTrainedTokenizerFast) -> None:
        """Blank lines and repeated spaces cost no more tokens than one space."""
        spaced = tiny_tokenizer("Bonjour,\n\n\n   le   lampadaire")["input_ids"]
        assert spaced == tiny_tokenizer("Bonjour, le lampadaire")["input_ids"]

    def test_save_and_load_give_the_same_ids(
        self, tiny_tokenizer: PreTrainedTokenizerFast, tmp_path: Path
    ) -> None:
        """A saved tokenizer loads back from its directory, offline, and encodes identically."""
        tiny_tokenizer.save_pretrained(tmp_path)
        loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
        assert (
            loaded("Objet", SENTENCE)["input_ids"] == tiny_tokenizer("Objet", SENTENCE)["input_ids"]
        )
        assert loaded.pad_token_id == tiny_tokenizer.pad_token_id

    def test_bpe_variant_trains_too(self, corpus: list[LabelledRequest]) -> None:
        """The BPE algorithm gives a tokenizer with the same special tokens and layout."""
        texts = [e.request.classifier_text for e in corpus]
        tokenizer = train_tokenizer(texts, vocab_size=300, algorithm="bpe")
        ids = tokenizer(SENTENCE)["input_ids"]
        assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
        assert (ids[0], ids[-1]) == (0, 2)
        assert 5 < len(tokenizer) <= 300

    def test_vocabulary_smaller_than_the_special_tokens_is_refused(self) -> None:
        """A vocab_size that leaves no room beyond the special tokens raises ValueError."""
        with pytest.raises(ValueError, match="vocab_size"):
            train_tokenizer(["bonjour"], vocab_size=5)


class TestTinyConfig:
    def test_matches_the_tokenizer(self, tiny_tokenizer: PreTrainedTokenizerFast) -> None:
        """The configuration takes the tokenizer's vocabulary size and special token ids."""
        config = tiny_config(tiny_tokenizer, hidden=16, layers=1, heads=2, intermediate=32)
        assert config.vocab_size == len(tiny_tokenizer)
        assert config.pad_token_id == tiny_tokenizer.pad_token_id
        assert (config.bos_token_id, config.eos_token_id) == (0, 2)
        assert (config.hidden_size, config.num_hidden_layers) == (16, 1)

    def test_encoder_accepts_max_positions_minus_two_tokens(
        self, tiny_tokenizer: PreTrainedTokenizerFast
    ) -> None:
        """An encoder built from it reads an input of `max_positions - 2` tokens."""
        config = tiny_config(tiny_tokenizer, hidden=16, layers=1, intermediate=32, max_positions=34)
        encoder = CamembertModel(config, add_pooling_layer=False).eval()
        ids = torch.full((1, 32), 7, dtype=torch.long)
        with torch.inference_mode():
            output = encoder(input_ids=ids, attention_mask=torch.ones_like(ids))
        assert output.last_hidden_state.shape == (1, 32, 16)
