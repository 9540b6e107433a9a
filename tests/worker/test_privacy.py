"""No personal data in any log line or in the decision log, checked on a sample run."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import structlog

from classifiers.baseline import TfidfBaseline
from tests.conftest import DATA_DIR, FIXTURES
from worker.config import load_settings
from worker.logs import REDACTED, configure_logging
from worker.parsing import parse_raw, read_raw
from worker.request import Request
from worker.runtime import build_pipeline, load_configuration


def _personal_strings(request: Request) -> set[str]:
    """What a log must never contain: addresses, names, phones, subjects and text snippets."""
    found = {request.sender.address, request.sender.name, request.sender.phone, request.subject}
    for line in request.full_text.splitlines():
        if len(line.strip()) >= 25:
            found.add(line.strip()[:25])
    return {value for value in found if value and len(value) >= 5}


class TestNoPersonalData:
    """A sample run leaves ids and labels in logs, never what citizens wrote."""

    def test_logs_and_decision_log_hold_no_content(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        baseline_model: TfidfBaseline,
    ) -> None:
        """Process samples, fixture mails and forms at DEBUG; search the outputs for their data."""
        monkeypatch.setenv("TRIAGE_STATE_DIR", str(tmp_path))
        stream = io.StringIO()
        configure_logging("DEBUG", "json", stream)
        configuration = load_configuration(load_settings())
        pipeline = build_pipeline(configuration, classifier=baseline_model)
        paths = sorted((DATA_DIR / "samples").iterdir())
        paths += sorted((FIXTURES / "email").glob("*.eml"))
        paths += sorted((FIXTURES / "forms").glob("valid_*.json"))
        raws = [read_raw(path) for path in paths]
        outcomes = pipeline.process(raws)
        assert len(outcomes) == len(raws)

        personal: set[str] = set()
        for raw in raws:
            try:
                personal |= _personal_strings(parse_raw(raw))
            except Exception:
                continue
        assert len(personal) > 100  # the check below is only meaningful with real data in it
        logs = stream.getvalue()
        decisions = (tmp_path / "decisions.jsonl").read_text(encoding="utf-8")
        assert logs.count("request.classified") >= len(paths) - 5
        leaked = sorted(value for value in personal if value in logs or value in decisions)
        assert leaked == []

    def test_redaction_processor(self) -> None:
        """A log call that passes content under a personal key is redacted before rendering."""
        stream = io.StringIO()
        configure_logging("INFO", "json", stream)
        structlog.get_logger("test").info(
            "careless", subject="Mon voisin M. Martin", email="martin@x.example", request_id="r1"
        )
        line = stream.getvalue()
        assert "Martin" not in line and "martin@x.example" not in line
        assert REDACTED in line and "r1" in line
