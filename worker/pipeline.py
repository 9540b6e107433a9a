"""parse → classify → route → deliver, for a batch of raw requests.

The same steps serve the embedded default (`process`, used by the demo and local runs) and the
RabbitMQ worker, which calls `parse`, `classify`, `deliver` and `dead_letter` itself and maps
their errors onto acks, retries and its dead-letter queue. Nothing here loses a request: one that
cannot be parsed, classified or delivered is dead-lettered with the reason, and if even that
fails the outcome says so and the caller keeps the input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import structlog

from classifiers.base import Classifier, LabelScores, Prediction, explain
from classifiers.safety import SafetyRules
from classifiers.text import classifier_input
from worker.acknowledgement import Acknowledger
from worker.decision_log import DecisionLog, DecisionRecord
from worker.delivery.base import Deliverer, Delivery, Receipt
from worker.delivery.message import render_dead_letter, render_triaged
from worker.errors import DeliveryError, ParseError, TransientError, safe_reason
from worker.feedback import FeedbackStore
from worker.forward_back import ForwardBack, ForwardBackReader
from worker.idempotency import DeliveryStore
from worker.parsing import ParseLimits, parse_raw
from worker.request import RawRequest, Request
from worker.routing import RoutingConfig, RoutingDecision, route

log = structlog.get_logger("worker.pipeline")


class Status(StrEnum):
    DELIVERED = "delivered"
    REVIEW = "review"
    DEAD_LETTER = "dead_letter"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """What became of one raw request."""

    request_id: str
    origin: str
    status: Status
    prediction: Prediction | None = None
    decision: RoutingDecision | None = None
    receipts: tuple[Receipt, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Classified:
    request: Request
    prediction: Prediction
    decision: RoutingDecision


@dataclass(frozen=True)
class Taken:
    """A request as received: what to classify and deliver, and the correction it carries.

    For a forward-back, `raw` and `request` are the original request being re-routed.
    """

    raw: RawRequest
    request: Request
    correction: ForwardBack | None = None


def corrected(prediction: Prediction, correction: ForwardBack) -> Prediction:
    """The prediction with an agent's labels: certain, the model's probabilities kept."""
    department = LabelScores(
        label=correction.department,
        confidence=1.0,
        probabilities=prediction.department.probabilities,
    )
    update: dict[str, object] = {"department": department}
    if correction.urgency is not None:
        update["urgency"] = LabelScores(
            label=correction.urgency, confidence=1.0, probabilities=prediction.urgency.probabilities
        )
    return prediction.model_copy(update=update)


class Pipeline:
    """The triage steps over a classifier, rules, routing, deliverers and the decision log."""

    def __init__(
        self,
        classifier: Classifier,
        safety: SafetyRules,
        routing: RoutingConfig,
        deliverers: Mapping[str, Deliverer],
        decisions: DecisionLog,
        *,
        limits: ParseLimits | None = None,
        delivery_attempts: int = 3,
        retry_delay: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        store: DeliveryStore | None = None,
        acknowledger: Acknowledger | None = None,
        explanations: bool = False,
        feedback: FeedbackStore | None = None,
        remember_requests: bool = True,
        forward_back: ForwardBackReader | None = None,
    ) -> None:
        missing = set(routing.destinations) - set(deliverers)
        if missing:
            raise ValueError(f"no deliverer for destinations {sorted(missing)}")
        self.classifier = classifier
        self.safety = safety
        self.routing = routing
        self.deliverers = deliverers
        self.decisions = decisions
        self.limits = limits or ParseLimits()
        self.delivery_attempts = delivery_attempts
        self.retry_delay = retry_delay
        self._sleep = sleep
        self.store = store
        self.acknowledger = acknowledger
        self.explanations = explanations
        self.feedback = feedback
        self.remember_requests = remember_requests
        self.forward_back = forward_back

    def parse(self, raw: RawRequest) -> Request:
        request = parse_raw(raw, self.limits)
        log.info(
            "request.parsed",
            request_id=request.id,
            channel=request.channel.value,
            attachments=len(request.attachments),
            warnings=len(request.warnings),
        )
        return request

    def take(self, raw: RawRequest) -> Taken:
        """Parse a request; a forward-back yields its original and the agent's correction."""
        request = self.parse(raw)
        reader = self.forward_back
        if reader is None or not reader.addressed_to_us(raw):
            return Taken(raw, request)
        correction = reader.read(raw, request)
        if correction.original is raw:
            return Taken(raw, request, correction)
        return Taken(correction.original, self.parse(correction.original), correction)

    def classify(
        self,
        requests: Sequence[Request],
        corrections: Sequence[ForwardBack | None] | None = None,
        *,
        with_evidence: bool = True,
    ) -> list[Classified]:
        """Classify a batch in one model call, then apply the safety rules and route each.

        A request with a correction (a forward-back) gets the agent's labels, and the correction
        is recorded in the feedback store. `with_evidence=False` leaves explanations to
        `add_evidence` (the RabbitMQ worker computes them after the priority queue).
        """
        classifier = self.classifier  # read once: a hot reload may swap it during the batch
        predictions = classifier.predict(requests)
        if self.explanations and with_evidence:
            predictions = explain(classifier, requests, predictions)
        classified = []
        fixes = corrections or [None] * len(requests)
        for request, prediction, correction in zip(requests, predictions, fixes, strict=True):
            prediction = self.safety.apply(prediction, classifier_input(request))
            if correction is not None:
                self._record_correction(request, prediction, correction)
                prediction = corrected(prediction, correction)
            decision = route(prediction, self.routing)
            if correction is not None:
                reasons = (*decision.reasons, "corrected by an agent (forward-back)")
                decision = decision.model_copy(update={"reasons": reasons})
            log.info(
                "request.classified",
                request_id=request.id,
                department=prediction.department.label,
                urgency=prediction.urgency.label,
                confidence=round(prediction.department.confidence, 3),
                safety_rules=list(prediction.safety_rules),
                destinations=list(decision.destinations),
                needs_review=decision.needs_review,
            )
            classified.append(Classified(request, prediction, decision))
        return classified

    def add_evidence(self, request: Request, prediction: Prediction) -> Prediction:
        """`prediction` with its explanation, when explanations are on and the model that made
        it still serves; an explanation that fails leaves the request undelayed, without one."""
        classifier = self.classifier
        if (
            not self.explanations
            or prediction.evidence
            or classifier.version != prediction.model_version
        ):
            return prediction
        try:
            return explain(classifier, [request], [prediction])[0]
        except Exception as exc:  # an explanation is a courtesy: never lose a request over it
            log.warning(
                "request.explain_failed", request_id=request.id, error_class=type(exc).__name__
            )
            return prediction

    def _record_correction(
        self, request: Request, prediction: Prediction, correction: ForwardBack
    ) -> None:
        """Store the agent's labels against the request they correct (or this one)."""
        request_id = correction.corrected_id or request.id
        if self.feedback is None:
            log.warning("feedback.not_recorded", request_id=request_id, why="no feedback store")
            return
        remembered = self.feedback.remembered(request_id)
        self.feedback.correct(
            request_id,
            department=correction.department,
            urgency=correction.urgency,
            source="forward",
            text=remembered.text if remembered else classifier_input(request),
            predicted_department=(
                remembered.department if remembered else prediction.department.label
            ),
            predicted_urgency=remembered.urgency if remembered else prediction.urgency.label,
            model_version=remembered.model_version if remembered else prediction.model_version,
        )

    def deliver(self, raw: RawRequest, item: Classified) -> tuple[Receipt, ...]:
        """Deliver to every destination and record the decision; raises `DeliveryError`."""
        delivery = Delivery(
            request_id=item.request.id,
            message=render_triaged(raw, item.request, item.prediction, item.decision),
            raw=raw,
            request=item.request,
            prediction=item.prediction,
            decision=item.decision,
        )
        receipts = []
        for name in item.decision.destinations:
            done = self.store.delivered(item.request.id, name) if self.store else None
            if done is not None:
                receipts.append(Receipt(name, done, duplicate=True))
                continue
            receipt = self.deliverers[name].deliver(delivery)
            if self.store is not None:
                self.store.record(item.request.id, name, receipt.location)
            log.info(
                "request.delivered",
                request_id=item.request.id,
                destination=name,
                duplicate=receipt.duplicate,
            )
            receipts.append(receipt)
        self.decisions.record(self._record(item, "delivered"))
        if self.feedback is not None and self.remember_requests:
            self.feedback.remember(
                item.request.id,
                classifier_input(item.request),
                department=item.prediction.department.label,
                urgency=item.prediction.urgency.label,
                model_version=item.prediction.model_version,
                channel=item.request.channel.value,
                destinations=item.decision.destinations,
                review=item.decision.needs_review,
            )
        if self.acknowledger is not None:  # never fails the request; at most one per request
            self.acknowledger.acknowledge(delivery)
        return tuple(receipts)

    def dead_letter(self, raw: RawRequest, request_id: str, error: Exception) -> Receipt:
        """Put a request aside for an agent, with the reason; raises `DeliveryError` if it can't."""
        # Logs and the decision log get the safe reason; the agent's copy gets the full text.
        reason = safe_reason(error)
        destination = self.routing.dead_letter_destination
        detail = str(error) or type(error).__name__
        message = render_dead_letter(raw, request_id, detail, type(error).__name__)
        receipt = self.deliverers[destination].deliver(Delivery(request_id, message, raw=raw))
        self.record_dead_letter(raw, request_id, reason, type(error).__name__, destination)
        return receipt

    def record_dead_letter(
        self, raw: RawRequest, request_id: str, reason: str, error_class: str, destination: str
    ) -> None:
        """Log and record a request set aside; `reason` must hold no content."""
        log.warning(
            "request.dead_lettered",
            request_id=request_id,
            destination=destination,
            reason=reason,
            error_class=error_class,
        )
        self.decisions.record(
            DecisionRecord(
                request_id=request_id,
                time=datetime.now(UTC),
                channel=raw.channel.value,
                outcome="dead_letter",
                destinations=(destination,),
                error=reason,
                error_class=error_class,
            )
        )

    def _record(self, item: Classified, outcome: str) -> DecisionRecord:
        prediction, decision = item.prediction, item.decision
        return DecisionRecord(
            request_id=item.request.id,
            time=datetime.now(UTC),
            channel=item.request.channel.value,
            outcome=outcome,
            model_version=prediction.model_version,
            department=prediction.department.label,
            urgency=prediction.urgency.label,
            model_urgency=prediction.model_urgency,
            confidence={
                "department": prediction.department.confidence,
                "urgency": prediction.urgency.confidence,
            },
            probabilities={
                "department": prediction.department.probabilities,
                "urgency": prediction.urgency.probabilities,
            },
            safety_rules=prediction.safety_rules,
            destinations=decision.destinations,
            needs_review=decision.needs_review,
            escalated=decision.escalated,
            reasons=decision.reasons,
        )

    # The embedded default: everything in-process, transient failures retried in place.

    def process(self, raws: Sequence[RawRequest]) -> list[Outcome]:
        """Run a batch end to end; one outcome per input, in order."""
        outcomes: dict[int, Outcome] = {}
        parsed: list[tuple[int, Taken]] = []
        for index, raw in enumerate(raws):
            try:
                parsed.append((index, self.take(raw)))
            except ParseError as exc:
                outcomes[index] = self._give_up(raw, raw.fallback_id, exc)
        if parsed:
            try:
                classified = self.classify(
                    [taken.request for _, taken in parsed],
                    [taken.correction for _, taken in parsed],
                )
            except Exception as exc:  # a model failure must not lose the batch
                log.error("batch.classification_failed", error_class=type(exc).__name__)
                for index, taken in parsed:
                    outcomes[index] = self._give_up(taken.raw, taken.request.id, exc)
            else:
                for (index, taken), item in zip(parsed, classified, strict=True):
                    outcomes[index] = self._deliver_with_retries(taken.raw, item)
        return [outcomes[index] for index in range(len(raws))]

    def _deliver_with_retries(self, raw: RawRequest, item: Classified) -> Outcome:
        error: DeliveryError | None = None
        for attempt in range(1, self.delivery_attempts + 1):
            try:
                receipts = self.deliver(raw, item)
            except DeliveryError as exc:
                error = exc
                log.warning(
                    "request.delivery_failed",
                    request_id=item.request.id,
                    attempt=attempt,
                    transient=exc.transient,
                    error_class=type(exc).__name__,
                )
                if not isinstance(exc, TransientError):
                    break
                if attempt < self.delivery_attempts:
                    self._sleep(self.retry_delay * 2 ** (attempt - 1))
                continue
            status = Status.REVIEW if item.decision.needs_review else Status.DELIVERED
            return Outcome(
                item.request.id, raw.origin, status, item.prediction, item.decision, receipts
            )
        assert error is not None
        outcome = self._give_up(raw, item.request.id, error)
        return Outcome(
            outcome.request_id, raw.origin, outcome.status, item.prediction, item.decision,
            outcome.receipts, outcome.error,
        )  # fmt: skip

    def _give_up(self, raw: RawRequest, request_id: str, error: Exception) -> Outcome:
        try:
            receipt = self.dead_letter(raw, request_id, error)
        except DeliveryError as exc:
            log.error(
                "request.dead_letter_failed", request_id=request_id, error_class=type(exc).__name__
            )
            return Outcome(request_id, raw.origin, Status.FAILED, error=f"{error}; then {exc}")
        reason = safe_reason(error)
        return Outcome(
            request_id, raw.origin, Status.DEAD_LETTER, receipts=(receipt,), error=reason
        )
