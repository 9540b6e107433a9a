"""Tests of worker/pipeline.py: the embedded parse → classify → route → deliver path."""

from __future__ import annotations

import email
from pathlib import Path

import pytest

from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from tests.conftest import FIXTURES
from tests.twins import FlakyDeliverer, KeywordClassifier
from worker.decision_log import DecisionLog
from worker.delivery import build_deliverers
from worker.delivery.base import Deliverer
from worker.errors import PermanentError, TransientError
from worker.pipeline import Pipeline, Status
from worker.request import Channel, RawRequest
from worker.routing import RoutingConfig


def _email(subject: str, body: str, message_id: str) -> RawRequest:
    data = (
        f"From: Jeanne <jeanne@courriel.example>\nTo: contact@mairie.example\n"
        f"Subject: {subject}\nMessage-ID: <{message_id}@courriel.example>\n"
        f"Content-Type: text/plain; charset=utf-8\n\n{body}\n"
    ).encode()
    return RawRequest(payload=data, channel=Channel.EMAIL, origin=f"{message_id}.eml")


class Harness:
    """The real rules, routing, maildirs and decision log around a classifier twin."""

    def __init__(
        self, classifier: KeywordClassifier, safety: SafetyRules, routing: RoutingConfig, tmp: Path
    ) -> None:
        self.classifier = classifier
        self.safety = safety
        self.routing = routing
        self.root = tmp / "maildir"
        self.decisions = DecisionLog(tmp / "decisions.jsonl")
        self.sleeps: list[float] = []

    def deliverer(self, name: str) -> Deliverer:
        return build_deliverers(self.routing, self.root)[name]

    def pipeline(self, **replace: Deliverer) -> Pipeline:
        """A pipeline whose destinations are real maildirs, except those given in `replace`."""
        deliverers = {**build_deliverers(self.routing, self.root), **replace}
        return Pipeline(
            self.classifier,
            self.safety,
            self.routing,
            deliverers,
            self.decisions,
            sleep=self.sleeps.append,
            retry_delay=0.1,
        )

    def files(self, destination: str) -> list[Path]:
        folder = self.root / destination / "new"
        return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def harness(
    taxonomy: Taxonomy, safety_rules: SafetyRules, routing_config: RoutingConfig, tmp_path: Path
) -> Harness:
    return Harness(KeywordClassifier(taxonomy), safety_rules, routing_config, tmp_path)


class TestProcess:
    """Pipeline.process routes and delivers every request, or dead-letters it with a reason."""

    def test_confident_request_delivered_with_headers(self, harness: Harness) -> None:
        """A confident request lands in its department's maildir with the triage headers."""
        pipeline = harness.pipeline()
        [outcome] = pipeline.process([_email("Lampadaire", "Le lampadaire est éteint.", "a1")])
        assert outcome.status is Status.DELIVERED
        [path] = harness.files("voirie")
        message = email.message_from_bytes(path.read_bytes())
        assert message["X-Triage-Department"] == "voirie"
        assert message["X-Triage-Urgency"] == "normale"
        assert message["X-Triage-Request-Id"] == outcome.request_id
        assert message["X-Triage-Model"] == "keyword-twin"
        assert float(message["X-Triage-Confidence"]) == pytest.approx(0.9)
        [record] = harness.decisions.read()
        assert (record.outcome, record.department, record.destinations) == (
            "delivered",
            "voirie",
            ("voirie",),
        )

    def test_low_confidence_goes_to_review(self, harness: Harness) -> None:
        """Under the threshold, the request goes to the review maildir and not to the service."""
        pipeline = harness.pipeline()
        [outcome] = pipeline.process([_email("Question", "C'est peut-être pour vous.", "a2")])
        assert outcome.status is Status.REVIEW
        assert len(harness.files("revue")) == 1
        assert harness.files("accueil") == []

    def test_critique_escalated(self, harness: Harness) -> None:
        """A critique request reaches both its service and the on-call maildir."""
        pipeline = harness.pipeline()
        pipeline.process([_email("Trottoir", "Danger : trottoir effondré.", "a3")])
        assert len(harness.files("voirie")) == 1
        assert len(harness.files("astreinte")) == 1

    def test_safety_rule_escalates(self, harness: Harness) -> None:
        """A gas smell the model rated normale is escalated, and the rule is recorded."""
        pipeline = harness.pipeline()
        [outcome] = pipeline.process([_email("Immeuble", "Forte odeur de gaz au 2e.", "a4")])
        assert outcome.prediction is not None
        assert outcome.prediction.urgency.label == "critique"
        assert len(harness.files("astreinte")) == 1
        assert harness.decisions.read()[0].safety_rules == ("gaz",)

    def test_unparseable_input_dead_lettered(self, harness: Harness) -> None:
        """Garbage is not lost: it lands in the dead-letter maildir with the reason."""
        pipeline = harness.pipeline()
        garbage = (FIXTURES / "email" / "binary_garbage.eml").read_bytes()
        good = _email("Lampadaire", "Lampadaire éteint.", "a5")
        outcomes = pipeline.process([RawRequest(payload=garbage, channel=Channel.EMAIL), good])
        assert [o.status for o in outcomes] == [Status.DEAD_LETTER, Status.DELIVERED]
        [path] = harness.files("rejets")
        message = email.message_from_bytes(path.read_bytes())
        assert "not an email" in message["X-Triage-Error"]
        attached = [part for part in message.walk() if part.get_filename() == "original.eml"]
        assert attached[0].get_payload(decode=True) == garbage
        assert harness.decisions.read()[0].outcome == "dead_letter"

    def test_invalid_form_dead_lettered_with_field(self, harness: Harness) -> None:
        """An invalid e-form is dead-lettered with the name of the bad field."""
        pipeline = harness.pipeline()
        payload = (FIXTURES / "forms" / "missing_message.json").read_bytes()
        [outcome] = pipeline.process([RawRequest(payload=payload, channel=Channel.FORM)])
        assert outcome.status is Status.DEAD_LETTER
        assert outcome.error is not None and outcome.error.startswith("message")

    def test_one_model_call_per_batch(self, harness: Harness) -> None:
        """A batch is classified in a single model call."""
        pipeline = harness.pipeline()
        pipeline.process([_email("Lampadaire", "Éteint.", f"b{i}") for i in range(5)])
        assert harness.classifier.batches == [5]

    def test_reprocessing_does_not_duplicate(self, harness: Harness) -> None:
        """Processing the same requests twice leaves one copy per destination."""
        pipeline = harness.pipeline()
        batch = [_email("Trottoir", "Danger trottoir.", "c1"), _email("Lampadaire", "x", "c2")]
        pipeline.process(batch)
        second = pipeline.process(batch)
        assert len(harness.files("voirie")) == 2
        assert len(harness.files("astreinte")) == 1
        assert all(receipt.duplicate for o in second for receipt in o.receipts)


class TestFailures:
    """Delivery and model failures never lose a request."""

    def test_transient_failure_retried(self, harness: Harness) -> None:
        """A target that fails twice then recovers gets the request after two backed-off retries."""
        inner = harness.deliverer("voirie")
        flaky = FlakyDeliverer(inner, failures=2, error=TransientError)
        pipeline = harness.pipeline(voirie=flaky)
        [outcome] = pipeline.process([_email("Lampadaire", "Éteint.", "d1")])
        assert outcome.status is Status.DELIVERED
        assert flaky.calls == 3
        assert harness.sleeps == [0.1, 0.2]
        assert len(harness.files("voirie")) == 1

    def test_transient_failure_exhausted(self, harness: Harness) -> None:
        """A target that never recovers sends the request to the dead letters with the reason."""
        inner = harness.deliverer("voirie")
        flaky = FlakyDeliverer(inner, failures=99, error=TransientError)
        pipeline = harness.pipeline(voirie=flaky)
        [outcome] = pipeline.process([_email("Lampadaire", "Éteint.", "d2")])
        assert outcome.status is Status.DEAD_LETTER
        assert flaky.calls == 3
        message = email.message_from_bytes(harness.files("rejets")[0].read_bytes())
        assert message["X-Triage-Error-Class"] == "TransientError"

    def test_permanent_failure_not_retried(self, harness: Harness) -> None:
        """A permanent failure is dead-lettered at once, without retries."""
        inner = harness.deliverer("voirie")
        flaky = FlakyDeliverer(inner, failures=99, error=PermanentError)
        pipeline = harness.pipeline(voirie=flaky)
        [outcome] = pipeline.process([_email("Lampadaire", "Éteint.", "d3")])
        assert outcome.status is Status.DEAD_LETTER
        assert (flaky.calls, harness.sleeps) == (1, [])

    def test_model_crash_dead_letters_batch(self, harness: Harness) -> None:
        """When the model fails, every request of the batch is dead-lettered, none lost."""
        harness.classifier.fail = True
        pipeline = harness.pipeline()
        outcomes = pipeline.process([_email("x", "y", "e1"), _email("x", "z", "e2")])
        assert [o.status for o in outcomes] == [Status.DEAD_LETTER, Status.DEAD_LETTER]
        assert len(harness.files("rejets")) == 2
        assert {r.error for r in harness.decisions.read()} == {"RuntimeError"}

    def test_dead_letter_failure_reported(self, harness: Harness) -> None:
        """If even the dead-letter target fails, the outcome says FAILED instead of raising."""
        rejets = FlakyDeliverer(harness.deliverer("rejets"), failures=99, error=TransientError)
        pipeline = harness.pipeline(rejets=rejets)
        [outcome] = pipeline.process([RawRequest(payload=b"", channel=Channel.EMAIL)])
        assert outcome.status is Status.FAILED
        assert outcome.error is not None and "empty input" in outcome.error
