"""Tests of worker/consumer.py: the TriageWorker's classify and deliver stages with the stub."""

from __future__ import annotations

import dataclasses
import email
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from classifiers.base import Evidence, Prediction
from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from tests.conftest import FIXTURES
from tests.twins import FlakyDeliverer, KeywordClassifier
from worker.broker import (
    HEADER_ATTEMPT,
    HEADER_CHANNEL,
    HEADER_CLASSIFICATION,
    HEADER_ERROR_CLASS,
    HEADER_REASON,
    HEADER_REQUEST_ID,
    HEADER_STAGE,
    Message,
    StubBroker,
    Topology,
    decode_classification,
)
from worker.consumer import Observer, TriageWorker, WorkerOptions, channel_of
from worker.decision_log import DecisionLog
from worker.delivery import build_deliverers
from worker.delivery.base import Deliverer, Delivery, Receipt
from worker.errors import PermanentError, TransientError
from worker.idempotency import DeliveryStore
from worker.parsing import parse_raw
from worker.pipeline import Classified, Pipeline
from worker.request import Channel, RawRequest
from worker.routing import RoutingConfig

EMAIL_TYPE = "message/rfc822"
FORM_TYPE = "application/json"


def _email(subject: str, body: str, message_id: str) -> bytes:
    return (
        f"From: Jeanne <jeanne@courriel.example>\nTo: contact@mairie.example\n"
        f"Subject: {subject}\nMessage-ID: <{message_id}@courriel.example>\n"
        f"Content-Type: text/plain; charset=utf-8\n\n{body}\n"
    ).encode()


def _request_id(body: bytes, channel: Channel = Channel.EMAIL) -> str:
    return parse_raw(RawRequest(payload=body, channel=channel)).id


class RecordingObserver(Observer):
    """Keeps what the worker reports to its observer."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.outcomes: list[tuple[str | None, str]] = []
        self.lags: list[float] = []

    def batch(self, size: int, seconds: float) -> None:
        self.batches.append(size)

    def outcome(self, item: Classified | None, outcome: str) -> None:
        self.outcomes.append((item.request.id if item else None, outcome))

    def lag(self, seconds: float) -> None:
        self.lags.append(seconds)


class Gate:
    """Lets a test hold a worker thread inside a call until it releases it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        self.release.wait(10)


class GatedClassifier(KeywordClassifier):
    """The keyword twin, held at the gate before answering."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        super().__init__(taxonomy)
        self.gate = Gate()

    def predict(self, requests: Sequence[Any]) -> list[Prediction]:
        self.gate.hold()
        return super().predict(requests)


class GatedDeliverer:
    """A real deliverer, held at the gate before delivering."""

    def __init__(self, inner: Deliverer) -> None:
        self.name = inner.name
        self.inner = inner
        self.gate = Gate()

    def deliver(self, delivery: Delivery) -> Receipt:
        self.gate.hold()
        return self.inner.deliver(delivery)


class Harness:
    """A stub broker, real maildirs, decision log and store around the keyword twin."""

    def __init__(
        self, taxonomy: Taxonomy, safety: SafetyRules, routing: RoutingConfig, tmp: Path
    ) -> None:
        self.taxonomy = taxonomy
        self.classifier = KeywordClassifier(taxonomy)
        self.safety = safety
        self.routing = routing
        self.tmp = tmp
        self.root = tmp / "maildir"
        self.decisions = DecisionLog(tmp / "decisions.jsonl")
        self.topology = Topology(prefix="test", retry_delays=(1.0, 2.0))
        self.broker = StubBroker(self.topology)

    def deliverer(self, name: str) -> Deliverer:
        return build_deliverers(self.routing, self.root)[name]

    def worker(
        self,
        *,
        classifier: KeywordClassifier | None = None,
        options: WorkerOptions | None = None,
        store: DeliveryStore | None = None,
        observer: Observer | None = None,
        explanations: bool = False,
        **replace: Deliverer,
    ) -> TriageWorker:
        """A worker whose destinations are real maildirs, except those given in `replace`."""
        pipeline = Pipeline(
            classifier or self.classifier,
            self.safety,
            self.routing,
            {**build_deliverers(self.routing, self.root), **replace},
            self.decisions,
            store=store,
            explanations=explanations,
        )
        return TriageWorker(
            pipeline,
            self.broker,
            self.topology,
            options or WorkerOptions(max_attempts=3),
            observer,
        )

    def submit(
        self, body: bytes, channel: str | None = "email", content_type: str | None = EMAIL_TYPE
    ) -> Message:
        """Publish a raw request to the intake exchange and take it as the consumer would."""
        headers = {HEADER_CHANNEL: channel} if channel is not None else {}
        self.broker.publish(
            self.topology.intake, "intake", body, headers=headers, content_type=content_type
        )
        message = self.broker.take(self.topology.intake)
        assert message is not None
        return message

    def classified(self, body: bytes, channel: str = "email") -> Message:
        """A raw request after the classify stage, taken from the deliver queue."""
        content_type = FORM_TYPE if channel == "form" else EMAIL_TYPE
        self.worker().classify_batch([self.submit(body, channel, content_type)])
        message = self.broker.take(self.topology.deliver)
        assert message is not None
        return message

    def pending(self, queue: str) -> list[Message]:
        """Every message left in `queue`, highest priority first."""
        messages = []
        while (message := self.broker.take(queue)) is not None:
            messages.append(message)
        return messages

    def files(self, destination: str) -> list[Path]:
        folder = self.root / destination / "new"
        return sorted(folder.iterdir()) if folder.is_dir() else []


class ExplainingTwin(KeywordClassifier):
    """The keyword twin, explaining itself and recording which requests it explained."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        super().__init__(taxonomy)
        self.explained: list[str] = []

    def explain(
        self, requests: Sequence[Any], predictions: Sequence[Prediction]
    ) -> list[tuple[Evidence, ...]]:
        self.explained += [request.id for request in requests]
        return [(Evidence(head="department", text="lampadaire", weight=1.0),) for _ in requests]


@pytest.fixture
def harness(
    taxonomy: Taxonomy, safety_rules: SafetyRules, routing_config: RoutingConfig, tmp_path: Path
) -> Harness:
    return Harness(taxonomy, safety_rules, routing_config, tmp_path)


class TestClassifyBatch:
    """`classify_batch` classifies intake messages together and forwards each to delivery."""

    def test_batch_is_classified_in_one_model_call(self, harness: Harness) -> None:
        """Three intake messages handled together make a single call to the model."""
        batch = [harness.submit(_email("Lampadaire", "Éteint.", f"a{i}")) for i in range(3)]
        harness.worker().classify_batch(batch)
        assert harness.classifier.batches == [3]
        assert len(harness.pending(harness.topology.deliver)) == 3

    def test_results_published_with_priority_from_urgency(self, harness: Harness) -> None:
        """A critique request is forwarded with priority 3, a normale one with priority 1."""
        calm = _email("Lampadaire", "Le lampadaire est éteint.", "b1")
        urgent = _email("Trottoir", "Danger : trottoir effondré.", "b2")
        harness.worker().classify_batch([harness.submit(calm), harness.submit(urgent)])
        forwarded = harness.pending(harness.topology.deliver)
        assert [(m.body, m.priority) for m in forwarded] == [(urgent, 3), (calm, 1)]
        assert all(m.content_type == EMAIL_TYPE for m in forwarded)
        assert all(m.headers[HEADER_ATTEMPT] == 0 for m in forwarded)

    def test_classification_header_decodes_to_the_same_labels(self, harness: Harness) -> None:
        """The classification header carries the prediction and the routing decision."""
        body = _email("Trottoir", "Danger : trottoir effondré.", "c1")
        harness.worker().classify_batch([harness.submit(body)])
        [forwarded] = harness.pending(harness.topology.deliver)
        prediction, decision = decode_classification(forwarded.headers[HEADER_CLASSIFICATION])
        assert (prediction.department.label, prediction.urgency.label) == ("voirie", "critique")
        assert prediction.model_version == "keyword-twin"
        assert decision.destinations == ("voirie", "astreinte")
        assert decision.escalated is True
        assert forwarded.headers[HEADER_REQUEST_ID] == _request_id(body)
        assert forwarded.headers[HEADER_CHANNEL] == "email"

    def test_each_intake_message_acked_after_its_forward(self, harness: Harness) -> None:
        """Every intake message is acked, and only once its classified copy was confirmed."""
        batch = [harness.submit(_email("Lampadaire", "Éteint.", f"d{i}")) for i in range(3)]
        harness.worker().classify_batch(batch)
        assert harness.broker.acked == batch
        journal = harness.broker.journal
        for message in batch:
            events = [(kind, where, body) for kind, where, _, body, _ in journal]
            forwarded = events.index(("publish", harness.topology.deliver, message.body))
            acked = events.index(("ack", harness.topology.intake, message.body))
            assert forwarded < acked

    def test_unparseable_messages_dead_lettered_the_others_go_through(
        self, harness: Harness
    ) -> None:
        """A malformed email and an invalid e-form are dead-lettered; the good one is forwarded."""
        garbage = (FIXTURES / "email" / "binary_garbage.eml").read_bytes()
        form = (FIXTURES / "forms" / "missing_message.json").read_bytes()
        good = _email("Lampadaire", "Éteint.", "e1")
        batch = [
            harness.submit(garbage),
            harness.submit(form, "form", FORM_TYPE),
            harness.submit(good),
        ]
        harness.worker().classify_batch(batch)
        dead = {m.body: m for m in harness.pending(harness.topology.dead)}
        assert set(dead) == {garbage, form}
        for message in dead.values():
            assert message.headers[HEADER_STAGE] == "parse"
            assert message.headers[HEADER_ERROR_CLASS] == "ParseError"
            assert message.headers[HEADER_ATTEMPT] == 0
        assert "not an email" in dead[garbage].headers[HEADER_REASON]
        assert dead[form].headers[HEADER_REASON].startswith("message")
        assert dead[form].headers[HEADER_CHANNEL] == "form"
        assert dead[form].content_type == FORM_TYPE
        [forwarded] = harness.pending(harness.topology.deliver)
        assert forwarded.body == good
        assert harness.classifier.batches == [1]
        assert harness.broker.acked == batch
        outcomes = [r.outcome for r in harness.decisions.read()]
        assert outcomes == ["dead_letter", "dead_letter"]

    def test_model_failure_dead_letters_the_whole_batch(
        self, harness: Harness, taxonomy: Taxonomy
    ) -> None:
        """When the model raises, the whole batch is dead-lettered with the error class only."""
        bodies = [_email("Lampadaire", "Éteint.", f"f{i}") for i in range(2)]
        batch = [harness.submit(body) for body in bodies]
        harness.worker(classifier=KeywordClassifier(taxonomy, fail=True)).classify_batch(batch)
        dead = harness.pending(harness.topology.dead)
        assert sorted(m.body for m in dead) == sorted(bodies)
        for message in dead:
            assert message.headers[HEADER_STAGE] == "classify"
            assert message.headers[HEADER_ERROR_CLASS] == "RuntimeError"
            assert message.headers[HEADER_REASON] == "RuntimeError"
            assert message.headers[HEADER_REQUEST_ID] == _request_id(message.body)
            assert all("model crashed" not in str(value) for value in message.headers.values())
        assert harness.pending(harness.topology.deliver) == []
        assert harness.broker.acked == batch

    def test_unconfirmed_forward_leaves_intake_message_unacked(self, harness: Harness) -> None:
        """A forward the broker does not confirm leaves its intake message unacked, not lost."""
        first = harness.submit(_email("Lampadaire", "Éteint.", "g1"))
        second = harness.submit(_email("Lampadaire", "Éteint.", "g2"))
        harness.broker.fail_publishes = 1
        harness.worker().classify_batch([first, second])
        assert harness.broker.acked == [second]
        [forwarded] = harness.pending(harness.topology.deliver)
        assert forwarded.body == second.body
        assert harness.pending(harness.topology.dead) == []

    def test_missing_channel_header_falls_back_to_content_type(self, harness: Harness) -> None:
        """An intake message without a channel header is read as an e-form from its content type."""
        form = (FIXTURES / "forms" / "valid_full.json").read_bytes()
        harness.worker().classify_batch([harness.submit(form, None, FORM_TYPE)])
        assert harness.pending(harness.topology.dead) == []
        [forwarded] = harness.pending(harness.topology.deliver)
        assert forwarded.headers[HEADER_CHANNEL] == "form"
        assert forwarded.headers[HEADER_REQUEST_ID] == _request_id(form, Channel.FORM)
        assert forwarded.content_type == FORM_TYPE

    def test_observer_hears_batch_and_lag(self, harness: Harness) -> None:
        """The observer gets the batch size and the age of the oldest message of the batch."""
        observer = RecordingObserver()
        message = harness.submit(_email("Lampadaire", "Éteint.", "h1"))
        stamped = dataclasses.replace(message, timestamp=int(time.time()) - 30)
        harness.worker(observer=observer).classify_batch([stamped])
        assert observer.batches == [1]
        [lag] = observer.lags
        assert 29.0 <= lag <= 40.0


class TestDeliverMessage:
    """`deliver_message` delivers a classified request, or retries or dead-letters it."""

    def test_delivers_to_maildir_and_acks(self, harness: Harness) -> None:
        """A classified request lands in its service's maildir and its message is acked."""
        body = _email("Lampadaire", "Le lampadaire est éteint.", "i1")
        message = harness.classified(body)
        harness.worker().deliver_message(message)
        [path] = harness.files("voirie")
        delivered = email.message_from_bytes(path.read_bytes())
        assert delivered["X-Triage-Request-Id"] == _request_id(body)
        assert delivered["X-Triage-Department"] == "voirie"
        assert harness.broker.acked[-1] == message
        assert harness.decisions.read()[-1].outcome == "delivered"

    def test_transient_failure_goes_to_first_retry_queue(self, harness: Harness) -> None:
        """A transient failure republishes to the first delay queue with attempt 1, then acks."""
        flaky = FlakyDeliverer(harness.deliverer("voirie"), failures=1, error=TransientError)
        message = harness.classified(_email("Lampadaire", "Éteint.", "j1"))
        harness.worker(voirie=flaky).deliver_message(message)
        [retry] = harness.pending(harness.topology.retry(1))
        assert retry.body == message.body
        assert retry.headers[HEADER_ATTEMPT] == 1
        assert "target unavailable" in retry.headers[HEADER_REASON]
        assert retry.headers[HEADER_CLASSIFICATION] == message.headers[HEADER_CLASSIFICATION]
        assert retry.priority == message.priority
        assert harness.broker.acked[-1] == message
        assert harness.files("voirie") == []
        assert harness.pending(harness.topology.dead) == []

    def test_retried_message_delivered_on_its_next_attempt(self, harness: Harness) -> None:
        """The copy that comes back from the delay queue is delivered once the target recovers."""
        flaky = FlakyDeliverer(harness.deliverer("voirie"), failures=1, error=TransientError)
        worker = harness.worker(voirie=flaky)
        worker.deliver_message(harness.classified(_email("Lampadaire", "Éteint.", "k1")))
        retry = harness.broker.take(harness.topology.retry(1))
        assert retry is not None
        worker.deliver_message(retry)
        assert flaky.calls == 2
        assert len(harness.files("voirie")) == 1
        assert harness.broker.acked[-1] == retry

    def test_last_attempt_goes_to_dead_queue(self, harness: Harness) -> None:
        """After max_attempts transient failures the request is dead-lettered with the count."""
        flaky = FlakyDeliverer(harness.deliverer("voirie"), failures=99, error=TransientError)
        worker = harness.worker(voirie=flaky, options=WorkerOptions(max_attempts=3))
        message = harness.classified(_email("Lampadaire", "Éteint.", "l1"))
        for attempt in (1, 2):
            worker.deliver_message(message)
            retried = harness.broker.take(harness.topology.retry(attempt))
            assert retried is not None
            assert retried.headers[HEADER_ATTEMPT] == attempt
            message = retried
        worker.deliver_message(message)
        [dead] = harness.pending(harness.topology.dead)
        assert dead.headers[HEADER_STAGE] == "deliver"
        assert dead.headers[HEADER_ERROR_CLASS] == "TransientError"
        assert dead.headers[HEADER_ATTEMPT] == 3
        assert dead.headers[HEADER_REASON].startswith("delivery failed 3 times")
        assert harness.pending(harness.topology.retry(3)) == []
        assert flaky.calls == 3
        assert harness.broker.acked[-1] == message

    def test_permanent_failure_goes_to_dead_queue_at_once(self, harness: Harness) -> None:
        """A permanent failure is dead-lettered on the first attempt, without a retry."""
        flaky = FlakyDeliverer(harness.deliverer("voirie"), failures=99, error=PermanentError)
        message = harness.classified(_email("Lampadaire", "Éteint.", "m1"))
        harness.worker(voirie=flaky).deliver_message(message)
        [dead] = harness.pending(harness.topology.dead)
        assert dead.headers[HEADER_STAGE] == "deliver"
        assert dead.headers[HEADER_ERROR_CLASS] == "PermanentError"
        assert dead.headers[HEADER_REASON] == "target unavailable"
        assert dead.headers[HEADER_ATTEMPT] == 1
        assert harness.pending(harness.topology.retry(1)) == []
        assert flaky.calls == 1
        assert harness.broker.acked[-1] == message

    @pytest.mark.parametrize(
        "damaged",
        [None, "{pas du json", '{"prediction": {}}', '{"decision": {}}', b"\xff\xfe"],
        ids=["missing", "not-json", "bad-prediction", "no-prediction", "not-utf8"],
    )
    def test_damaged_classification_header_is_dead_lettered(
        self, harness: Harness, damaged: str | bytes | None
    ) -> None:
        """A message whose classification header cannot be read is dead-lettered, not retried."""
        message = harness.classified(_email("Lampadaire", "Éteint.", "n1"))
        headers = {**message.headers, HEADER_CLASSIFICATION: damaged}
        if damaged is None:
            del headers[HEADER_CLASSIFICATION]
        broken = dataclasses.replace(message, headers=headers)
        harness.worker().deliver_message(broken)
        [dead] = harness.pending(harness.topology.dead)
        assert dead.headers[HEADER_ERROR_CLASS] == "PermanentError"
        assert dead.headers[HEADER_STAGE] == "deliver"
        assert "damaged x-triage-classification" in dead.headers[HEADER_REASON]
        assert harness.pending(harness.topology.retry(1)) == []
        assert harness.files("voirie") == []
        assert harness.broker.acked[-1] == broken

    def test_redelivery_leaves_one_copy(self, harness: Harness) -> None:
        """The same message delivered twice reaches the maildir once, thanks to the store."""
        store = DeliveryStore(harness.tmp / "deliveries.sqlite")
        counting = FlakyDeliverer(harness.deliverer("voirie"), failures=0, error=TransientError)
        worker = harness.worker(store=store, voirie=counting)
        message = harness.classified(_email("Lampadaire", "Éteint.", "o1"))
        worker.deliver_message(message)
        worker.deliver_message(dataclasses.replace(message, redelivered=True))
        assert len(harness.files("voirie")) == 1
        assert counting.calls == 1
        assert store.count() == 1
        assert store.delivered(_request_id(message.body), "voirie") == str(
            harness.files("voirie")[0]
        )
        assert harness.broker.acked[-2:] == [
            message,
            dataclasses.replace(message, redelivered=True),
        ]

    def test_missing_channel_header_falls_back_to_content_type(self, harness: Harness) -> None:
        """A deliver message without a channel header is parsed as an e-form from its type."""
        form = (FIXTURES / "forms" / "valid_full.json").read_bytes()
        message = harness.classified(form, "form")
        headers = {k: v for k, v in message.headers.items() if k != HEADER_CHANNEL}
        harness.worker().deliver_message(dataclasses.replace(message, headers=headers))
        assert harness.pending(harness.topology.dead) == []
        [path] = harness.files("accueil")
        delivered = email.message_from_bytes(path.read_bytes())
        assert delivered["X-Triage-Request-Id"] == _request_id(form, Channel.FORM)

    def test_observer_hears_outcomes(self, harness: Harness) -> None:
        """The observer hears a delivered and a review outcome with their request."""
        observer = RecordingObserver()
        worker = harness.worker(observer=observer)
        sure = _email("Lampadaire", "Éteint.", "p1")
        unsure = _email("Question", "C'est peut-être pour vous.", "p2")
        worker.deliver_message(harness.classified(sure))
        worker.deliver_message(harness.classified(unsure))
        assert observer.outcomes == [
            (_request_id(sure), "delivered"),
            (_request_id(unsure), "review"),
        ]


class TestUnexpectedErrors:
    """An error nobody planned for loses no message and stops no thread."""

    def test_unexpected_delivery_error_dead_lettered_with_its_class(self, harness: Harness) -> None:
        """A deliverer raising a foreign error dead-letters the message with the class only."""
        broken = FlakyDeliverer(harness.deliverer("voirie"), failures=99, error=RuntimeError)
        message = harness.classified(_email("Lampadaire", "Éteint.", "u1"))
        harness.worker(voirie=broken).deliver_message(message)
        [dead] = harness.pending(harness.topology.dead)
        assert dead.headers[HEADER_ERROR_CLASS] == "RuntimeError"
        assert dead.headers[HEADER_REASON] == "RuntimeError"
        assert message in harness.broker.acked

    def test_failed_dead_letter_publish_leaves_message_unacked(self, harness: Harness) -> None:
        """When even the dead-letter publish fails, the message stays unacked for redelivery."""
        broken = FlakyDeliverer(harness.deliverer("voirie"), failures=99, error=PermanentError)
        message = harness.classified(_email("Lampadaire", "Éteint.", "u2"))
        harness.broker.fail_publishes = 1
        harness.worker(voirie=broken).deliver_message(message)
        assert message not in harness.broker.acked
        assert harness.pending(harness.topology.dead) == []

    def test_delivery_thread_survives_a_crashing_message(self, harness: Harness) -> None:
        """A message whose handling raises does not stop its thread: the next one is delivered."""
        worker = harness.worker(options=WorkerOptions(delivery_threads=1, max_attempts=3))
        first = harness.classified(_email("Lampadaire", "Éteint.", "u3"))
        second = harness.classified(_email("Lampadaire", "Éteint aussi.", "u4"))
        original = worker.deliver_message
        calls: list[Message] = []

        def crash_once(message: Message) -> None:
            calls.append(message)
            if len(calls) == 1:
                raise OSError("disk gone")
            original(message)

        worker.deliver_message = crash_once  # type: ignore[method-assign]
        worker.start()
        try:
            harness.broker.consumers[harness.topology.deliver](first)
            harness.broker.consumers[harness.topology.deliver](second)
            deadline = time.monotonic() + 5
            while second not in harness.broker.acked and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            worker.stop(timeout=5)
        assert calls == [first, second]
        assert second in harness.broker.acked
        assert len(harness.files("voirie")) == 1


class TestChannelOf:
    """`channel_of` reads the channel from the header, else from the content type."""

    @pytest.mark.parametrize(
        ("headers", "content_type", "expected"),
        [
            ({HEADER_CHANNEL: "form"}, EMAIL_TYPE, Channel.FORM),
            ({HEADER_CHANNEL: b"form"}, None, Channel.FORM),
            ({}, FORM_TYPE, Channel.FORM),
            ({HEADER_CHANNEL: "fax"}, EMAIL_TYPE, Channel.EMAIL),
            ({}, None, Channel.EMAIL),
        ],
        ids=["header", "bytes-header", "content-type", "unknown-header", "nothing"],
    )
    def test_channel(
        self, headers: dict[str, Any], content_type: str | None, expected: Channel
    ) -> None:
        """The header wins when it names a channel; the content type then email are fallbacks."""
        message = Message("q", b"", headers, content_type, None, False, handle=None)
        assert channel_of(message) is expected


class TestLifeCycle:
    """`start` registers the consumers; `stop` gives back the work that was not started."""

    def test_stop_requeues_what_was_not_started(self, harness: Harness) -> None:
        """Messages waiting in the in-process queues go back to the broker; work in hand ends."""
        in_hand = harness.classified(_email("Lampadaire", "Éteint.", "q1"))
        waiting = harness.classified(_email("Lampadaire", "Éteint.", "q2"))
        intake = [harness.submit(_email("Lampadaire", "Éteint.", f"r{i}")) for i in range(3)]
        classifier = GatedClassifier(harness.taxonomy)
        voirie = GatedDeliverer(harness.deliverer("voirie"))
        options = WorkerOptions(batch_size=1, batch_wait=0.0, delivery_threads=1)
        worker = harness.worker(classifier=classifier, options=options, voirie=voirie)
        worker.start()
        consumers = harness.broker.consumers
        assert set(consumers) == {harness.topology.intake, harness.topology.deliver}
        consumers[harness.topology.intake](intake[0])
        assert classifier.gate.entered.wait(5)
        consumers[harness.topology.intake](intake[1])
        consumers[harness.topology.intake](intake[2])
        consumers[harness.topology.deliver](in_hand)
        assert voirie.gate.entered.wait(5)
        consumers[harness.topology.deliver](waiting)
        worker.stop(timeout=0.0)
        assert harness.broker.consuming is False
        assert sorted(m.body for m in harness.broker.requeued) == sorted(
            [intake[1].body, intake[2].body, waiting.body]
        )
        requeued_intake = harness.pending(harness.topology.intake)
        assert sorted(m.body for m in requeued_intake) == sorted(m.body for m in intake[1:])
        assert [m.body for m in harness.pending(harness.topology.deliver)] == [waiting.body]
        classifier.gate.release.set()
        voirie.gate.release.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(
            m in harness.broker.acked for m in (intake[0], in_hand)
        ):
            time.sleep(0.01)
        assert intake[0] in harness.broker.acked
        assert in_hand in harness.broker.acked
        assert len(harness.files("voirie")) == 1


class TestExplanationsAfterThePriorityQueue:
    """Explanations are computed at delivery, so classifying a backlog stays fast."""

    def test_explained_at_delivery_not_at_classification(self, harness: Harness) -> None:
        """The classify stage publishes without evidence; the deliver stage adds it."""
        twin = ExplainingTwin(harness.taxonomy)
        worker = harness.worker(classifier=twin, explanations=True)
        body = _email("Lampadaire", "Le lampadaire est éteint.", "explained-1")
        worker.classify_batch([harness.submit(body)])
        assert twin.explained == []
        message = harness.broker.take(harness.topology.deliver)
        assert message is not None
        prediction, _ = decode_classification(message.headers[HEADER_CLASSIFICATION])
        assert prediction.evidence == ()
        worker.deliver_message(message)
        assert twin.explained == [_request_id(body)]
        assert len(harness.files("voirie")) == 1

    def test_no_explanation_from_another_model(self, harness: Harness) -> None:
        """After a hot reload, a request classified by the old model is not explained."""
        twin = ExplainingTwin(harness.taxonomy)
        body = _email("Lampadaire", "Le lampadaire est éteint.", "explained-2")
        harness.worker(classifier=KeywordClassifier(harness.taxonomy)).classify_batch(
            [harness.submit(body)]
        )
        twin.version = "a-newer-model"
        message = harness.broker.take(harness.topology.deliver)
        assert message is not None
        harness.worker(classifier=twin, explanations=True).deliver_message(message)
        assert twin.explained == []
        assert len(harness.files("voirie")) == 1
