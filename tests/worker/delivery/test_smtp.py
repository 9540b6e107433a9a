"""Tests of worker/delivery/smtp.py: the forward, its rendering, its errors, on a real server."""

from __future__ import annotations

import base64
import dataclasses
import email
import warnings
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.policy import SMTP, default

import pytest
from pydantic import SecretStr

from classifiers import Taxonomy
from classifiers.base import Evidence
from tests.conftest import FIXTURES, make_prediction
from tests.smtp_server import (
    PasswordCheck,
    RecordingHandler,
    RefusingHandler,
    free_port,
    hanging_up_server,
    silent_server,
    smtp_server,
)
from worker.config import SmtpSettings
from worker.delivery.base import Delivery
from worker.delivery.message import render_dead_letter, render_triaged
from worker.delivery.smtp import AttachMode, SmtpDeliverer, SmtpSender, render_forward
from worker.errors import PermanentError, TransientError
from worker.parsing import parse_eform, parse_email
from worker.request import Channel, RawRequest
from worker.routing import RoutingConfig, route

SERVICE = "voirie@commune.example"
DISPLAY_NAMES = {"voirie": "Voirie", "etat_civil": "État civil"}
ORIGINAL = (
    b"From: Jeanne Martin <jeanne.martin@courriel.example>\r\n"
    b"To: mairie@commune.example\r\n"
    b"Subject: =?UTF-8?Q?Lampadaire_=C3=A9teint?=\r\n"
    b"Message-ID: <lampadaire-1@courriel.example>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Bonjour,\r\n"
    b"\r\n"
    b"le lampadaire du 12 rue des Tilleuls est \xc3\xa9teint depuis lundi.\r\n"
    b".une ligne qui commence par un point\r\n"
)
BODY = ORIGINAL.split(b"\r\n\r\n", 1)[1]
INJECTION = "=?UTF-8?B?" + base64.b64encode(b"x\r\nBcc: victim@x.example").decode() + "?="


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def _attached(message: EmailMessage) -> Message:
    parts = [part for part in message.walk() if part.get_content_type() == "message/rfc822"]
    assert len(parts) == 1
    inner = parts[0].get_payload(0)
    assert isinstance(inner, Message)
    return inner


def _delivery(
    routing_config: RoutingConfig,
    taxonomy: Taxonomy,
    *,
    payload: bytes = ORIGINAL,
    urgency: str = "haute",
    confidence: float = 0.876,
) -> Delivery:
    raw = RawRequest(payload=payload, channel=Channel.EMAIL)
    request = parse_email(payload)
    prediction = make_prediction(
        "voirie", urgency, confidence=confidence, request_id=request.id, taxonomy=taxonomy
    )
    decision = route(prediction, routing_config)
    return Delivery(
        request.id, render_triaged(raw, request, prediction, decision), raw, request, prediction,
        decision,
    )  # fmt: skip


def _forward(delivery: Delivery, to: str = SERVICE, attach: AttachMode = "rfc822") -> EmailMessage:
    return render_forward(
        delivery, to, "triage@mairie.example", DISPLAY_NAMES, attach, destination="voirie"
    )


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def settings(handler: RecordingHandler) -> Iterator[SmtpSettings]:
    with smtp_server(handler) as reachable:
        yield reachable


class TestRenderForward:
    """`render_forward` builds the forward: summary, headers and the request, without a socket."""

    def test_subject_names_the_urgency_and_the_original_subject(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """The subject is "[Triage · <urgency>] <decoded original subject>"."""
        message = _forward(_delivery(routing_config, taxonomy))
        assert message["Subject"] == "[Triage · Haute] Lampadaire éteint"

    def test_long_subject_is_cut_to_150_characters(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """An original subject of 400 characters keeps its first 150 after the prefix."""
        delivery = _delivery(routing_config, taxonomy)
        assert delivery.request is not None
        request = delivery.request.model_copy(update={"subject": "a" * 400})
        message = _forward(Delivery(delivery.request_id, b"", delivery.raw, request,
                                    delivery.prediction, delivery.decision))  # fmt: skip
        assert message["Subject"] == "[Triage · Haute] " + "a" * 150

    def test_message_id_is_per_request_and_destination(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """The Message-ID is `<request id>.<destination>@mairie-triage.invalid`."""
        delivery = _delivery(routing_config, taxonomy)
        message = _forward(delivery)
        assert message["Message-ID"] == f"<{delivery.request_id}.voirie@mairie-triage.invalid>"

    def test_review_note_appears_when_unsure(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """A request below the review threshold tells the agent the classification is uncertain."""
        message = _forward(_delivery(routing_config, taxonomy, confidence=0.2))
        assert message["X-Triage-Review"] == "yes"
        assert "Le classement est incertain" in _text(message)

    def test_summary_quotes_the_words_that_weighed_most(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """Evidence attached to the prediction is listed per head, in French quotes."""
        delivery = _delivery(routing_config, taxonomy)
        assert delivery.prediction is not None
        evidence = (
            Evidence(head="department", text="lampadaire", weight=0.7),
            Evidence(head="department", text="éteint", weight=0.3),
            Evidence(head="urgency", text="depuis trois jours", weight=1.0),
        )
        prediction = delivery.prediction.model_copy(update={"evidence": evidence})
        text = _text(_forward(dataclasses.replace(delivery, prediction=prediction)))
        assert "Mots déterminants (service) : « lampadaire », « éteint »" in text
        assert "Mots déterminants (urgence) : « depuis trois jours »" in text
        assert "Mots déterminants" not in _text(_forward(delivery))

    @pytest.mark.parametrize(
        "subject",
        [
            INJECTION.encode(),
            b"=?UTF-8?B?" + base64.b64encode(INJECTION.encode()) + b"?=",  # decodes to an EW
        ],
        ids=["encoded-crlf", "double-encoded-crlf"],
    )
    def test_encoded_line_break_in_subject_cannot_add_a_header(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy, subject: bytes
    ) -> None:
        """A subject whose encoded words decode to CRLF + Bcc gives one Subject line and no Bcc."""
        payload = ORIGINAL.replace(b"=?UTF-8?Q?Lampadaire_=C3=A9teint?=", subject)
        rendered = _forward(_delivery(routing_config, taxonomy, payload=payload)).as_bytes()
        head = rendered.split(b"\r\n\r\n", 1)[0]
        assert not any(line.lower().startswith(b"bcc") for line in head.split(b"\r\n"))
        message = _parse(rendered)
        assert message["Bcc"] is None
        assert "\n" not in message["Subject"]
        assert "\r" not in message["Subject"]
        assert message["Subject"].startswith("[Triage · Haute] ")

    @pytest.mark.parametrize(
        "to",
        [
            "voirie@commune.example, victim@x.example",
            "Voirie <voirie@commune.example>",
            "voirie@commune.example\r\nBcc: victim@x.example",
            "voirie",
            "",
        ],
    )
    def test_bad_service_address_is_refused(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy, to: str
    ) -> None:
        """A `to` that is not exactly one plain address is a `PermanentError`."""
        with pytest.raises(PermanentError):
            _forward(_delivery(routing_config, taxonomy), to=to)

    def test_form_attaches_its_default_rendering(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """An e-form's forward carries the readable email rendering as message/rfc822."""
        payload = (FIXTURES / "forms" / "valid_full.json").read_bytes()
        raw = RawRequest(payload=payload, channel=Channel.FORM)
        request = parse_eform(payload)
        prediction = make_prediction("etat_civil", "normale", taxonomy=taxonomy)
        decision = route(prediction, routing_config)
        rendered = render_triaged(raw, request, prediction, decision)
        delivery = Delivery(request.id, rendered, raw, request, prediction, decision)
        data = _forward(delivery).as_bytes()
        message = _parse(data)
        inner = _attached(message)
        assert str(inner["Subject"]).startswith("[Formulaire demande-acte]")
        assert "Service : État civil" in _text(message)
        assert rendered in data

    def test_dead_letter_is_forwarded_with_its_reason(self) -> None:
        """Without a prediction the forward says so and attaches the dead letter."""
        raw = RawRequest(payload=b"\x00garbage", channel=Channel.EMAIL)
        dead = render_dead_letter(raw, "em-9", "no text to classify", "ParseError")
        message = _parse(_forward(Delivery("em-9", dead, raw)).as_bytes())
        assert message["Subject"] == "[Triage] Demande non traitée automatiquement"
        assert "traitée à la main" in _text(message)
        assert _attached(message)["X-Triage-Error"] == "no text to classify"


class TestSmtpSender:
    """`SmtpSender.send` talks to the relay and turns its failures into the project's errors."""

    @staticmethod
    def _message() -> EmailMessage:
        message = EmailMessage(policy=SMTP)
        message["From"] = "triage@mairie.example"
        message["To"] = SERVICE
        message["Subject"] = "Essai"
        message.set_content("Bonjour.\n")
        return message

    def test_envelope_uses_the_configured_sender(
        self, settings: SmtpSettings, handler: RecordingHandler
    ) -> None:
        """The server receives one message from `settings.sender` to the given recipient."""
        SmtpSender(settings).send(self._message(), [SERVICE])
        assert len(handler.received) == 1
        assert handler.received[0].mail_from == "triage@mairie.example"
        assert handler.received[0].rcpt_tos == (SERVICE,)

    @pytest.mark.parametrize("stage", ["RCPT", "DATA"])
    def test_451_is_transient_and_a_retry_succeeds(self, stage: str) -> None:
        """A 451 reply raises `TransientError` naming 451; the next attempt is delivered."""
        handler = RefusingHandler("RCPT" if stage == "RCPT" else "DATA",
                                  "451 4.3.0 Try again later", times=1)  # fmt: skip
        with smtp_server(handler) as settings:
            sender = SmtpSender(settings)
            with pytest.raises(TransientError, match="451") as caught:
                sender.send(self._message(), [SERVICE])
            assert "Try again" not in str(caught.value)
            sender.send(self._message(), [SERVICE])
        assert len(handler.received) == 1

    @pytest.mark.parametrize("stage", ["RCPT", "DATA"])
    def test_550_is_permanent_and_does_not_quote_the_server(self, stage: str) -> None:
        """A 550 reply raises `PermanentError` with the code, not the server's text."""
        handler = RefusingHandler("RCPT" if stage == "RCPT" else "DATA",
                                  "550 5.1.1 No such user")  # fmt: skip
        with smtp_server(handler) as settings, pytest.raises(PermanentError, match="550") as caught:
            SmtpSender(settings).send(self._message(), [SERVICE])
        assert "No such user" not in str(caught.value)
        assert handler.received == []

    def test_closed_port_is_transient(self) -> None:
        """Nothing listening on the port raises `TransientError`."""
        settings = SmtpSettings(host="127.0.0.1", port=free_port(), sender="t@mairie.example")
        with pytest.raises(TransientError):
            SmtpSender(settings).send(self._message(), [SERVICE])

    def test_silent_server_times_out_as_transient(self) -> None:
        """A server that never greets raises `TransientError` after the configured timeout."""
        with silent_server() as port:
            settings = SmtpSettings(
                host="127.0.0.1", port=port, sender="t@mairie.example", timeout=0.3
            )
            with pytest.raises(TransientError, match="timed out"):
                SmtpSender(settings).send(self._message(), [SERVICE])

    def test_hang_up_is_transient(self) -> None:
        """A server that closes the connection at once raises `TransientError`."""
        with hanging_up_server() as port:
            settings = SmtpSettings(host="127.0.0.1", port=port, sender="t@mairie.example")
            with pytest.raises(TransientError):
                SmtpSender(settings).send(self._message(), [SERVICE])

    def test_login_with_the_configured_credentials(self) -> None:
        """With a username set, the sender logs in and the message is accepted."""
        handler = RecordingHandler()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # aiosmtpd warns about AUTH without TLS
            server = smtp_server(
                handler, authenticator=PasswordCheck("triage", "s3cret"),
                auth_require_tls=False, auth_required=True,
            )  # fmt: skip
            with server as settings:
                reach = {"host": settings.host, "port": settings.port, "username": "triage"}
                good = SmtpSettings(**reach, password=SecretStr("s3cret"))
                SmtpSender(good).send(self._message(), [SERVICE])
                bad = SmtpSettings(**reach, password=SecretStr("wrong"))
                with pytest.raises(PermanentError, match="535"):
                    SmtpSender(bad).send(self._message(), [SERVICE])
        assert len(handler.received) == 1

    def test_header_injected_past_the_checks_is_never_sent(
        self, settings: SmtpSettings, handler: RecordingHandler
    ) -> None:
        """A message whose serialised header block gains a field is refused before connecting."""
        message = self._message()
        del message["Subject"]
        message["Subject"] = INJECTION  # the email package decodes it back into CRLF + Bcc
        with pytest.raises(PermanentError):
            SmtpSender(settings).send(message, [SERVICE])
        assert handler.received == []

    def test_invalid_recipient_is_refused(
        self, settings: SmtpSettings, handler: RecordingHandler
    ) -> None:
        """A recipient that is not one plain address raises `PermanentError`; nothing is sent."""
        with pytest.raises(PermanentError):
            SmtpSender(settings).send(self._message(), ["a@x.example, b@x.example"])
        assert handler.received == []


class TestSmtpDeliverer:
    """`SmtpDeliverer` forwards a triaged request to a service's address."""

    def test_forward_arrives_with_headers_summary_and_original(
        self,
        settings: SmtpSettings,
        handler: RecordingHandler,
        routing_config: RoutingConfig,
        taxonomy: Taxonomy,
    ) -> None:
        """The service gets the triage headers, the French summary and the original, intact."""
        delivery = _delivery(routing_config, taxonomy)
        deliverer = SmtpDeliverer("voirie", SERVICE, "rfc822", SmtpSender(settings), DISPLAY_NAMES)
        receipt = deliverer.deliver(delivery)
        assert (receipt.destination, receipt.location) == ("voirie", f"smtp:{SERVICE}")
        assert len(handler.received) == 1
        received = handler.received[0]
        assert received.rcpt_tos == (SERVICE,)
        assert "BODY=8BITMIME" in received.mail_options
        message = _parse(received.content)
        assert message["To"] == SERVICE
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["X-Triage-Department"] == "voirie"
        assert message["X-Triage-Urgency"] == "haute"
        assert message["X-Triage-Confidence"] == "0.876"
        assert message["X-Triage-Request-Id"] == delivery.request_id
        assert message["Reply-To"] == "jeanne.martin@courriel.example"
        text = _text(message)
        assert "Service : Voirie" in text
        assert "Urgence : Haute" in text
        assert "Confiance : 88 %" in text
        assert "- department voirie (confidence 0.88 >= 0.45)" in text
        assert "astreinte" not in text
        inner = _attached(message)
        assert inner["Message-ID"] == "<lampadaire-1@courriel.example>"
        assert inner.get_payload(decode=True) == BODY
        assert ORIGINAL in received.content

    def test_forward_read_back_by_the_intake_is_automated(
        self,
        settings: SmtpSettings,
        handler: RecordingHandler,
        routing_config: RoutingConfig,
        taxonomy: Taxonomy,
    ) -> None:
        """A forward that comes back to the mairie's inbox is parsed as machine mail (no loop)."""
        deliverer = SmtpDeliverer("voirie", SERVICE, "rfc822", SmtpSender(settings), DISPLAY_NAMES)
        deliverer.deliver(_delivery(routing_config, taxonomy))
        assert parse_email(handler.received[0].content).automated is not None

    def test_critique_forward_says_the_on_call_inbox_was_alerted(
        self,
        settings: SmtpSettings,
        handler: RecordingHandler,
        routing_config: RoutingConfig,
        taxonomy: Taxonomy,
    ) -> None:
        """A critique request's summary tells the service the on-call inbox has it too."""
        delivery = _delivery(routing_config, taxonomy, urgency="critique")
        SmtpDeliverer("voirie", SERVICE, "rfc822", SmtpSender(settings), DISPLAY_NAMES).deliver(
            delivery
        )
        message = _parse(handler.received[0].content)
        assert message["Subject"] == "[Triage · Critique] Lampadaire éteint"
        assert "la boîte d'astreinte a été alertée" in _text(message)

    def test_inline_forward_quotes_the_text_and_attaches_nothing(
        self,
        settings: SmtpSettings,
        handler: RecordingHandler,
        routing_config: RoutingConfig,
        taxonomy: Taxonomy,
    ) -> None:
        """In inline mode the citizen's text is quoted below the summary, with no attachment."""
        delivery = _delivery(routing_config, taxonomy)
        SmtpDeliverer("voirie", SERVICE, "inline", SmtpSender(settings), DISPLAY_NAMES).deliver(
            delivery
        )
        message = _parse(handler.received[0].content)
        assert not message.is_multipart()
        text = _text(message)
        assert text.index("Service : Voirie") < text.index("--- Demande d'origine ---")
        assert "> le lampadaire du 12 rue des Tilleuls est éteint depuis lundi." in text
        assert "De : Jeanne Martin · jeanne.martin@courriel.example" in text

    def test_refusal_propagates_as_permanent(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """A service address the relay refuses (550) makes `deliver` raise `PermanentError`."""
        handler = RefusingHandler("RCPT", "550 5.1.1 No such user")
        with smtp_server(handler) as settings:
            deliverer = SmtpDeliverer("voirie", SERVICE, "rfc822", SmtpSender(settings), {})
            with pytest.raises(PermanentError, match="550"):
                deliverer.deliver(_delivery(routing_config, taxonomy))

    @pytest.mark.parametrize(
        "to", ["voirie@commune.example, victim@x.example", "Voirie <voirie@commune.example>"]
    )
    def test_bad_to_is_refused_at_construction(self, settings: SmtpSettings, to: str) -> None:
        """A destination whose `to` is not one plain address cannot be built."""
        with pytest.raises(ValueError, match="destination voirie: to"):
            SmtpDeliverer("voirie", to, "rfc822", SmtpSender(settings), DISPLAY_NAMES)

    def test_bad_attach_mode_is_refused(self, settings: SmtpSettings) -> None:
        """An attach mode other than rfc822 or inline cannot be built."""
        with pytest.raises(ValueError, match="attach"):
            SmtpDeliverer("voirie", SERVICE, "pdf", SmtpSender(settings), DISPLAY_NAMES)
