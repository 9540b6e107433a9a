"""Assembling the configured components: taxonomy, rules, routing, model, deliverers, pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from classifiers import Classifier, Taxonomy, load_classifier, load_taxonomy
from classifiers.safety import SafetyRules, load_safety_rules
from worker.broker import Broker, Topology
from worker.config import Settings
from worker.decision_log import DecisionLog
from worker.delivery import build_deliverers
from worker.idempotency import DeliveryStore
from worker.pipeline import Pipeline
from worker.routing import RoutingConfig, load_routing


@dataclass(frozen=True)
class Configuration:
    """The validated YAML configuration: loading it is cheap and needs no model."""

    settings: Settings
    taxonomy: Taxonomy
    safety: SafetyRules
    routing: RoutingConfig


def topology_of(settings: Settings) -> Topology:
    return Topology(settings.broker.prefix, settings.worker.retry_delays)


def load_configuration(settings: Settings) -> Configuration:
    """Load and cross-check the configuration files; raises `ConfigError` on any problem."""
    taxonomy = load_taxonomy(settings.taxonomy_file)
    return Configuration(
        settings=settings,
        taxonomy=taxonomy,
        safety=load_safety_rules(settings.safety_file),
        routing=load_routing(settings.routing_file, taxonomy),
    )


def build_pipeline(
    configuration: Configuration,
    *,
    model_dir: Path | None = None,
    maildir_root: Path | None = None,
    classifier: Classifier | None = None,
    broker: Broker | None = None,
    topology: Topology | None = None,
    store: DeliveryStore | None = None,
) -> Pipeline:
    """The embedded pipeline for `configuration`, loading the model unless one is given."""
    settings = configuration.settings
    if classifier is None:
        classifier = load_classifier(model_dir or settings.model_dir, configuration.taxonomy)
    return Pipeline(
        classifier,
        configuration.safety,
        configuration.routing,
        build_deliverers(
            configuration.routing, maildir_root or settings.maildir_path, broker, topology
        ),
        DecisionLog(settings.decision_log_path),
        limits=settings.limits,
        store=store,
    )
