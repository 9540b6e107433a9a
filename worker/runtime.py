"""Assembling the configured components: taxonomy, rules, routing, model, deliverers, pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from classifiers import Classifier, Taxonomy, load_classifier, load_taxonomy
from classifiers.registry import resolve_model_dir
from classifiers.safety import SafetyRules, load_safety_rules
from worker.acknowledgement import AcknowledgementConfig, Acknowledger, load_acknowledgements
from worker.broker import Broker, Topology
from worker.config import ImapAccount, Settings
from worker.decision_log import DecisionLog
from worker.delivery import build_deliverers
from worker.delivery.smtp import SmtpSender
from worker.errors import ConfigError
from worker.feedback import FeedbackStore
from worker.forward_back import ForwardBackReader
from worker.idempotency import DeliveryStore
from worker.imap import account_password
from worker.pipeline import Pipeline
from worker.routing import ImapFolderDestination, RoutingConfig, SmtpDestination, load_routing


@dataclass(frozen=True)
class Configuration:
    """The validated YAML configuration: loading it is cheap and needs no model."""

    settings: Settings
    taxonomy: Taxonomy
    safety: SafetyRules
    routing: RoutingConfig
    acknowledgements: AcknowledgementConfig | None = None

    @property
    def display_names(self) -> dict[str, str]:
        """Department key -> the French name agents and citizens read."""
        return {key: label.display_name for key, label in self.taxonomy.departments.items()}


def active_model_dir(settings: Settings) -> Path:
    """The pinned `model_dir`, else the registry's current version (the shipped `default`)."""
    return resolve_model_dir(settings.model_dir, settings.models_root)


def topology_of(settings: Settings) -> Topology:
    return Topology(settings.broker.prefix, settings.worker.retry_delays)


def load_configuration(settings: Settings) -> Configuration:
    """Load and cross-check the configuration files; raises `ConfigError` on any problem."""
    taxonomy = load_taxonomy(settings.taxonomy_file)
    routing = load_routing(settings.routing_file, taxonomy)
    for name, destination in routing.destinations.items():
        account = getattr(destination, "account", None)
        if account is not None and account not in settings.imap:
            problem = f"IMAP account {account!r} is not declared under `imap` in the settings"
            raise ConfigError(str(settings.routing_file), f"destinations.{name}.account", problem)
    for account in settings.intake.imap_accounts:
        if account not in settings.imap:
            raise ConfigError(
                "settings", "intake.imap_accounts", f"unknown IMAP account {account!r}"
            )
    if settings.feedback.forward_address and not settings.own_addresses:
        problem = "a forward-back address needs `own_addresses`: only agents may correct"
        raise ConfigError("settings", "feedback.forward_address", problem)
    acknowledgements = None
    if settings.acknowledgements_file.exists():
        acknowledgements = load_acknowledgements(settings.acknowledgements_file, taxonomy)
    return Configuration(
        settings=settings,
        taxonomy=taxonomy,
        safety=load_safety_rules(settings.safety_file),
        routing=routing,
        acknowledgements=acknowledgements,
    )


def _needs_smtp(configuration: Configuration) -> bool:
    ack = configuration.acknowledgements
    smtp_destination = any(
        isinstance(d, SmtpDestination) for d in configuration.routing.destinations.values()
    )
    return smtp_destination or (ack is not None and ack.enabled)


def _imap_credentials(configuration: Configuration) -> dict[str, tuple[ImapAccount, str]]:
    """Accounts that IMAP folder destinations use, with their passwords from the environment."""
    settings = configuration.settings
    used = {
        d.account
        for d in configuration.routing.destinations.values()
        if isinstance(d, ImapFolderDestination)
    }
    return {
        name: (settings.imap[name], account_password(name, settings.imap[name])) for name in used
    }


def build_pipeline(
    configuration: Configuration,
    *,
    model_dir: Path | None = None,
    maildir_root: Path | None = None,
    classifier: Classifier | None = None,
    broker: Broker | None = None,
    topology: Topology | None = None,
    store: DeliveryStore | None = None,
    explanations: bool | None = None,
    feedback: FeedbackStore | None = None,
) -> Pipeline:
    """The embedded pipeline for `configuration`, loading the model unless one is given.

    `explanations` None follows `settings.inference.explanations`. With a `feedback` store, each
    delivered request's pseudonymised text is remembered (unless `feedback.remember_requests` is
    off) and forward-back corrections are recorded.
    """
    settings = configuration.settings
    if classifier is None:
        classifier = load_classifier(
            model_dir or active_model_dir(settings), configuration.taxonomy, settings.inference
        )
    if explanations is None:
        explanations = settings.inference.explanations
    smtp = SmtpSender(settings.smtp) if _needs_smtp(configuration) else None
    acknowledger = None
    ack = configuration.acknowledgements
    if ack is not None and ack.enabled and smtp is not None:
        names = configuration.display_names
        acknowledger = Acknowledger(ack, smtp, names, settings.own_addresses, store)
    deliverers = build_deliverers(
        configuration.routing,
        maildir_root or settings.maildir_path,
        broker,
        topology,
        smtp=smtp,
        imap=_imap_credentials(configuration),
        display_names=configuration.display_names,
    )
    return Pipeline(
        classifier,
        configuration.safety,
        configuration.routing,
        deliverers,
        DecisionLog(settings.decision_log_path),
        limits=settings.limits,
        store=store,
        acknowledger=acknowledger,
        explanations=explanations,
        feedback=feedback,
        remember_requests=settings.feedback.remember_requests,
        forward_back=forward_back_reader(configuration),
    )


def forward_back_reader(configuration: Configuration) -> ForwardBackReader | None:
    """The reader of forward-back corrections, when an address is configured."""
    settings = configuration.settings
    if settings.feedback.forward_address is None:
        return None
    return ForwardBackReader(
        settings.feedback.forward_address, settings.own_addresses, configuration.taxonomy
    )
