"""Tests of worker/forward_back.py and of forward-backs through the embedded pipeline."""

from __future__ import annotations

import email
from email.message import EmailMessage
from pathlib import Path

import pytest

from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from tests.twins import KeywordClassifier
from worker.decision_log import DecisionLog
from worker.delivery import build_deliverers
from worker.feedback import FeedbackStore
from worker.forward_back import ForwardBackError, ForwardBackReader
from worker.parsing import parse_email
from worker.pipeline import Pipeline, Status
from worker.request import Channel, RawRequest
from worker.routing import RoutingConfig

ADDRESS = "corrections@mairie.example"
OWN = ("@mairie.example",)
ORIGINAL_ID = "em-" + "ab12" * 6


def _original(triaged: bool = True) -> EmailMessage:
    message = EmailMessage()
    if triaged:
        message["X-Triage-Request-Id"] = ORIGINAL_ID
        message["X-Triage-Department"] = "accueil"
    message["From"] = "Habitant <habitant@courriel.example>"
    message["To"] = "contact@mairie.example"
    message["Subject"] = "Question"
    message["Message-ID"] = "<original-1@courriel.example>"
    message.set_content("Bonjour, une plaque d'égout est descellée devant le 4 de la place.\n")
    return message


def _forward(
    first_lines: str,
    *,
    sender: str = "agent.accueil@mairie.example",
    to: str = ADDRESS,
    attach: bool = True,
    body_after: str = "",
) -> RawRequest:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "TR: Question"
    message["Message-ID"] = "<forward-1@mairie.example>"
    message.set_content(f"{first_lines}\n\nMal classée chez nous.\n{body_after}")
    if attach:
        message.add_attachment(_original())
    return RawRequest(payload=message.as_bytes(), channel=Channel.EMAIL, origin="test")


@pytest.fixture
def reader(taxonomy: Taxonomy) -> ForwardBackReader:
    return ForwardBackReader(ADDRESS, OWN, taxonomy)


class TestForwardBackReader:
    """The service, urgency and original of a forward-back, and what is refused."""

    def test_recognises_the_address(self, reader: ForwardBackReader) -> None:
        """Only email sent to the configured address is a forward-back."""
        assert reader.addressed_to_us(_forward("service: voirie"))
        assert not reader.addressed_to_us(_forward("service: voirie", to="contact@mairie.example"))
        form = RawRequest(payload=b"{}", channel=Channel.FORM)
        assert not reader.addressed_to_us(form)

    def test_attached_original(self, reader: ForwardBackReader) -> None:
        """The attached message is re-routed; its triage id names the corrected request."""
        raw = _forward("service: voirie\nurgence: haute")
        found = reader.read(raw, parse_email(raw.payload))
        assert (found.department, found.urgency) == ("voirie", "haute")
        assert found.corrected_id == ORIGINAL_ID
        assert parse_email(found.original.payload).subject == "Question"

    def test_display_name_and_same_line_urgency(self, reader: ForwardBackReader) -> None:
        """A service may be named as agents read it, with the urgency after a semicolon."""
        raw = _forward("Service : Voirie ; urgence : critique")
        found = reader.read(raw, parse_email(raw.payload))
        assert (found.department, found.urgency) == ("voirie", "critique")

    def test_inline_forward_with_reference(self, reader: ForwardBackReader) -> None:
        """An inline forward is re-routed itself; the printed reference names the request."""
        raw = _forward("service: voirie", attach=False, body_after=f"Référence : {ORIGINAL_ID}")
        found = reader.read(raw, parse_email(raw.payload))
        assert found.original is raw
        assert (found.corrected_id, found.urgency) == (ORIGINAL_ID, None)

    def test_unknown_service_names_the_known(self, reader: ForwardBackReader) -> None:
        """A misspelt service is refused with the list of valid keys."""
        raw = _forward("service: voierie")
        with pytest.raises(ForwardBackError, match="proprete_dechets"):
            reader.read(raw, parse_email(raw.payload))

    def test_missing_service_line(self, reader: ForwardBackReader) -> None:
        """A forward without the service line on top is refused."""
        raw = _forward("Pouvez-vous voir ?")
        with pytest.raises(ForwardBackError, match="first line"):
            reader.read(raw, parse_email(raw.payload))

    def test_citizen_cannot_correct(self, reader: ForwardBackReader) -> None:
        """A message from outside the mairie's addresses is refused."""
        raw = _forward("service: voirie", sender="malin@courriel.example")
        with pytest.raises(ForwardBackError, match="not the mairie"):
            reader.read(raw, parse_email(raw.payload))


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    return FeedbackStore(tmp_path / "feedback.sqlite")


@pytest.fixture
def pipeline(
    tmp_path: Path,
    taxonomy: Taxonomy,
    safety_rules: SafetyRules,
    routing_config: RoutingConfig,
    store: FeedbackStore,
) -> Pipeline:
    """The keyword twin, real maildirs, a feedback store and the forward-back reader."""
    return Pipeline(
        KeywordClassifier(taxonomy),
        safety_rules,
        routing_config,
        build_deliverers(routing_config, tmp_path / "maildir"),
        DecisionLog(tmp_path / "decisions.jsonl"),
        feedback=store,
        forward_back=ForwardBackReader(ADDRESS, OWN, taxonomy),
    )


class TestForwardBackThroughThePipeline:
    """A forward-back is recorded as a correction and the original re-routed."""

    def test_rerouted_and_recorded(
        self, pipeline: Pipeline, store: FeedbackStore, tmp_path: Path
    ) -> None:
        """The original lands in the named service's inbox and the correction is stored."""
        [outcome] = pipeline.process([_forward("service: voirie\nurgence: haute")])
        assert outcome.status is Status.DELIVERED
        assert outcome.prediction is not None
        assert outcome.prediction.department.label == "voirie"  # the twin alone says accueil
        [filed] = list((tmp_path / "maildir" / "voirie" / "new").iterdir())
        message = email.message_from_bytes(filed.read_bytes())
        assert message["Subject"] == "Question"
        assert "forward-back" in message["X-Triage-Reason"]
        [correction] = store.corrections()
        assert correction.request_id == ORIGINAL_ID
        assert (correction.department, correction.urgency) == ("voirie", "haute")
        assert (correction.source, correction.predicted_department) == ("forward", "accueil")
        assert "plaque" in correction.text

    def test_bad_forward_back_dead_lettered(self, pipeline: Pipeline, store: FeedbackStore) -> None:
        """A forward-back that cannot be read goes to the dead letters with the reason."""
        [outcome] = pipeline.process([_forward("service: nulle-part")])
        assert outcome.status is Status.DEAD_LETTER
        assert outcome.error is not None and "unknown service" in outcome.error
        assert store.corrections() == []

    def test_delivered_requests_are_remembered(
        self, pipeline: Pipeline, store: FeedbackStore
    ) -> None:
        """An ordinary request's text and prediction are kept for a later correction."""
        original = RawRequest(payload=_original(triaged=False).as_bytes(), channel=Channel.EMAIL)
        [outcome] = pipeline.process([original])
        remembered = store.remembered(outcome.request_id)
        assert remembered is not None
        assert (remembered.department, remembered.model_version) == ("accueil", "keyword-twin")
        assert "plaque" in remembered.text
