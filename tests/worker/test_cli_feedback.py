"""Tests of worker/cli_feedback.py: the `triage feedback` and `triage purge` commands."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from worker import exit_codes
from worker.cli_feedback import COMMANDS, add_parsers
from worker.config import Settings
from worker.errors import ConfigError
from worker.feedback import FeedbackStore
from worker.runtime import Configuration, load_configuration

T0 = datetime(2025, 6, 3, 10, 12, tzinfo=UTC)


@pytest.fixture
def configuration(tmp_path: Path) -> Configuration:
    """The project's configuration with its state, the feedback database included, in tmp_path."""
    return load_configuration(Settings(state_dir=tmp_path / "state"))


@pytest.fixture
def store(configuration: Configuration) -> Iterator[FeedbackStore]:
    """The store the commands open, holding one remembered request `em-1` (voirie, normale)."""
    opened = FeedbackStore(configuration.settings.feedback_path)
    _remember(opened, "em-1")
    yield opened
    opened.close()


def _remember(store: FeedbackStore, request_id: str, at: datetime | None = None) -> None:
    store.remember(
        request_id,
        "Le lampadaire de la rue est éteint.",
        department="voirie",
        urgency="normale",
        model_version="baseline-1",
        channel="email",
        destinations=["voirie"],
        review=False,
        at=at,
    )


def _run(configuration: Configuration, *argv: str) -> int:
    """Parse `argv` as `triage` would with these sub-commands, then run the chosen handler."""
    parser = argparse.ArgumentParser(prog="triage")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return COMMANDS[args.command](configuration, args)


class TestFeedbackAdd:
    """`triage feedback add` records a `cli` correction of a remembered request."""

    def test_records_a_correction(
        self,
        configuration: Configuration,
        store: FeedbackStore,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A valid department and urgency become a `cli` correction with the remembered text."""
        code = _run(
            configuration, "feedback", "add", "em-1", "--department", "espaces_verts",
            "--urgency", "haute",
        )  # fmt: skip
        assert code == exit_codes.OK
        [correction] = store.corrections()
        assert (correction.department, correction.urgency) == ("espaces_verts", "haute")
        assert (correction.source, correction.predicted_department) == ("cli", "voirie")
        assert correction.text == "Le lampadaire de la rue est éteint."
        assert "em-1: voirie -> espaces_verts" in capsys.readouterr().out

    def test_unknown_department_names_the_valid_keys(
        self, configuration: Configuration, store: FeedbackStore
    ) -> None:
        """An unknown department is a configuration error on --department listing the keys."""
        with pytest.raises(ConfigError) as raised:
            _run(configuration, "feedback", "add", "em-1", "--department", "jardinage")
        assert raised.value.key == "--department"
        assert "jardinage" in raised.value.problem
        assert all(key in raised.value.problem for key in configuration.taxonomy.department_keys)
        assert store.corrections() == []

    def test_unknown_urgency_names_the_valid_keys(
        self, configuration: Configuration, store: FeedbackStore
    ) -> None:
        """An unknown urgency is a configuration error on --urgency listing the keys."""
        with pytest.raises(ConfigError) as raised:
            _run(
                configuration, "feedback", "add", "em-1", "--department", "voirie",
                "--urgency", "urgente",
            )  # fmt: skip
        assert raised.value.key == "--urgency"
        assert all(key in raised.value.problem for key in configuration.taxonomy.urgency_keys)
        assert store.corrections() == []

    def test_unknown_request_fails_with_a_message(
        self,
        configuration: Configuration,
        store: FeedbackStore,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A request id that was never remembered exits non-zero and says so on stderr."""
        code = _run(configuration, "feedback", "add", "em-404", "--department", "voirie")
        assert code != exit_codes.OK
        assert "em-404" in capsys.readouterr().err
        assert store.corrections() == []


class TestFeedbackImport:
    """`triage feedback import` records the usable rows of a CSV file and reports the others."""

    def test_good_rows_recorded_bad_rows_reported_by_line(
        self,
        configuration: Configuration,
        store: FeedbackStore,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Valid rows become `csv` corrections; an unknown label or id is skipped with its line."""
        csv_file = tmp_path / "corrections.csv"
        csv_file.write_text(
            "request_id,department,urgency,text\n"
            "em-1,espaces_verts,,\n"
            "em-2,jardinage,haute,Une haie déborde.\n"
            "em-3,social,haute,Une famille sans chauffage.\n"
            "em-404,voirie,haute,\n",
            encoding="utf-8",
        )
        code = _run(configuration, "feedback", "import", str(csv_file))
        captured = capsys.readouterr()
        assert code == exit_codes.OK
        corrections = {c.request_id: c for c in store.corrections()}
        assert set(corrections) == {"em-1", "em-3"}
        assert (corrections["em-1"].urgency, corrections["em-1"].urgency_corrected) == (
            "normale",
            False,
        )
        assert corrections["em-3"].text == "Une famille sans chauffage."
        assert all(c.source == "csv" for c in corrections.values())
        assert "2 corrections recorded, 2 skipped" in captured.out
        skipped = captured.err.splitlines()
        assert len(skipped) == 2
        assert skipped[0].startswith("line 3: em-2:") and "jardinage" in skipped[0]
        assert skipped[1].startswith("line 5: em-404:")

    def test_semicolon_file_with_a_multiline_text(
        self,
        configuration: Configuration,
        store: FeedbackStore,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A ';'-separated export is read, and a row after a two-line text keeps its line number."""
        csv_file = tmp_path / "corrections.csv"
        csv_file.write_text(
            "\ufeffrequest_id;department;urgency;text\n"
            'em-7;voirie;haute;"Nid de poule\nrue des Lilas"\n'
            "em-8;voirie;pressée;Trottoir\n",
            encoding="utf-8",
        )
        code = _run(configuration, "feedback", "import", str(csv_file))
        captured = capsys.readouterr()
        assert code == exit_codes.OK
        assert [c.request_id for c in store.corrections()] == ["em-7"]
        assert captured.err.startswith("line 4: em-8:")

    def test_file_without_a_usable_header_fails(
        self,
        configuration: Configuration,
        store: FeedbackStore,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A file whose first row does not name request_id and department exits non-zero."""
        csv_file = tmp_path / "corrections.csv"
        csv_file.write_text("em-1,espaces_verts\n", encoding="utf-8")
        code = _run(configuration, "feedback", "import", str(csv_file))
        assert code != exit_codes.OK
        assert "request_id" in capsys.readouterr().err
        assert store.corrections() == []

    def test_missing_file_fails(
        self, configuration: Configuration, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file that cannot be read exits non-zero naming it."""
        code = _run(configuration, "feedback", "import", str(tmp_path / "absent.csv"))
        assert code != exit_codes.OK
        assert "absent.csv" in capsys.readouterr().err


class TestFeedbackList:
    """`triage feedback list` prints one line per correction, without the text."""

    def test_lists_corrections_since_a_date(
        self,
        configuration: Configuration,
        store: FeedbackStore,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Each correction made on or after --since is a row with its labels and source."""
        store.correct("em-1", department="espaces_verts", urgency="haute", source="review", at=T0)
        store.correct(
            "em-0", department="social", urgency="basse", source="csv",
            text="Ancienne demande.", at=T0 - timedelta(days=10),
        )  # fmt: skip
        capsys.readouterr()  # what setting up printed (unconfigured structlog writes to stdout)
        code = _run(configuration, "feedback", "list", "--since", "2025-06-01")
        lines = capsys.readouterr().out.splitlines()
        assert code == exit_codes.OK
        assert len(lines) == 2
        assert lines[0].split()[:3] == ["time", "(UTC)", "request"]
        assert lines[1].split() == [
            "2025-06-03", "10:12", "em-1", "voirie", "->", "espaces_verts",
            "normale", "->", "haute", "review",
        ]  # fmt: skip
        assert "lampadaire" not in "\n".join(lines)

    def test_bad_since_is_a_usage_error(
        self, configuration: Configuration, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A --since that is not a date stops argument parsing with a message naming it."""
        with pytest.raises(SystemExit) as raised:
            _run(configuration, "feedback", "list", "--since", "yesterday")
        assert raised.value.code == exit_codes.USAGE
        assert "--since" in capsys.readouterr().err


class TestPurge:
    """`triage purge` deletes stored texts older than the retention and says how many."""

    def test_default_retention_removes_only_old_rows(
        self,
        configuration: Configuration,
        store: FeedbackStore,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """With the default 12m, rows 400 days old go and rows 10 days old stay."""
        now = datetime.now(UTC)
        _remember(store, "em-old", at=now - timedelta(days=400))
        _remember(store, "em-recent", at=now - timedelta(days=10))
        store.correct("em-old", department="social", source="cli", at=now - timedelta(days=400))
        store.correct("em-recent", department="social", source="cli", at=now - timedelta(days=10))
        code = _run(configuration, "purge")
        assert code == exit_codes.OK
        assert "removed 1 remembered requests and 1 corrections" in capsys.readouterr().out
        assert store.remembered("em-old") is None
        assert store.remembered("em-recent") is not None
        assert store.remembered("em-1") is not None
        assert [c.request_id for c in store.corrections()] == ["em-recent"]

    def test_older_than_overrides_the_retention(
        self,
        configuration: Configuration,
        store: FeedbackStore,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """--older-than 5d also removes rows 10 days old."""
        _remember(store, "em-recent", at=datetime.now(UTC) - timedelta(days=10))
        code = _run(configuration, "purge", "--older-than", "5d")
        assert code == exit_codes.OK
        assert "removed 1 remembered requests" in capsys.readouterr().out
        assert store.remembered("em-recent") is None

    def test_bad_age_names_the_option(
        self,
        configuration: Configuration,
        store: FeedbackStore,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """An age that is not a number and a unit stops with a message naming --older-than."""
        with pytest.raises(SystemExit) as raised:
            _run(configuration, "purge", "--older-than", "douze mois")
        assert raised.value.code == exit_codes.USAGE
        assert "--older-than" in capsys.readouterr().err
        assert store.counts()["requests"] == 1
