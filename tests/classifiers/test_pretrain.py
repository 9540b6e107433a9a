"""Tests of `triage pretrain`: the corpus reader, packing, masking and a tiny run end to end.

The shared corpora are replaced by small gzip JSON-lines files in the same layout, written from
the starter corpus' own texts; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from classifiers import Taxonomy
from classifiers.camembert import from_pretrained
from classifiers.dataset import LabelledRequest
from classifiers.pretrain import (
    IGNORE,
    METADATA_FILE,
    PretrainArguments,
    mask_tokens,
    pack_sequences,
    pretrain,
)
from classifiers.pretrain_corpus import DEBATES, SERVICE_PUBLIC, load_pretraining_text
from classifiers.tokenizer import train_tokenizer
from tests.conftest import DATA_DIR
from worker import exit_codes
from worker.cli import main

pytestmark = pytest.mark.usefixtures("hub_offline")

TINY = PretrainArguments(
    vocab_size=400,
    tokenizer_characters=200_000,
    hidden=32,
    layers=1,
    heads=2,
    intermediate=64,
    sequence_length=32,
    batch_size=8,
    steps=60,
    learning_rate=3e-3,
    warmup_ratio=0.1,
    heldout_sequences=16,
    evaluate_every=20,
    request_repeats=1,
    seed=5,
)


def _write_jsonl_gz(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, corpus: list[LabelledRequest]) -> Path:
    """Both corpora in their real layout, the fiche published twice as the real one does."""
    root = tmp_path_factory.mktemp("shared")
    texts = [f"{e.request.subject}\n{e.request.classifier_text}" for e in corpus]
    fiches = [
        {"id": f"F{i}", "title": text.splitlines()[0], "text": f"## Texte\n- {text}"}
        for i, text in enumerate(texts)
    ]
    _write_jsonl_gz(root / SERVICE_PUBLIC, [*fiches, fiches[0]])
    sentences = [line for text in texts for line in text.splitlines() if line.strip()]
    _write_jsonl_gz(root / DEBATES, [{"id": "1", "text": "\n".join(sentences)}])
    return root


class TestCorpus:
    def test_every_source_is_read_and_counted(self, shared: Path, taxonomy: Taxonomy) -> None:
        """Fiches are read once per id, Markdown marks dropped; requests repeated as asked."""
        documents, sources = load_pretraining_text(shared, [DATA_DIR / "validation"], taxonomy, 2)
        names = [s.name for s in sources]
        assert names == [
            "service-public-vdd",
            "an-debats-sentences",
            "labelled requests (text only)",
        ]
        fiches = sources[0].documents
        assert not any(d.startswith("##") or "\n- " in d for d in documents[:fiches])
        labelled = sum(
            len(path.read_text(encoding="utf-8").splitlines())
            for path in (DATA_DIR / "validation").rglob("labels.jsonl")
        )
        assert sources[2].documents == 2 * labelled
        assert len(documents) == sum(s.documents for s in sources)
        assert all(len(s.sha256) == 64 for s in sources)

    def test_a_missing_corpus_is_named(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        with pytest.raises(FileNotFoundError, match="service-public-vdd"):
            load_pretraining_text(tmp_path, [], taxonomy)

    def test_cli_reports_a_missing_corpus(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["pretrain", "--shared", str(tmp_path), "--out", str(tmp_path / "base")])
        assert code == exit_codes.USAGE
        assert "not found" in capsys.readouterr().err


class TestPackingAndMasking:
    def test_rows_are_full_sequences_framed_by_special_tokens(
        self, corpus: list[LabelledRequest]
    ) -> None:
        texts = [e.request.classifier_text for e in corpus]
        tokenizer = train_tokenizer(texts, 300)
        rows = pack_sequences(texts, tokenizer, 24)
        assert rows.shape[1] == 24 and len(rows) > 10
        assert (rows[:, 0] == tokenizer.bos_token_id).all()
        assert (rows[:, -1] == tokenizer.eos_token_id).all()
        assert tokenizer.pad_token_id not in rows

    def test_masking_follows_bert_proportions_and_spares_special_tokens(
        self, corpus: list[LabelledRequest]
    ) -> None:
        tokenizer = train_tokenizer([e.request.classifier_text for e in corpus], 300)
        ids = torch.randint(5, len(tokenizer), (200, 64))
        ids[:, 0], ids[:, -1] = tokenizer.bos_token_id, tokenizer.eos_token_id
        inputs, labels = mask_tokens(ids, tokenizer, 0.15, torch.Generator().manual_seed(0))
        chosen = labels != IGNORE
        assert 0.13 < chosen.float().mean() < 0.17
        assert not chosen[:, 0].any() and not chosen[:, -1].any()
        masked = (inputs == tokenizer.mask_token_id) & chosen
        assert 0.75 < masked.sum() / chosen.sum() < 0.85
        assert (labels[chosen] == ids[chosen]).all()
        assert (inputs[~chosen] == ids[~chosen]).all()


class TestPretrain:
    def test_tiny_run_learns_and_writes_a_loadable_base(
        self, shared: Path, tmp_path: Path, taxonomy: Taxonomy
    ) -> None:
        """Held-out loss falls; the directory is a checkpoint `triage train --base` can read."""
        documents, sources = load_pretraining_text(shared, [], taxonomy)
        result = pretrain(documents, sources, tmp_path / "base", TINY, progress=False)
        metadata = json.loads((tmp_path / "base" / METADATA_FILE).read_text(encoding="utf-8"))
        history = metadata["history"]
        assert [h["step"] for h in history] == [20, 40, 60]
        assert history[-1]["heldout_loss"] < history[0]["heldout_loss"]
        assert result.heldout_loss == history[-1]["heldout_loss"]
        assert [s["name"] for s in metadata["sources"]] == [s.name for s in sources]
        assert not list((tmp_path / "base").glob("*.bin"))
        labels = {"department": taxonomy.department_keys, "urgency": taxonomy.urgency_keys}
        model, tokenizer = from_pretrained(tmp_path / "base", labels)
        assert model.config.hidden_size == TINY.hidden
        assert len(tokenizer) == model.config.vocab_size
        # random_init: the same architecture and tokenizer, none of the pretrained weights.
        fresh, fresh_tokenizer = from_pretrained(tmp_path / "base", labels, random_init=True)
        shape = ("hidden_size", "num_hidden_layers", "vocab_size", "max_position_embeddings")
        assert [getattr(fresh.config, k) for k in shape] == [
            getattr(model.config, k) for k in shape
        ]
        assert fresh_tokenizer.get_vocab() == tokenizer.get_vocab()
        pretrained = model.encoder.embeddings.word_embeddings.weight
        assert not torch.equal(fresh.encoder.embeddings.word_embeddings.weight, pretrained)

    def test_same_seed_same_base(self, shared: Path, tmp_path: Path, taxonomy: Taxonomy) -> None:
        documents, sources = load_pretraining_text(shared, [], taxonomy)
        short = PretrainArguments(**{**TINY.__dict__, "steps": 5, "evaluate_every": 0})
        first = pretrain(documents, sources, tmp_path / "a", short, progress=False)
        second = pretrain(documents, sources, tmp_path / "b", short, progress=False)
        assert first.heldout_loss == second.heldout_loss
        assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
            tmp_path / "b" / "model.safetensors"
        ).read_bytes()
