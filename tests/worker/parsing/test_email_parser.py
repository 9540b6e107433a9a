"""Tests of worker/parsing/email_parser.py against the fixture mails and their expectations."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from worker.errors import ParseError
from worker.parsing import ParseLimits, parse_email
from worker.parsing.email_parser import decode_header_value
from worker.request import Channel

EMAILS = FIXTURES / "email"
EXPECTED: dict[str, dict[str, Any]] = json.loads((EMAILS / "expected.json").read_text("utf-8"))
OK_CASES = sorted(name for name, case in EXPECTED.items() if case["expect"] == "ok")
ERROR_CASES = sorted(name for name, case in EXPECTED.items() if case["expect"] == "error")


def _parse(name: str) -> Any:
    return parse_email((EMAILS / name).read_bytes())


class TestFixtureMails:
    """Every fixture mail parses as its manifest says."""

    def test_manifest_covers_every_fixture(self) -> None:
        """Each .eml fixture has an expectation, so no case goes untested."""
        assert {path.name for path in EMAILS.glob("*.eml")} == set(EXPECTED)

    @pytest.mark.parametrize("name", OK_CASES)
    def test_headers_decoded(self, name: str) -> None:
        """Subject and sender are decoded from encoded words and charsets as expected."""
        case, request = EXPECTED[name], _parse(name)
        assert request.channel is Channel.EMAIL
        if case["subject"] is not None:
            assert request.subject == case["subject"]
        assert request.sender.address == case["sender_address"]
        if case["sender_name"] is not None:
            assert request.sender.name == case["sender_name"]

    @pytest.mark.parametrize("name", OK_CASES)
    def test_classifier_text(self, name: str) -> None:
        """The classifier reads the new text (or the forward it points to), not history."""
        case, request = EXPECTED[name], _parse(name)
        for phrase in case["classifier_text_contains"]:
            assert phrase in request.classifier_text, phrase
        for phrase in case["classifier_text_excludes"]:
            assert phrase not in request.classifier_text, phrase

    @pytest.mark.parametrize("name", OK_CASES)
    def test_full_text(self, name: str) -> None:
        """The full text keeps quoted and forwarded history."""
        case, request = EXPECTED[name], _parse(name)
        for phrase in case["full_text_contains"]:
            assert phrase in request.full_text, phrase

    @pytest.mark.parametrize("name", OK_CASES)
    def test_attachments_metadata(self, name: str) -> None:
        """Attachments are listed by decoded name and type, with a size, never as text."""
        case, request = EXPECTED[name], _parse(name)
        found = [
            {"filename": a.filename, "content_type": a.content_type} for a in request.attachments
        ]
        assert found == case["attachments"]
        assert all(a.size >= 0 for a in request.attachments)

    @pytest.mark.parametrize("name", ERROR_CASES)
    def test_unusable_input_raises_parse_error(self, name: str) -> None:
        """Empty, garbage and header-truncated input raise ParseError with a reason."""
        with pytest.raises(ParseError) as caught:
            _parse(name)
        assert caught.value.reason


class TestCharsets:
    """Declared, missing and wrong charsets all end in correct text."""

    @pytest.mark.parametrize(
        ("name", "warned"),
        [
            ("latin1_declared.eml", False),
            ("cp1252_declared.eml", False),
            ("missing_charset_latin1.eml", False),
            ("wrong_charset_utf8_declared_cp1252_body.eml", True),
            ("wrong_charset_ascii_declared_utf8_body.eml", True),
        ],
    )
    def test_recovery_is_recorded(self, name: str, warned: bool) -> None:
        """A charset that did not fit the bytes leaves a warning; a correct one leaves none."""
        request = _parse(name)
        assert any("charset" in warning for warning in request.warnings) is warned
        assert "\ufffd" not in request.full_text

    def test_cp1252_specials(self) -> None:
        """windows-1252 bytes for €, ’ and œ decode to those characters."""
        text = _parse("cp1252_declared.eml").full_text
        assert "€" in text or "’" in text or "œ" in text
        assert "\x80" not in text and "\x92" not in text and "\x9c" not in text

    def test_unknown_encoded_word_charset(self) -> None:
        """An encoded word in an unknown charset still yields its text."""
        assert (
            decode_header_value("=?x-unknown?Q?Demande_de_rendez-vous?=")
            == "Demande de rendez-vous"
        )

    def test_latin1_encoded_word(self) -> None:
        """An ISO-8859-1 Q-encoded word decodes to accented text."""
        assert decode_header_value("=?ISO-8859-1?Q?Ren=E9e_B=E9gu=E9?=") == "Renée Bégué"


class TestRequestId:
    """Request ids are stable and opaque."""

    def test_same_message_id_same_id(self) -> None:
        """Two copies of a mail with the same Message-ID get the same id."""
        data = (EMAILS / "utf8_plain_8bit.eml").read_bytes()
        other = data.replace(b"Bonjour", b"Bonjour encore", 1)
        assert parse_email(data).id == parse_email(other).id

    def test_id_hides_message_id(self) -> None:
        """The id is a digest, not the Message-ID (which may hold an address)."""
        request = _parse("utf8_plain_8bit.eml")
        assert request.id.startswith("em-") and "@" not in request.id

    def test_without_message_id_content_hash(self) -> None:
        """Without a Message-ID the id comes from the content: stable, and different per content."""
        data = (EMAILS / "missing_date_and_message_id.eml").read_bytes()
        assert parse_email(data).id == parse_email(data).id
        assert parse_email(data).id != parse_email(data + b"\nPS").id


def _mail(body: str, **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Jeanne Test <jeanne@courriel.example>"
    message["To"] = "contact@mairie.example"
    message["Subject"] = headers.get("subject", "Test")
    message.set_content(body)
    return message.as_bytes()


class TestBounds:
    """The parser bounds the work a single input can cost."""

    def test_oversized_message_refused(self) -> None:
        """A message over max_bytes is refused before parsing."""
        data = _mail("x" * 5000)
        with pytest.raises(ParseError, match="exceeds the limit"):
            parse_email(data, ParseLimits(max_bytes=1000))

    def test_oversized_header_block_refused(self) -> None:
        """A header block over max_header_bytes is refused."""
        data = b"Subject: test\n" + b"X-Filler: " + b"a" * 5000 + b"\n\nbody\n"
        with pytest.raises(ParseError, match="header block"):
            parse_email(data, ParseLimits(max_header_bytes=1000))

    def test_too_many_parts_refused(self) -> None:
        """A mail with more MIME parts than max_parts is refused."""
        message = EmailMessage()
        message["Subject"] = "Beaucoup de pièces"
        message.set_content("Bonjour")
        for index in range(30):
            message.add_attachment(
                b"x", maintype="application", subtype="pdf", filename=f"{index}.pdf"
            )
        with pytest.raises(ParseError, match="MIME parts"):
            parse_email(message.as_bytes(), ParseLimits(max_parts=10))

    def test_long_text_truncated(self) -> None:
        """Readable text beyond max_text_chars is cut, not refused."""
        request = parse_email(_mail("mot " * 10_000), ParseLimits(max_text_chars=500))
        assert len(request.full_text) <= 500

    def test_no_subject_no_text_refused(self) -> None:
        """A mail with neither subject nor readable text is a ParseError."""
        data = b"From: a@b.example\nTo: c@d.example\nMessage-ID: <1@b.example>\n\n\n"
        with pytest.raises(ParseError, match="no readable text"):
            parse_email(data)


class TestLanguage:
    """The language hint distinguishes French from English."""

    def test_french(self) -> None:
        """A French mail is hinted 'fr'."""
        assert _parse("utf8_plain_8bit.eml").language == "fr"

    def test_english(self) -> None:
        """An English mail is hinted 'en'."""
        assert _parse("english.eml").language == "en"


def test_fixture_folder_exists() -> None:
    """The fixtures this module reads are where it expects them."""
    assert Path(EMAILS).is_dir() and OK_CASES and ERROR_CASES
