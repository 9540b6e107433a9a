"""Tests of worker/delivery/message.py: the triaged and dead-letter messages deliverers write."""

from __future__ import annotations

import email
import json
from email.message import EmailMessage
from email.policy import default

import pytest

from classifiers import Taxonomy
from classifiers.base import Prediction
from tests.conftest import FIXTURES, make_prediction, make_request
from worker.delivery.message import render_dead_letter, render_triaged
from worker.parsing import parse_eform
from worker.request import Channel, RawRequest, Request
from worker.routing import RoutingConfig, RoutingDecision, route

FORM = FIXTURES / "forms" / "valid_full.json"

ORIGINAL = (
    b"From: Jeanne <jeanne@x.example>\n"
    b"To: mairie@commune.example\n"
    b"Subject: Lampadaire\n"
    b"Message-ID: <abc@x.example>\n"
    b"\n"
    b"Bonjour,\n"
    b"\n"
    b"le lampadaire est \xc3\xa9teint.\n"
    b"X-Triage-Department: not a header, part of the body\n"
)
BODY = ORIGINAL[ORIGINAL.index(b"\n\n") :]


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def _inputs(
    routing_config: RoutingConfig,
    taxonomy: Taxonomy,
    request_id: str = "em-test",
    department: str = "voirie",
) -> tuple[Prediction, RoutingDecision]:
    prediction = make_prediction(
        department, "haute", confidence=0.876, request_id=request_id, taxonomy=taxonomy
    )
    return prediction, route(prediction, routing_config)


class TestRenderTriagedEmail:
    """`render_triaged` on an email: triage headers on top of the original bytes."""

    def test_triage_headers_carry_the_decision(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """The department, urgency, confidence, model and request id are in their headers."""
        prediction, decision = _inputs(routing_config, taxonomy, request_id="em-42")
        raw = RawRequest(payload=ORIGINAL, channel=Channel.EMAIL)
        message = _parse(
            render_triaged(raw, make_request(request_id="em-42"), prediction, decision)
        )
        assert message["X-Triage-Department"] == "voirie"
        assert message["X-Triage-Urgency"] == "haute"
        assert message["X-Triage-Confidence"] == "0.876"
        assert message["X-Triage-Model"] == "test-model"
        assert message["X-Triage-Request-Id"] == "em-42"
        assert message["X-Triage-Review"] == "no"
        assert message["Subject"] == "Lampadaire"

    def test_original_follows_unchanged(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """Below the added headers, the original header block and body are byte for byte intact."""
        prediction, decision = _inputs(routing_config, taxonomy)
        raw = RawRequest(payload=ORIGINAL, channel=Channel.EMAIL)
        rendered = render_triaged(raw, make_request(), prediction, decision)
        assert rendered.endswith(ORIGINAL)
        added = rendered[: -len(ORIGINAL)]
        assert all(line.startswith(b"X-Triage-") for line in added.splitlines())

    def test_crlf_original_gets_crlf_headers(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """An original with CRLF line ends gets added headers with CRLF too, no bare LF."""
        prediction, decision = _inputs(routing_config, taxonomy)
        original = ORIGINAL.replace(b"\n", b"\r\n")
        raw = RawRequest(payload=original, channel=Channel.EMAIL)
        rendered = render_triaged(raw, make_request(), prediction, decision)
        assert rendered.endswith(original)
        assert b"\n" not in rendered.replace(b"\r\n", b"")
        assert _parse(rendered)["X-Triage-Department"] == "voirie"

    @pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
    def test_forged_triage_headers_are_removed(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy, newline: bytes
    ) -> None:
        """X-Triage-* headers sent by the sender, folded ones included, are dropped; others kept."""
        prediction, decision = _inputs(routing_config, taxonomy)
        head = [
            b"From: jeanne@x.example",
            b"X-Triage-Department: finances",
            b"x-triage-urgency : critique",
            b"Subject: Lampadaire",
            b"X-Triage-Reason: forged",
            b"  and folded onto a second line",
            b"\tand a third",
            b"Received: from a",
            b"  by b",
        ]
        body = newline + b"Bonjour." + newline
        original = newline.join(head) + newline + body
        raw = RawRequest(payload=original, channel=Channel.EMAIL)
        rendered = render_triaged(raw, make_request(), prediction, decision)
        message = _parse(rendered)
        assert message.get_all("X-Triage-Department") == ["voirie"]
        assert message.get_all("X-Triage-Urgency") == ["haute"]
        assert "forged" not in str(message.get_all("X-Triage-Reason"))
        assert b"folded onto" not in rendered
        assert b"and a third" not in rendered
        assert message["Subject"] == "Lampadaire"
        assert message["Received"].split() == ["from", "a", "by", "b"]
        assert rendered.endswith(
            newline.join([b"From: jeanne@x.example", b"Subject: Lampadaire", *head[7:]])
            + newline
            + body
        )

    @pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
    def test_forged_last_header_leaves_body_unchanged(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy, newline: bytes
    ) -> None:
        """Removing a forged (folded) X-Triage header that ends the header block keeps the body."""
        prediction, decision = _inputs(routing_config, taxonomy)
        body = b"Bonjour." + newline + b"Le lampadaire." + newline
        original = newline.join(
            [
                b"From: jeanne@x.example",
                b"Subject: Lampadaire",
                b"X-Triage-Department: finances",
                b"  folded",
                b"",
                body,
            ]
        )
        raw = RawRequest(payload=original, channel=Channel.EMAIL)
        rendered = render_triaged(raw, make_request(), prediction, decision)
        assert rendered.endswith(b"Subject: Lampadaire" + newline + newline + body)
        assert _parse(rendered).get_content() == _parse(original).get_content()


class TestRenderTriagedForm:
    """`render_triaged` on an e-form: a readable email with the JSON attached."""

    @pytest.fixture
    def form(self) -> tuple[RawRequest, Request]:
        payload = FORM.read_bytes()
        return RawRequest(payload=payload, channel=Channel.FORM), parse_eform(payload)

    def test_form_becomes_an_email_with_triage_headers(
        self,
        form: tuple[RawRequest, Request],
        routing_config: RoutingConfig,
        taxonomy: Taxonomy,
    ) -> None:
        """The rendered form parses as an email carrying the triage headers and a subject."""
        raw, request = form
        prediction, decision = _inputs(routing_config, taxonomy, request.id, "etat_civil")
        message = _parse(render_triaged(raw, request, prediction, decision))
        assert message["X-Triage-Department"] == "etat_civil"
        assert message["X-Triage-Urgency"] == "haute"
        assert message["X-Triage-Confidence"] == "0.876"
        assert message["X-Triage-Model"] == "test-model"
        assert message["X-Triage-Request-Id"] == request.id
        assert message["Subject"] == (
            "[Formulaire demande-acte] Copie intégrale d'acte de naissance"
        )
        assert message["From"].addresses[0].addr_spec == "helene.garnier@courriel.example"
        assert message["From"].addresses[0].display_name == "Hélène Garnier"

    def test_body_is_french_text_with_the_citizen_message(
        self,
        form: tuple[RawRequest, Request],
        routing_config: RoutingConfig,
        taxonomy: Taxonomy,
    ) -> None:
        """The text body holds the citizen's message and the form's fields in French."""
        raw, request = form
        prediction, decision = _inputs(routing_config, taxonomy, request.id, "etat_civil")
        message = _parse(render_triaged(raw, request, prediction, decision))
        body = message.get_body(("plain",))
        assert body is not None
        text = body.get_content().replace("\r\n", "\n")
        citizen = json.loads(FORM.read_bytes())["message"]
        assert citizen in text
        assert "Champs du formulaire" in text
        assert "- type_acte : naissance" in text
        assert "Téléphone : 06 48 21 73 05" in text
        assert "piece_identite.pdf" in text

    def test_original_json_is_attached_byte_identical(
        self,
        form: tuple[RawRequest, Request],
        routing_config: RoutingConfig,
        taxonomy: Taxonomy,
    ) -> None:
        """The original JSON is attached as application/json with exactly its bytes."""
        raw, request = form
        prediction, decision = _inputs(routing_config, taxonomy, request.id, "etat_civil")
        message = _parse(render_triaged(raw, request, prediction, decision))
        attachments = list(message.iter_attachments())
        assert len(attachments) == 1
        assert attachments[0].get_content_type() == "application/json"
        assert attachments[0].get_filename() == "formulaire.json"
        assert attachments[0].get_payload(decode=True) == raw.payload

    def test_subject_cannot_inject_a_header(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """A CRLF and a Bcc line in the form's subject stay inside a one-line Subject."""
        document = json.loads(FORM.read_bytes())
        document["subject"] = "Acte\r\nBcc: victim@x.example"
        document["submitter"]["name"] = "Hélène\r\nCc: other@x.example"
        payload = json.dumps(document).encode()
        request = parse_eform(payload)
        raw = RawRequest(payload=payload, channel=Channel.FORM)
        prediction, decision = _inputs(routing_config, taxonomy, request.id, "etat_civil")
        rendered = render_triaged(raw, request, prediction, decision)
        message = _parse(rendered)
        assert message["Bcc"] is None
        assert message["Cc"] is None
        subject = message["Subject"]
        assert "\n" not in subject
        assert "\r" not in subject
        assert subject == "[Formulaire demande-acte] Acte Bcc: victim@x.example"
        assert not any(line.lower().startswith(b"bcc:") for line in rendered.splitlines())


class TestRenderDeadLetter:
    """`render_dead_letter`: the reason in a header, the original attached as received."""

    @pytest.mark.parametrize(
        ("channel", "filename"), [(Channel.EMAIL, "original.eml"), (Channel.FORM, "original.json")]
    )
    def test_dead_letter_carries_reason_and_original(self, channel: Channel, filename: str) -> None:
        """The reason is in X-Triage-Error and the payload is attached byte for byte."""
        payload = ORIGINAL if channel is Channel.EMAIL else FORM.read_bytes()
        raw = RawRequest(payload=payload, channel=channel)
        message = _parse(render_dead_letter(raw, "em-9", "no text to classify", "ParseError"))
        assert message["X-Triage-Error"] == "no text to classify"
        assert message["X-Triage-Error-Class"] == "ParseError"
        assert message["X-Triage-Request-Id"] == "em-9"
        body = message.get_body(("plain",))
        assert body is not None
        assert "Motif : no text to classify" in body.get_content()
        attachments = list(message.iter_attachments())
        assert len(attachments) == 1
        assert attachments[0].get_filename() == filename
        assert attachments[0].get_payload(decode=True) == payload

    def test_reason_is_folded_to_one_line(self) -> None:
        """A reason with line breaks cannot add a header to the dead letter."""
        raw = RawRequest(payload=b"\x00garbage", channel=Channel.EMAIL)
        rendered = render_dead_letter(raw, "em-9", "bad\r\nBcc: victim@x.example", "ParseError")
        message = _parse(rendered)
        assert message["Bcc"] is None
        assert message["X-Triage-Error"] == "bad Bcc: victim@x.example"
