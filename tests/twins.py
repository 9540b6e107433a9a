"""In-memory twins shared by unit and integration tests: a keyword classifier, flaky targets."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from classifiers.base import Prediction
from classifiers.taxonomy import Taxonomy
from tests.conftest import make_prediction
from worker.delivery.base import Deliverer, Delivery, Receipt
from worker.request import Request


class KeywordClassifier:
    """An in-memory classifier twin: the department and urgency are read off keywords."""

    version = "keyword-twin"

    def __init__(self, taxonomy: Taxonomy, *, fail: bool = False) -> None:
        self.taxonomy = taxonomy
        self.fail = fail
        self.batches: list[int] = []

    def predict(self, requests: Sequence[Request]) -> list[Prediction]:
        self.batches.append(len(requests))
        if self.fail:
            raise RuntimeError("model crashed")
        predictions = []
        for request in requests:
            text = f"{request.subject} {request.classifier_text}".lower()
            department = "voirie" if "lampadaire" in text or "trottoir" in text else "accueil"
            confidence = 0.2 if "peut-être" in text else 0.9
            urgency = "critique" if "danger" in text else "normale"
            predictions.append(
                make_prediction(
                    department,
                    urgency,
                    confidence=confidence,
                    request_id=request.id,
                    taxonomy=self.taxonomy,
                ).model_copy(update={"model_version": self.version})
            )
        return predictions


class FlakyDeliverer:
    """Fails a given number of times with a given error, then delegates to a real deliverer."""

    def __init__(self, inner: Deliverer, failures: int, error: type[Exception]) -> None:
        self.name = inner.name
        self.inner = inner
        self.failures = failures
        self.error = error
        self.calls = 0

    def deliver(self, delivery: Delivery) -> Receipt:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("target unavailable")
        return self.inner.deliver(delivery)


class SlowClassifier(KeywordClassifier):
    """The keyword twin, after sleeping `seconds` per batch (a long model call)."""

    def __init__(self, taxonomy: Taxonomy, seconds: float) -> None:
        super().__init__(taxonomy)
        self.seconds = seconds

    def predict(self, requests: Sequence[Request]) -> list[Prediction]:
        time.sleep(self.seconds)
        return super().predict(requests)


class RecordingDeliverer:
    """Delegates to a real deliverer after `delay` seconds and records the order of requests."""

    def __init__(self, inner: Deliverer, delay: float = 0.0) -> None:
        self.name = inner.name
        self.inner = inner
        self.delay = delay
        self.order: list[str] = []
        self._lock = threading.Lock()

    def deliver(self, delivery: Delivery) -> Receipt:
        time.sleep(self.delay)
        receipt = self.inner.deliver(delivery)
        with self._lock:
            self.order.append(delivery.request_id)
        return receipt
