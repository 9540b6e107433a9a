"""Routing: from a prediction and `config/routing.yaml` to destinations, with the reasons.

`route` is a pure function: no I/O, no clock, so every rule can be tested without a socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from classifiers.base import Prediction
from classifiers.taxonomy import Taxonomy
from worker.addresses import parse_address
from worker.config import StrictModel, load_yaml_model
from worker.errors import ConfigError

Threshold = Annotated[float, Field(ge=0.0, le=1.0)]


class MaildirDestination(StrictModel):
    """A local maildir; `path` relative to the `maildir_root` setting unless absolute."""

    type: Literal["maildir"]
    path: Path


class QueueDestination(StrictModel):
    """The per-service exchange `<prefix>.service.<department>` (needs `triage worker`)."""

    type: Literal["queue"]
    department: str = Field(pattern=r"^[a-z_]+$")


class SmtpDestination(StrictModel):
    """A service's own address: the request forwarded by SMTP with a French summary on top."""

    type: Literal["smtp"]
    to: str = Field(min_length=3)
    attach: Literal["rfc822", "inline"] = "rfc822"

    @field_validator("to")
    @classmethod
    def _one_address(cls, value: str) -> str:
        return parse_address(value)


class ImapFolderDestination(StrictModel):
    """A folder of a shared mailbox (an account under `imap` in the settings)."""

    type: Literal["imap_folder"]
    account: str = Field(min_length=1)
    folder: str = Field(min_length=1)


Destination = Annotated[
    MaildirDestination | QueueDestination | SmtpDestination | ImapFolderDestination,
    Field(discriminator="type"),
]


class DepartmentRoute(StrictModel):
    destinations: tuple[str, ...] = Field(min_length=1)
    review_threshold: Threshold | None = None


class RoutingConfig(StrictModel):
    """The routing file, validated; `check_taxonomy` ties it to the label set."""

    review_threshold: Threshold = 0.5
    review_destination: str
    escalation_destination: str
    escalate_urgencies: tuple[str, ...] = ("critique",)
    dead_letter_destination: str
    destinations: dict[str, Destination]
    departments: dict[str, DepartmentRoute]

    @model_validator(mode="after")
    def _destinations_exist(self) -> RoutingConfig:
        named = {
            "review_destination": [self.review_destination],
            "escalation_destination": [self.escalation_destination],
            "dead_letter_destination": [self.dead_letter_destination],
            **{
                f"departments.{k}.destinations": list(v.destinations)
                for k, v in self.departments.items()
            },
        }
        for key, names in named.items():
            for name in names:
                if name not in self.destinations:
                    raise ValueError(f"{key}: destination {name!r} is not declared in destinations")
        return self

    def check_taxonomy(self, taxonomy: Taxonomy, source: str) -> None:
        """Every department has a route, no route names an unknown department or urgency."""
        for key in taxonomy.department_keys:
            if key not in self.departments:
                raise ConfigError(source, f"departments.{key}", "department has no route")
        for key in self.departments:
            if key not in taxonomy.departments:
                raise ConfigError(source, f"departments.{key}", "not a department of the taxonomy")
        for name, destination in self.destinations.items():
            department = getattr(destination, "department", None)
            if department is not None and department not in taxonomy.departments:
                key = f"destinations.{name}.department"
                raise ConfigError(source, key, "not a department of the taxonomy")
        for urgency in self.escalate_urgencies:
            if urgency not in taxonomy.urgencies:
                raise ConfigError(source, "escalate_urgencies", f"unknown urgency {urgency!r}")


class RoutingDecision(BaseModel):
    """Where a request goes and why."""

    model_config = ConfigDict(frozen=True)

    destinations: tuple[str, ...]
    needs_review: bool
    escalated: bool
    threshold: float
    reasons: tuple[str, ...]

    @property
    def primary(self) -> str:
        """The destination that owns the request: the service's inbox, or the review queue."""
        return self.destinations[0]


def route(prediction: Prediction, config: RoutingConfig) -> RoutingDecision:
    """Decide the destinations of one classified request."""
    department = prediction.department.label
    rule = config.departments[department]
    threshold = (
        rule.review_threshold if rule.review_threshold is not None else config.review_threshold
    )
    scope = (
        f"departments.{department}.review_threshold"
        if rule.review_threshold is not None
        else "review_threshold"
    )
    confidence = prediction.department.confidence
    reasons: list[str] = []
    if confidence < threshold:
        destinations = [config.review_destination]
        reasons.append(f"department confidence {confidence:.2f} < {scope} {threshold:.2f}: review")
    else:
        destinations = list(rule.destinations)
        reasons.append(f"department {department} (confidence {confidence:.2f} >= {threshold:.2f})")
    escalated = prediction.urgency.label in config.escalate_urgencies
    if escalated:
        if config.escalation_destination not in destinations:
            destinations.append(config.escalation_destination)
        why = f"urgency {prediction.urgency.label}"
        if prediction.safety_rules:
            why += f" (safety rule {', '.join(prediction.safety_rules)})"
        reasons.append(f"{why}: escalated to {config.escalation_destination}")
    return RoutingDecision(
        destinations=tuple(destinations),
        needs_review=confidence < threshold,
        escalated=escalated,
        threshold=threshold,
        reasons=tuple(reasons),
    )


def queue_departments(config: RoutingConfig) -> list[str]:
    """Departments that have a per-service queue destination (their exchanges are declared)."""
    return sorted(
        {d.department for d in config.destinations.values() if isinstance(d, QueueDestination)}
    )


def load_routing(path: Path, taxonomy: Taxonomy) -> RoutingConfig:
    """Load, validate and check the routing file against the taxonomy."""
    config = load_yaml_model(path, RoutingConfig)
    config.check_taxonomy(taxonomy, str(path))
    return config
