"""Tests of worker/config.py: settings from defaults, a YAML file and the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.cli import main
from worker.config import ENV_PREFIX, load_settings, read_yaml
from worker.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TRIAGE_* variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def _settings_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class TestLoadSettings:
    """`load_settings` merges defaults, the settings file and the environment, in that order."""

    def test_defaults_without_a_file(self) -> None:
        """Without a file or environment every setting has its documented default."""
        settings = load_settings()
        assert settings.batch_size == 32
        assert settings.limits.max_parts == 200
        assert settings.log_level == "INFO"
        assert settings.maildir_path == Path("var") / "maildir"
        assert settings.decision_log_path == Path("var") / "decisions.jsonl"
        assert settings.routing_file.name == "routing.yaml"
        assert settings.routing_file.is_file()

    def test_file_overrides_defaults(self, tmp_path: Path) -> None:
        """Values in the settings file, nested ones included, replace the defaults."""
        path = _settings_file(tmp_path, "batch_size: 8\nlimits:\n  max_parts: 50\n")
        settings = load_settings(path)
        assert settings.batch_size == 8
        assert settings.limits.max_parts == 50
        assert settings.limits.max_text_chars == 200_000

    def test_environment_overrides_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A TRIAGE_* variable wins over the same key in the settings file."""
        path = _settings_file(tmp_path, "batch_size: 8\nlimits:\n  max_parts: 50\n")
        monkeypatch.setenv("TRIAGE_BATCH_SIZE", "16")
        settings = load_settings(path)
        assert settings.batch_size == 16
        assert settings.limits.max_parts == 50

    def test_nested_environment_variable_overrides_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A double underscore reaches a nested key, keeping the file's other nested values."""
        path = _settings_file(tmp_path, "limits:\n  max_parts: 50\n  max_text_chars: 1000\n")
        monkeypatch.setenv("TRIAGE_LIMITS__MAX_PARTS", "7")
        settings = load_settings(path)
        assert settings.limits.max_parts == 7
        assert settings.limits.max_text_chars == 1000

    def test_inference_section_reaches_the_settings(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Threads, dtype, int8 and explanations are settings (file, then environment)."""
        path = _settings_file(tmp_path, "inference:\n  threads: 2\n  quantize: int8\n")
        monkeypatch.setenv("TRIAGE_INFERENCE__EXPLANATIONS", "false")
        settings = load_settings(path)
        assert (settings.inference.threads, settings.inference.quantize) == (2, "int8")
        assert settings.inference.dtype == "auto"
        assert settings.inference.explanations is False

    @pytest.mark.parametrize(
        ("text", "key"),
        [
            ("colour: blue\n", "colour"),
            ("limits:\n  max_pieces: 3\n", "limits.max_pieces"),
            ('batch_size: "many"\n', "batch_size"),
            ("batch_size: 0\n", "batch_size"),
            ("limits:\n  max_parts: -1\n", "limits.max_parts"),
            ("log_level: LOUD\n", "log_level"),
            ("inference:\n  quantize: int4\n", "inference.quantize"),
            ("inference:\n  threads: 0\n", "inference.threads"),
        ],
    )
    def test_invalid_file_value_names_file_and_key(
        self, tmp_path: Path, text: str, key: str
    ) -> None:
        """An unknown key or a value of the wrong type is an error naming the file and the key."""
        path = _settings_file(tmp_path, text)
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        assert caught.value.source == str(path)
        assert caught.value.key == key
        assert f"{path}: {key}:" in str(caught.value)

    def test_invalid_yaml_names_file_and_line(self, tmp_path: Path) -> None:
        """A file that is not YAML is an error naming the file and the line."""
        path = _settings_file(tmp_path, "batch_size: 8\nlimits: [\n")
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        assert str(path) in str(caught.value)
        assert "invalid YAML" in str(caught.value)
        assert caught.value.key.startswith("line ")

    def test_file_holding_a_list_is_refused(self, tmp_path: Path) -> None:
        """A settings file whose top level is a list is an error naming the file."""
        path = _settings_file(tmp_path, "- batch_size\n- 8\n")
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        assert str(path) in str(caught.value)
        assert "expected a mapping, got list" in str(caught.value)

    def test_missing_file_is_refused(self, tmp_path: Path) -> None:
        """A settings file that does not exist is an error naming it."""
        path = tmp_path / "absent.yaml"
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        assert str(path) in str(caught.value)
        assert "file not found" in str(caught.value)

    def test_bad_environment_value_names_the_variable(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An invalid TRIAGE_* value is an error naming the environment variable."""
        monkeypatch.setenv("TRIAGE_BATCH_SIZE", "lots")
        with pytest.raises(ConfigError) as caught:
            load_settings()
        assert caught.value.source == "environment"
        assert "TRIAGE_BATCH_SIZE" in str(caught.value)

    def test_bad_environment_value_is_not_blamed_on_the_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a valid settings file, a bad TRIAGE_* value is still reported as the variable."""
        path = _settings_file(tmp_path, "batch_size: 8\n")
        monkeypatch.setenv("TRIAGE_BATCH_SIZE", "lots")
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        assert caught.value.source == "environment"
        assert "TRIAGE_BATCH_SIZE" in str(caught.value)
        assert str(path) not in str(caught.value)

    def test_invalid_file_value_is_refused_even_when_environment_overrides_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The settings file is validated on its own, so its bad value stops start-up."""
        path = _settings_file(tmp_path, 'batch_size: "many"\n')
        monkeypatch.setenv("TRIAGE_BATCH_SIZE", "16")
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        assert caught.value.source == str(path)
        assert caught.value.key == "batch_size"


class TestReadYaml:
    """`read_yaml` returns a YAML file's top-level mapping."""

    def test_empty_file_is_an_empty_mapping(self, tmp_path: Path) -> None:
        """An empty file reads as an empty mapping."""
        assert read_yaml(_settings_file(tmp_path, "")) == {}

    def test_comment_only_file_is_an_empty_mapping(self, tmp_path: Path) -> None:
        """A file holding only comments reads as an empty mapping."""
        assert read_yaml(_settings_file(tmp_path, "# nothing set yet\n")) == {}

    def test_mapping_is_returned(self, tmp_path: Path) -> None:
        """A mapping file reads as that mapping."""
        assert read_yaml(_settings_file(tmp_path, "batch_size: 8\n")) == {"batch_size": 8}

    def test_non_utf8_file_is_refused(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 text is an error naming the file."""
        path = tmp_path / "latin1.yaml"
        path.write_bytes("log_level: défaut\n".encode("latin-1"))
        with pytest.raises(ConfigError) as caught:
            read_yaml(path)
        assert str(path) in str(caught.value)
        assert "UTF-8" in str(caught.value)


class TestCliConfigError:
    """The command line turns a `ConfigError` into exit code 3 and a message on stderr."""

    @pytest.mark.parametrize(
        ("text", "key"), [('batch_size: "many"\n', "batch_size"), ("colour: blue\n", "colour")]
    )
    def test_bad_settings_file_exits_3(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
    ) -> None:
        """A bad settings file makes `triage` exit 3 naming the file and the key on stderr."""
        path = _settings_file(tmp_path, text)
        code = main(["--config", str(path), "classify", "x.eml"])
        captured = capsys.readouterr()
        assert code == 3
        assert "configuration error" in captured.err
        assert str(path) in captured.err
        assert key in captured.err
        assert captured.out == ""

    def test_missing_settings_file_exits_3(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A settings file that does not exist makes `triage` exit 3 naming it."""
        path = tmp_path / "absent.yaml"
        assert main(["--config", str(path), "classify", "x.eml"]) == 3
        assert str(path) in capsys.readouterr().err
