"""Tests of worker/acknowledgement.py: the policy, the French reply and sending it at most once."""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from classifiers import Taxonomy
from classifiers.base import Prediction
from tests.conftest import CONFIG_DIR, FIXTURES, make_prediction
from tests.smtp_server import RecordingHandler, RefusingHandler, smtp_server
from worker.acknowledgement import (
    ACKNOWLEDGEMENT_DESTINATION,
    SENT,
    AcknowledgementConfig,
    Acknowledger,
    load_acknowledgements,
    render_acknowledgement,
    should_acknowledge,
)
from worker.config import SmtpSettings
from worker.delivery.base import Delivery
from worker.delivery.smtp import SmtpSender
from worker.errors import ConfigError
from worker.idempotency import DeliveryStore
from worker.parsing import parse_email
from worker.request import Request, Sender
from worker.routing import RoutingConfig, RoutingDecision, route

ACK_FIXTURES = FIXTURES / "acknowledgement"
CITIZEN = "jeanne.martin@courriel.example"
OWN = ("accueil@commune.example", "@mairie.example")
DISPLAY_NAMES = {"voirie": "Voirie", "finances": "Finances", "social": "Action sociale (CCAS)"}


def _request(name: str = "citizen.eml") -> Request:
    return parse_email((ACK_FIXTURES / name).read_bytes())


def _from(address: str | None) -> Request:
    return _request().model_copy(update={"sender": Sender(address=address)})


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def _text(message: EmailMessage) -> str:
    return str(message.get_content()).replace("\r\n", "\n")


@pytest.fixture(scope="module")
def shipped(taxonomy: Taxonomy) -> AcknowledgementConfig:
    """The shipped file, as validated at start-up."""
    return load_acknowledgements(CONFIG_DIR / "acknowledgements.yaml", taxonomy)


@pytest.fixture(scope="module")
def config(shipped: AcknowledgementConfig) -> AcknowledgementConfig:
    """The shipped file, switched on."""
    return shipped.model_copy(update={"enabled": True})


def _predict(
    taxonomy: Taxonomy,
    department: str = "voirie",
    urgency: str = "normale",
    confidence: float = 0.9,
) -> Prediction:
    return make_prediction(department, urgency, confidence=confidence, taxonomy=taxonomy)


class TestShouldAcknowledge:
    """`should_acknowledge` says None when a reply is due, else why not."""

    def test_citizen_of_an_enabled_department_is_acknowledged(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy
    ) -> None:
        """A citizen's email classified to voirie gets an acknowledgement."""
        assert should_acknowledge(_request(), _predict(taxonomy), config, OWN) is None

    def test_nothing_is_sent_while_disabled(
        self, shipped: AcknowledgementConfig, taxonomy: Taxonomy
    ) -> None:
        """The shipped file is off: every request is skipped with that reason."""
        reason = should_acknowledge(_request(), _predict(taxonomy), shipped, OWN)
        assert reason == "acknowledgements are disabled"

    def test_no_sender_address(self, config: AcknowledgementConfig, taxonomy: Taxonomy) -> None:
        """A request without a sender address is not acknowledged."""
        reason = should_acknowledge(_from(None), _predict(taxonomy), config, OWN)
        assert reason == "no sender address"

    def test_auto_replied_mail_is_skipped(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy
    ) -> None:
        """An `Auto-Submitted: auto-replied` mail, parsed from a real .eml, is never answered."""
        request = _request("auto_replied.eml")
        assert request.automated is not None
        assert should_acknowledge(request, _predict(taxonomy), config, OWN) == "automated sender"

    def test_disabled_department(self, config: AcknowledgementConfig, taxonomy: Taxonomy) -> None:
        """A department whose acknowledgements are off (finances) is skipped, naming it."""
        reason = should_acknowledge(_request(), _predict(taxonomy, "finances"), config, OWN)
        assert reason == "acknowledgements are off for department finances"

    @pytest.mark.parametrize(
        "address",
        [
            "no-reply@service.example",
            "NoReply@service.example",
            "ne_pas_repondre@impots.example",
            "ne.pas.repondre@impots.example",
            "nepasrepondre@caf.example",
            "MAILER-DAEMON@mx.example",
            "postmaster@mx.example",
            "bounces+12345@lists.example",
        ],
    )
    def test_no_reply_addresses(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy, address: str
    ) -> None:
        """Addresses holding a `never_to` pattern, case and separators aside, are skipped."""
        reason = should_acknowledge(_from(address), _predict(taxonomy), config, OWN)
        assert reason == "no-reply address"

    @pytest.mark.parametrize(
        "address",
        ["accueil@commune.example", "Accueil@Commune.Example", "dgs@mairie.example",
         "voirie@services.mairie.example"],
    )  # fmt: skip
    def test_own_addresses(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy, address: str
    ) -> None:
        """An exact own address, or one under an `@domain` entry or its subdomains, is skipped."""
        reason = should_acknowledge(_from(address), _predict(taxonomy), config, OWN)
        assert reason == "one of the mairie's own addresses"

    @pytest.mark.parametrize("address", ["secretariat@commune.example", "x@notmairie.example"])
    def test_near_misses_of_own_addresses_are_acknowledged(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy, address: str
    ) -> None:
        """Another address of an exact entry's domain, or a look-alike domain, is a citizen."""
        assert should_acknowledge(_from(address), _predict(taxonomy), config, OWN) is None

    def test_critique_is_acknowledged_even_where_off(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy
    ) -> None:
        """With `critique.always`, a critique request of a silent department is acknowledged."""
        prediction = _predict(taxonomy, "finances", "critique")
        assert should_acknowledge(_request(), prediction, config, OWN) is None
        never = config.model_copy(
            update={"critique": config.critique.model_copy(update={"always": False})}
        )
        reason = should_acknowledge(_request(), prediction, never, OWN)
        assert reason == "acknowledgements are off for department finances"

    def test_review_follows_its_own_switch(
        self,
        config: AcknowledgementConfig,
        taxonomy: Taxonomy,
        routing_config: RoutingConfig,
    ) -> None:
        """A request in review uses `review.enabled`, whatever its guessed department says."""
        prediction = _predict(taxonomy, "finances", confidence=0.2)
        decision = route(prediction, routing_config)
        assert decision.needs_review
        assert should_acknowledge(_request(), prediction, config, OWN, decision) is None
        off = config.model_copy(
            update={"review": config.review.model_copy(update={"enabled": False})}
        )
        reason = should_acknowledge(_request(), prediction, off, OWN, decision)
        assert reason == "acknowledgements are off for requests in review"


class TestRenderAcknowledgement:
    """`render_acknowledgement` writes the French reply."""

    def _render(
        self,
        config: AcknowledgementConfig,
        prediction: Prediction,
        decision: RoutingDecision | None = None,
    ) -> EmailMessage:
        message = render_acknowledgement(
            _request(), prediction, config, DISPLAY_NAMES, "triage@mairie.example", decision
        )
        return _parse(message.as_bytes())

    def test_headers_of_an_auto_reply(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy
    ) -> None:
        """From the sender, to the citizen, `Auto-Submitted: auto-replied`, no In-Reply-To."""
        message = self._render(config, _predict(taxonomy))
        assert message["From"].addresses[0].addr_spec == "triage@mairie.example"
        assert message["To"] == CITIZEN
        assert message["Auto-Submitted"] == "auto-replied"
        assert message["In-Reply-To"] is None
        assert message["References"] is None
        assert message["Message-ID"] == f"<{_request().id}.accuse@mairie-triage.invalid>"

    def test_reference_service_and_delay_are_in_the_reply(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy
    ) -> None:
        """The request id is in the subject and body, with the service's name and its delay."""
        message = self._render(config, _predict(taxonomy))
        reference = _request().id
        assert reference in message["Subject"]
        text = _text(message)
        assert f"référence {reference}" in text
        assert "transmise à : Voirie." in text
        assert "traitée sous 5 jours ouvrés" in text
        assert "{" not in text

    def test_critique_reply_gives_the_emergency_numbers(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy
    ) -> None:
        """The critique template names 112, 15, 17, 18 and 3114, and the reference."""
        message = self._render(config, _predict(taxonomy, "social", "critique"))
        text = _text(message)
        for number in ("112", "15", "17", "18", "3114"):
            assert re.search(rf"(?<!\d){number}(?!\d)", text), number
        assert "suicide" in text
        assert _request().id in text
        assert "Action sociale (CCAS)" in text

    def test_review_reply_names_no_service(
        self, config: AcknowledgementConfig, taxonomy: Taxonomy, routing_config: RoutingConfig
    ) -> None:
        """When the model is unsure the reply says "les services de la mairie", not its guess."""
        prediction = _predict(taxonomy, "finances", confidence=0.2)
        message = self._render(config, prediction, route(prediction, routing_config))
        text = _text(message)
        assert "transmise à : les services de la mairie." in text
        assert "Finances" not in text


class TestAcknowledgementConfig:
    """The acknowledgement file is validated at start-up."""

    def _write(self, tmp_path: Path, text: str) -> Path:
        shipped = (CONFIG_DIR / "acknowledgements.yaml").read_text(encoding="utf-8")
        path = tmp_path / "acknowledgements.yaml"
        path.write_text(shipped + text, encoding="utf-8")
        return path

    def test_shipped_file_is_off_and_covers_every_department(
        self, shipped: AcknowledgementConfig, taxonomy: Taxonomy
    ) -> None:
        """The shipped file loads, is disabled, and sets every department of the taxonomy."""
        assert shipped.enabled is False
        assert set(shipped.departments) == set(taxonomy.department_keys)

    def test_unknown_placeholder_names_the_key(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        """A template placeholder other than reference, service and delai is a `ConfigError`."""
        path = self._write(tmp_path, 'subject: "Demande {nom}"\n')
        with pytest.raises(ConfigError, match=r"subject: .*unknown placeholder \{nom\}"):
            load_acknowledgements(path, taxonomy)

    def test_unknown_department_is_refused(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        """A department missing from the taxonomy is a `ConfigError` naming it."""
        text = (CONFIG_DIR / "acknowledgements.yaml").read_text(encoding="utf-8")
        text = text.replace("  accueil: {enabled: true", "  piscine: {enabled: true")
        path = tmp_path / "acknowledgements.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=r"departments\.piscine"):
            load_acknowledgements(path, taxonomy)


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def settings(handler: RecordingHandler) -> Iterator[SmtpSettings]:
    with smtp_server(handler) as reachable:
        yield reachable


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeliveryStore]:
    opened = DeliveryStore(tmp_path / "deliveries.sqlite")
    yield opened
    opened.close()


def _delivery(request: Request, prediction: Prediction, routing: RoutingConfig) -> Delivery:
    return Delivery(request.id, b"", None, request, prediction, route(prediction, routing))


class TestAcknowledger:
    """`Acknowledger` sends through a real SMTP server, at most once per request."""

    def test_sent_once_for_a_request_processed_twice(
        self,
        config: AcknowledgementConfig,
        settings: SmtpSettings,
        handler: RecordingHandler,
        store: DeliveryStore,
        taxonomy: Taxonomy,
        routing_config: RoutingConfig,
    ) -> None:
        """The second processing finds the store's record and sends nothing more."""
        acknowledger = Acknowledger(config, SmtpSender(settings), DISPLAY_NAMES, OWN, store)
        delivery = _delivery(_request(), _predict(taxonomy), routing_config)
        assert acknowledger.acknowledge(delivery) == SENT
        assert acknowledger.acknowledge(delivery) == "already acknowledged"
        assert len(handler.received) == 1
        received = handler.received[0]
        assert received.rcpt_tos == (CITIZEN,)
        assert received.mail_from == settings.sender
        message = _parse(received.content)
        assert message["Auto-Submitted"] == "auto-replied"
        assert _request().id in _text(message)
        assert store.delivered(_request().id, ACKNOWLEDGEMENT_DESTINATION) is not None

    def test_never_to_an_auto_replied_sender(
        self,
        config: AcknowledgementConfig,
        settings: SmtpSettings,
        handler: RecordingHandler,
        store: DeliveryStore,
        taxonomy: Taxonomy,
        routing_config: RoutingConfig,
    ) -> None:
        """An auto-reply from a citizen's mailbox gets no acknowledgement and leaves no record."""
        acknowledger = Acknowledger(config, SmtpSender(settings), DISPLAY_NAMES, OWN, store)
        request = _request("auto_replied.eml")
        outcome = acknowledger.acknowledge(_delivery(request, _predict(taxonomy), routing_config))
        assert outcome == "automated sender"
        assert handler.received == []
        assert store.delivered(request.id, ACKNOWLEDGEMENT_DESTINATION) is None

    def test_never_to_our_own_sender_address(
        self,
        config: AcknowledgementConfig,
        settings: SmtpSettings,
        handler: RecordingHandler,
        taxonomy: Taxonomy,
        routing_config: RoutingConfig,
    ) -> None:
        """The relay's sender address counts as the mairie's own even if not listed."""
        acknowledger = Acknowledger(config, SmtpSender(settings), DISPLAY_NAMES, (), None)
        request = _from(settings.sender)
        outcome = acknowledger.acknowledge(_delivery(request, _predict(taxonomy), routing_config))
        assert outcome == "one of the mairie's own addresses"
        assert handler.received == []

    def test_refused_acknowledgement_is_reported_and_not_retried(
        self,
        config: AcknowledgementConfig,
        store: DeliveryStore,
        taxonomy: Taxonomy,
        routing_config: RoutingConfig,
    ) -> None:
        """A 550 for the citizen's address is returned, not raised, and not attempted again."""
        handler = RefusingHandler("RCPT", "550 5.1.1 No such user")
        delivery = _delivery(_request(), _predict(taxonomy), routing_config)
        with smtp_server(handler) as settings:
            acknowledger = Acknowledger(config, SmtpSender(settings), DISPLAY_NAMES, OWN, store)
            outcome = acknowledger.acknowledge(delivery)
            assert outcome.startswith("failed, permanent")
            assert "550" in outcome
            assert acknowledger.acknowledge(delivery) == "already acknowledged"
        assert handler.refusals == 1

    def test_transient_failure_is_tried_again_next_time(
        self,
        config: AcknowledgementConfig,
        store: DeliveryStore,
        taxonomy: Taxonomy,
        routing_config: RoutingConfig,
    ) -> None:
        """After a 451 nothing is recorded, so the next processing sends the acknowledgement."""
        handler = RefusingHandler("DATA", "451 4.3.0 Try again later", times=1)
        delivery = _delivery(_request(), _predict(taxonomy), routing_config)
        with smtp_server(handler) as settings:
            acknowledger = Acknowledger(config, SmtpSender(settings), DISPLAY_NAMES, OWN, store)
            assert acknowledger.acknowledge(delivery).startswith("failed, transient")
            assert acknowledger.acknowledge(delivery) == SENT
        assert len(handler.received) == 1
