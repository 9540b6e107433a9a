"""Acknowledgements: a short French reply telling citizens their request arrived, and its reference.

Configured by `config/acknowledgements.yaml` (off unless `enabled: true`, then per department).
`should_acknowledge` is a pure policy: no reply to machines (auto-replies, lists, bulk mail, our
own forwards), to no-reply addresses or to the mairie's own addresses, none for a department
that does not want them. A critique request gets a template that also gives the emergency
numbers, whatever its department says when `critique.always` is set. `Acknowledger` sends at
most one acknowledgement per request, remembered in the worker's `DeliveryStore`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from string import Formatter
from typing import Annotated

import structlog
from pydantic import AfterValidator, Field, field_validator

from classifiers.base import Prediction
from classifiers.taxonomy import Taxonomy
from worker.addresses import domain_of, parse_address
from worker.config import StrictModel, load_yaml_model
from worker.delivery.base import Delivery
from worker.delivery.message import one_line
from worker.delivery.smtp import MESSAGE_ID_DOMAIN, SmtpSender
from worker.errors import ConfigError, DeliveryError, PermanentError
from worker.idempotency import DeliveryStore
from worker.request import Request
from worker.routing import RoutingDecision

log = structlog.get_logger("worker.acknowledgement")

ACKNOWLEDGEMENT_DESTINATION = "acknowledgement"
"""The destination name under which the `DeliveryStore` remembers a request's acknowledgement."""
SENT = "sent"
PLACEHOLDERS = ("reference", "service", "delai")
DEFAULT_NEVER_TO = (
    "no-reply", "noreply", "ne-pas-repondre", "nepasrepondre", "mailer-daemon", "postmaster",
    "bounce",
)  # fmt: skip
_IGNORED_IN_MATCHING = str.maketrans("", "", "-_.")


def _template(value: str) -> str:
    for _, field, spec, conversion in Formatter().parse(value):
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            allowed = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{field}}}: use {allowed}")
    return value


Template = Annotated[str, Field(min_length=1), AfterValidator(_template)]
SubjectTemplate = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[^\r\n]*$"), AfterValidator(_template)
]
Phrase = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[^\r\n]*$")]


class DepartmentAcknowledgement(StrictModel):
    """Whether a department's requests are acknowledged, and the delay the reply announces."""

    enabled: bool = False
    delay: Phrase = "dans les meilleurs délais"


class ReviewAcknowledgement(StrictModel):
    """Requests the model is unsure about: the reply must not name a service that may be wrong."""

    enabled: bool = True
    service: Phrase = "les services de la mairie"
    delay: Phrase = "dans les meilleurs délais"


class CritiqueTemplate(StrictModel):
    """The reply to a critique request, which also gives the emergency numbers."""

    always: bool = Field(
        default=True, description="Also for departments whose acknowledgements are off."
    )
    subject: SubjectTemplate
    body: Template


class AcknowledgementConfig(StrictModel):
    """`config/acknowledgements.yaml`, validated."""

    enabled: bool = False
    from_name: Phrase | None = None
    reply_to: str | None = Field(default=None, description="Where a citizen's reply goes.")
    subject: SubjectTemplate
    body: Template
    critique: CritiqueTemplate
    review: ReviewAcknowledgement = Field(default_factory=ReviewAcknowledgement)
    departments: dict[str, DepartmentAcknowledgement] = Field(default_factory=dict)
    never_to: tuple[str, ...] = DEFAULT_NEVER_TO

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return None if value is None else parse_address(value)

    @field_validator("never_to")
    @classmethod
    def _never_to(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not _normalised(pattern) for pattern in value):
            raise ValueError("patterns must hold letters or digits")
        return value

    def check_taxonomy(self, taxonomy: Taxonomy, source: str) -> None:
        """Every department named here is a department of the taxonomy."""
        for key in self.departments:
            if key not in taxonomy.departments:
                raise ConfigError(source, f"departments.{key}", "not a department of the taxonomy")


def load_acknowledgements(path: Path, taxonomy: Taxonomy) -> AcknowledgementConfig:
    """Load, validate and check the acknowledgement file against the taxonomy."""
    config = load_yaml_model(path, AcknowledgementConfig)
    config.check_taxonomy(taxonomy, str(path))
    return config


# --- policy --------------------------------------------------------------------------------------


def _normalised(value: str) -> str:
    return value.lower().translate(_IGNORED_IN_MATCHING)


def is_own_address(address: str, own_addresses: Sequence[str]) -> bool:
    """Whether `address` is one of the mairie's: an exact entry, or under an `@domain` entry."""
    lowered = address.lower()
    domain = domain_of(address)
    for entry in own_addresses:
        entry = entry.strip().lower()
        if not entry:
            continue
        if "@" not in entry or entry.startswith("@"):
            own = entry.lstrip("@")
            if domain == own or domain.endswith("." + own):
                return True
        elif lowered == entry:
            return True
    return False


def is_no_reply(address: str, patterns: Sequence[str]) -> bool:
    """Whether `address` holds a pattern, ignoring case, dots, dashes and underscores."""
    normalised = _normalised(address)
    return any(_normalised(pattern) in normalised for pattern in patterns if _normalised(pattern))


def _critique(prediction: Prediction) -> bool:
    return prediction.urgency.label == "critique"


def _unsure(decision: RoutingDecision | None) -> bool:
    return decision is not None and decision.needs_review


def should_acknowledge(
    request: Request,
    prediction: Prediction,
    config: AcknowledgementConfig,
    own_addresses: Sequence[str],
    decision: RoutingDecision | None = None,
) -> str | None:
    """None when an acknowledgement must be sent, else why not (no personal data in it)."""
    if not config.enabled:
        return "acknowledgements are disabled"
    if not request.sender.address:
        return "no sender address"
    if request.automated:
        return "automated sender"  # request.automated quotes a header: kept out of logs
    try:
        address = parse_address(request.sender.address)
    except ValueError:
        return "sender address not usable"
    if is_own_address(address, own_addresses):
        return "one of the mairie's own addresses"
    if is_no_reply(address, config.never_to):
        return "no-reply address"
    if _unsure(decision):
        enabled, scope = config.review.enabled, "requests in review"
    else:
        department = prediction.department.label
        entry = config.departments.get(department)
        enabled, scope = entry is not None and entry.enabled, f"department {department}"
    if not enabled and not (_critique(prediction) and config.critique.always):
        return f"acknowledgements are off for {scope}"
    return None


# --- rendering -----------------------------------------------------------------------------------


def render_acknowledgement(
    request: Request,
    prediction: Prediction,
    config: AcknowledgementConfig,
    display_names: Mapping[str, str],
    sender: str,
    decision: RoutingDecision | None = None,
) -> EmailMessage:
    """The French acknowledgement of one request; `PermanentError` without a usable address."""
    try:
        to_address = parse_address(request.sender.address or "")
        from_address = parse_address(sender)
    except ValueError as exc:
        raise PermanentError(f"acknowledgement: {exc}") from exc
    department = prediction.department.label
    if _unsure(decision):
        service, delay = config.review.service, config.review.delay
    else:
        entry = config.departments.get(department)
        service = display_names.get(department, department)
        delay = entry.delay if entry is not None else config.review.delay
    values = {"reference": request.id, "service": service, "delai": delay}
    template = config.critique if _critique(prediction) else config

    message = EmailMessage(policy=SMTP)
    message["From"] = Address(
        display_name=one_line(config.from_name or "", 120), addr_spec=from_address
    )
    message["To"] = Address(addr_spec=to_address)
    message["Subject"] = one_line(template.subject.format_map(values), 250)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<{request.id}.accuse@{MESSAGE_ID_DOMAIN}>"
    if config.reply_to:
        message["Reply-To"] = Address(addr_spec=config.reply_to)
    # The Request does not keep the original Message-ID, so no In-Reply-To/References here.
    # RFC 3834: an auto-reply says so, and nobody should auto-reply to it (Exchange: the second).
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Triage-Request-Id"] = one_line(request.id, 100)  # our intake skips it
    message.set_content(template.body.format_map(values), cte="quoted-printable")
    return message


# --- sending -------------------------------------------------------------------------------------


class Acknowledger:
    """Sends the acknowledgements, at most one per request.

    A failure to acknowledge never fails the request: it is logged and returned. A refusal (5xx)
    is remembered so that a redelivered request does not bounce again; a transient failure is
    not, so a redelivery tries once more.
    """

    def __init__(
        self,
        config: AcknowledgementConfig,
        sender: SmtpSender,
        display_names: Mapping[str, str],
        own_addresses: Sequence[str],
        store: DeliveryStore | None,
    ) -> None:
        self.config = config
        self.sender = sender
        self.display_names = dict(display_names)
        # What we send from is ours too: never acknowledge our own messages.
        self.own_addresses = (*own_addresses, sender.settings.sender)
        self.store = store

    def acknowledge(self, delivery: Delivery) -> str:
        """Send the acknowledgement of a classified request: "sent", or why it was not."""
        outcome = self._acknowledge(delivery)
        if outcome == SENT:
            log.info("acknowledgement.sent", request_id=delivery.request_id)
        else:
            log.info("acknowledgement.not_sent", request_id=delivery.request_id, why=outcome)
        return outcome

    def _acknowledge(self, delivery: Delivery) -> str:
        request, prediction = delivery.request, delivery.prediction
        if request is None or prediction is None:
            return "not classified"
        reason = should_acknowledge(
            request, prediction, self.config, self.own_addresses, delivery.decision
        )
        if reason is not None:
            return reason
        if self.store is not None and self.store.delivered(request.id, ACKNOWLEDGEMENT_DESTINATION):
            return "already acknowledged"
        try:
            message = render_acknowledgement(
                request,
                prediction,
                self.config,
                self.display_names,
                self.sender.settings.sender,
                delivery.decision,
            )
            self.sender.send(message, [str(request.sender.address)])
        except DeliveryError as exc:
            if not exc.transient and self.store is not None:
                self.store.record(request.id, ACKNOWLEDGEMENT_DESTINATION, "refused")
            kind = "transient" if exc.transient else "permanent"
            return f"failed, {kind}: {exc}"
        if self.store is not None:
            self.store.record(request.id, ACKNOWLEDGEMENT_DESTINATION, "smtp")
        return SENT
