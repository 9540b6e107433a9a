"""Hot reload: a running worker follows the model registry's `current` pointer.

`triage model promote` (or `triage retrain` when its gate passes) rewrites the pointer file
atomically; each worker polls it, loads the new version beside the old one, and swaps the
pipeline's classifier between two batches. Consuming never stops, so no message waits or is
lost: a batch is classified wholly by one model, and every decision records the version used.
A version that fails to load is logged and the worker keeps the model it has.

Workers on other servers follow the same pointer when `models_root` is on a shared filesystem.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

from classifiers import Classifier
from classifiers.registry import ModelRegistry
from worker.errors import ConfigError, ModelError
from worker.pipeline import Pipeline

log = structlog.get_logger("worker.model_watch")


class ModelWatcher:
    """Swaps `pipeline.classifier` when the registry's pointer changes; call `poll` often."""

    def __init__(
        self,
        registry: ModelRegistry,
        pipeline: Pipeline,
        load: Callable[[Path], Classifier],
        on_swap: Callable[[str, str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.pipeline = pipeline
        self._load = load
        self._on_swap = on_swap
        self._state = registry.pointer_state()

    def poll(self) -> bool:
        """Check the pointer once; True when a new model now serves."""
        state = self.registry.pointer_state()
        if state == self._state:
            return False
        self._state = state  # a version that fails to load is not retried until the next change
        try:
            classifier = self._load(self.registry.current_dir())
        except (ModelError, ConfigError, OSError) as exc:
            log.error("model.reload_failed", pointer=state, error_class=type(exc).__name__)
            return False
        previous = self.pipeline.classifier.version
        self.pipeline.classifier = classifier  # one attribute store: atomic between batches
        log.info("model.reloaded", version=classifier.version, previous=previous)
        if self._on_swap is not None:
            self._on_swap(previous, classifier.version)
        return True
