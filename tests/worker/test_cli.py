"""Tests of worker/cli.py: the `triage` commands and the `classify` JSON contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR, FIXTURES
from worker import exit_codes
from worker.cli import main
from worker.parsing import parse_raw, read_raw

CONTRACT_KEYS = {
    "path",
    "request_id",
    "department",
    "urgency",
    "confidence",
    "needs_review",
    "destination",
}


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every command writes under a temporary state directory, never into the repository."""
    state = tmp_path / "state"
    monkeypatch.setenv("TRIAGE_STATE_DIR", str(state))
    return state


def _lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


class TestClassify:
    """`triage classify` prints a JSON object per input; its exit code says if any failed."""

    def test_contract(
        self, baseline_model_dir: Path, taxonomy: object, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each line has exactly the contract's keys with the contract's types."""
        files = [DATA_DIR / "samples" / "01_arbre_tombe_route_chambray.eml"]
        files.append(DATA_DIR / "samples" / "06_formulaire_bac_tri_vole.json")
        code = main(["classify", "--model", str(baseline_model_dir), *map(str, files)])
        lines = _lines(capsys.readouterr().out)
        assert code == exit_codes.OK
        assert [line["path"] for line in lines] == [str(path) for path in files]
        for line in lines:
            assert set(line) == CONTRACT_KEYS
            assert isinstance(line["request_id"], str)
            assert line["department"] in taxonomy.departments  # type: ignore[attr-defined]
            assert line["urgency"] in ("critique", "haute", "normale", "basse")
            confidence = line["confidence"]
            assert isinstance(confidence, dict) and set(confidence) == {"department", "urgency"}
            assert all(0.0 <= value <= 1.0 for value in confidence.values())
            assert isinstance(line["needs_review"], bool)
            assert isinstance(line["destination"], str)

    def test_explain_adds_evidence_quoted_from_the_request(
        self, baseline_model_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--explain adds `evidence`: per head, words of the request with their share."""
        path = DATA_DIR / "samples" / "01_arbre_tombe_route_chambray.eml"
        main(["classify", "--explain", "--model", str(baseline_model_dir), str(path)])
        [line] = _lines(capsys.readouterr().out)
        assert set(line) == CONTRACT_KEYS | {"evidence"}
        evidence = line["evidence"]
        assert isinstance(evidence, dict) and set(evidence) == {"department", "urgency"}
        request = parse_raw(read_raw(path))
        text = f"{request.subject}\n{request.classifier_text}"
        assert evidence["department"]
        for items in evidence.values():
            for item in items:
                assert item["text"] in text
                assert 0 < item["weight"] <= 1

    def test_fallen_tree_is_critique(
        self, baseline_model_dir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The fallen-tree sample comes out critique (model or safety rule) and voirie."""
        path = DATA_DIR / "samples" / "01_arbre_tombe_route_chambray.eml"
        main(["classify", "--model", str(baseline_model_dir), str(path)])
        [line] = _lines(capsys.readouterr().out)
        assert (line["department"], line["urgency"]) == ("voirie", "critique")

    def test_folder_walked_and_errors_reported(
        self, baseline_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A folder is walked recursively, labels.jsonl ignored, a bad file reported, exit 1."""
        folder = tmp_path / "in"
        (folder / "sub").mkdir(parents=True)
        shutil.copy(DATA_DIR / "samples" / "04_remerciements_accueil.eml", folder / "a.eml")
        shutil.copy(FIXTURES / "forms" / "valid_full.json", folder / "sub" / "b.json")
        shutil.copy(FIXTURES / "forms" / "missing_message.json", folder / "sub" / "c.json")
        (folder / "labels.jsonl").write_text('{"file": "a.eml"}\n', encoding="utf-8")
        code = main(["classify", "--model", str(baseline_model_dir), str(folder)])
        lines = _lines(capsys.readouterr().out)
        assert code == exit_codes.SOME_INPUTS_FAILED
        assert [Path(str(line["path"])).name for line in lines] == ["a.eml", "b.json", "c.json"]
        assert set(lines[2]) == {"path", "error"}
        assert "message" in str(lines[2]["error"])
        assert all(set(line) == CONTRACT_KEYS for line in lines[:2])

    def test_missing_file_reported(
        self, baseline_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A path that does not exist gives an error line, not a crash."""
        code = main(["classify", "--model", str(baseline_model_dir), str(tmp_path / "absent.eml")])
        [line] = _lines(capsys.readouterr().out)
        assert code == exit_codes.SOME_INPUTS_FAILED
        assert set(line) == {"path", "error"}

    def test_missing_model_exit_code(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No model directory: exit code MODEL_ERROR with a message saying how to get one."""
        path = DATA_DIR / "samples" / "04_remerciements_accueil.eml"
        code = main(["classify", "--model", str(tmp_path / "nope"), str(path)])
        assert code == exit_codes.MODEL_ERROR
        assert "triage train" in capsys.readouterr().err


class TestDemo:
    """`triage demo` runs the samples end to end and prints a table."""

    def test_demo_table_and_deliveries(
        self,
        baseline_model_dir: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Every sample appears in the table and lands in a maildir; a rerun adds no copy."""
        monkeypatch.setenv("TRIAGE_MODEL_DIR", str(baseline_model_dir))
        out = tmp_path / "demo"
        assert main(["demo", "--out", str(out)]) == exit_codes.OK
        table = capsys.readouterr().out
        samples = sorted((DATA_DIR / "samples").iterdir())
        for sample in samples:
            assert sample.name in table
        for column in ("department", "urgency", "confidence", "destination"):
            assert column in table
        delivered = sorted(out.glob("maildir/*/new/*"))
        assert len({path.name.split(".")[1] for path in delivered}) == len(samples)
        assert main(["demo", "--out", str(out)]) == exit_codes.OK
        assert sorted(out.glob("maildir/*/new/*")) == delivered


class TestTrainEvaluate:
    """`triage train` writes a model directory that `triage evaluate` scores."""

    def test_train_then_evaluate(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Training on labelled folders writes the model files; evaluation prints macro-F1."""
        out = tmp_path / "model"
        folders = [str(DATA_DIR / "validation" / name) for name in ("voirie", "social", "finances")]
        assert main(["train", "--data", *folders, "--out", str(out)]) == exit_codes.OK
        for name in ("labels.json", "calibration.json", "metadata.json", "MODEL_CARD.md"):
            assert (out / name).is_file(), name
        capsys.readouterr()
        report = tmp_path / "scores.json"
        code = main(["evaluate", "--model", str(out), "--json", str(report), *folders])
        printed = capsys.readouterr().out
        assert code == exit_codes.OK
        assert "department: accuracy" in printed and "macro-F1" in printed
        assert "critique recall" in printed
        labelled = sum(
            len((Path(folder) / "labels.jsonl").read_text(encoding="utf-8").splitlines())
            for folder in folders
        )
        assert json.loads(report.read_text(encoding="utf-8"))["examples"] == labelled

    def test_bad_hyperparameter_named(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad hyper-parameter stops with a configuration error naming it."""
        folder = str(DATA_DIR / "validation" / "voirie")
        args = ["train", "--data", folder, "--out", str(tmp_path / "m"), "--regularisation", "0"]
        assert main(args) == exit_codes.CONFIG_ERROR
        assert "--regularisation" in capsys.readouterr().err


class TestFinetuneCommand:
    """`triage train --base DIR` fine-tunes CamemBERT from a local checkpoint directory."""

    def test_finetune_then_report(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A tiny local checkpoint is fine-tuned, loads, and gets a Markdown/JSON/PNG report."""
        from transformers import CamembertModel

        from classifiers.dataset import load_labelled
        from classifiers.taxonomy import load_taxonomy
        from classifiers.text import classifier_input
        from classifiers.tokenizer import tiny_config, train_tokenizer
        from tests.conftest import CONFIG_DIR

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        folders = [DATA_DIR / "validation" / name for name in ("voirie", "finances", "social")]
        taxonomy = load_taxonomy(CONFIG_DIR / "taxonomy.yaml")
        texts = [classifier_input(e.request) for e in load_labelled(folders, taxonomy)]
        tokenizer = train_tokenizer(texts, vocab_size=400)
        base = tmp_path / "base"
        CamembertModel(tiny_config(tokenizer)).save_pretrained(base)
        tokenizer.save_pretrained(base)
        out = tmp_path / "camembert"
        args = ["train", "--base", str(base), "--data", *map(str, folders), "--out", str(out)]
        args += ["--set", "epochs=1", "--set", "batch_size=8", "--quiet"]
        assert main(args) == exit_codes.OK
        metadata = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
        assert metadata["kind"] == "camembert"
        assert not any(p.suffix in {".bin", ".pt", ".pkl"} for p in out.iterdir())
        capsys.readouterr()
        report = tmp_path / "report"
        code = main(["evaluate", "--model", str(out), "--report", str(report), *map(str, folders)])
        assert code == exit_codes.OK
        assert {p.name for p in report.iterdir()} >= {"report.md", "report.json"}

    def test_bad_override_named(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A --set of an unknown training key stops with a configuration error naming it."""
        folder = str(DATA_DIR / "validation" / "voirie")
        args = ["train", "--base", str(tmp_path), "--data", folder, "--out", str(tmp_path / "m")]
        assert main([*args, "--set", "epochz=3"]) == exit_codes.CONFIG_ERROR
        assert "epochz" in capsys.readouterr().err
