"""Tests of worker/parsing/eform_parser.py against the e-form fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from worker.errors import ParseError
from worker.parsing import ParseLimits, parse_eform
from worker.request import Channel

FORMS = FIXTURES / "forms"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FORMS / "expected.json").read_text("utf-8"))
OK_CASES = sorted(name for name, case in EXPECTED.items() if case["expect"] == "ok")
ERROR_CASES = sorted(name for name, case in EXPECTED.items() if case["expect"] == "error")


def _read(name: str) -> bytes:
    return (FORMS / name).read_bytes()


class TestFixtureForms:
    """Every fixture form is accepted or refused as its manifest says."""

    def test_manifest_covers_every_fixture(self) -> None:
        """Each fixture form has an expectation."""
        names = {path.name for path in FORMS.glob("*.json")} - {"expected.json"}
        assert names == set(EXPECTED)

    @pytest.mark.parametrize("name", OK_CASES)
    def test_valid_forms_parse(self, name: str) -> None:
        """A valid form becomes a request whose classifier text is the citizen's message."""
        document = json.loads(_read(name))
        request = parse_eform(_read(name))
        assert request.channel is Channel.FORM
        assert request.classifier_text == document["message"].strip()
        assert request.extra["form_id"] == document["form_id"]

    @pytest.mark.parametrize("name", ERROR_CASES)
    def test_invalid_forms_name_the_field(self, name: str) -> None:
        """An invalid form raises ParseError naming the offending field, when there is one."""
        with pytest.raises(ParseError) as caught:
            parse_eform(_read(name))
        assert caught.value.field == EXPECTED[name]["field"]
        assert caught.value.reason


class TestFormContent:
    """What a parsed form carries."""

    def test_unknown_keys_kept(self) -> None:
        """Unknown top-level keys are kept in `extra`, not fatal."""
        request = parse_eform(_read("valid_extra_keys.json"))
        assert request.extra["canal"] == "site"
        assert request.extra["consentement"] is True

    def test_submitter_and_fields(self) -> None:
        """Submitter, fields and attachments are carried over; fields reach the full text."""
        document = json.loads(_read("valid_full.json"))
        request = parse_eform(_read("valid_full.json"))
        assert request.sender.address == document["submitter"]["email"]
        assert request.sender.name == document["submitter"]["name"]
        assert request.form_fields == document["fields"]
        assert len(request.attachments) == len(document["attachments"])
        for value in document["fields"].values():
            assert value in request.full_text

    def test_wrong_category_is_not_the_classifier_text(self) -> None:
        """The citizen-chosen category stays a field; the classifier reads the message only."""
        request = parse_eform(_read("valid_wrong_category.json"))
        assert request.form_fields["categorie"] not in request.classifier_text

    def test_same_bytes_same_id(self) -> None:
        """A form's id is a digest of its bytes: stable and content-dependent."""
        data = _read("valid_minimal.json")
        assert parse_eform(data).id == parse_eform(data).id
        assert parse_eform(data).id != parse_eform(data.replace(b"}", b', "x": "y"}', 1)).id

    def test_oversized_form_refused(self) -> None:
        """A form past max_form_bytes is refused with the limit in the reason."""
        with pytest.raises(ParseError, match="exceeds the limit"):
            parse_eform(_read("valid_full.json"), ParseLimits(max_form_bytes=100))

    def test_naive_timestamp_gets_utc(self) -> None:
        """A submitted_at without an offset is read as UTC rather than refused."""
        data = json.dumps(
            {"form_id": "contact", "submitted_at": "2025-10-02T08:14:00", "message": "Bonjour"}
        ).encode()
        assert parse_eform(data).received_at.utcoffset() is not None


def test_fixture_folder_exists() -> None:
    """The fixtures this module reads are where it expects them."""
    assert Path(FORMS).is_dir() and OK_CASES and ERROR_CASES
