"""Settings and the loading of the YAML configuration files under `config/`.

Every setting has a default that works for the embedded demo. A settings file given with
`--config FILE` overrides the defaults, and `TRIAGE_*` environment variables override the file
(nested keys with a double underscore: `TRIAGE_LIMITS__MAX_PARTS=50`). Secrets are read from the
environment only. Any invalid value stops start-up with a `ConfigError` naming the file (or the
environment variable), the key and the problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.addresses import parse_address
from worker.errors import ConfigError
from worker.parsing.limits import ParseLimits

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "TRIAGE_"

ModelT = TypeVar("ModelT", bound=BaseModel)


class BrokerSettings(BaseModel):
    """RabbitMQ connection and topology. Put credentials in TRIAGE_BROKER__URL, not in a file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(default="amqp://guest:guest@127.0.0.1:5672/%2F", repr=False)
    prefix: str = Field(default="triage", pattern=r"^[A-Za-z0-9_.-]+$")
    heartbeat: int = Field(default=60, ge=0, description="Seconds; 0 disables heartbeats.")
    connect_timeout: float = Field(default=10.0, gt=0)
    publish_timeout: float = Field(default=30.0, gt=0, description="Wait for a publisher confirm.")
    reconnect_max_delay: float = Field(default=30.0, gt=0)


class WorkerSettings(BaseModel):
    """How `triage worker` consumes: micro-batches, delivery threads, retries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_wait_ms: int = Field(default=50, ge=0, description="Wait at most this for a full batch.")
    prefetch: int | None = Field(default=None, gt=0, description="Default: the batch size.")
    workers: int = Field(default=2, gt=0, le=64, description="Delivery threads.")
    retry_delays: tuple[float, ...] = Field(
        default=(10.0, 60.0, 600.0, 3600.0), min_length=1, description="Seconds, per attempt."
    )
    idempotency_db: Path | None = Field(default=None, description="Default: <state_dir>/...")
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=9108, ge=0, le=65535, description="None: off.")

    @property
    def max_attempts(self) -> int:
        """Deliveries tried in all: the first and one per retry delay."""
        return len(self.retry_delays) + 1


Security = Literal["none", "starttls", "ssl"]


class SmtpSettings(BaseModel):
    """The SMTP relay used for forwards and acknowledgements. Password: TRIAGE_SMTP__PASSWORD."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=25, gt=0, le=65535)
    security: Security = "none"
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="From the environment only.")
    sender: str = Field(default="triage@mairie.invalid", description="From of what we send.")
    timeout: float = Field(default=30.0, gt=0)

    @field_validator("sender")
    @classmethod
    def _one_address(cls, value: str) -> str:
        return parse_address(value)


class ImapAccount(BaseModel):
    """An IMAP mailbox: watched for intake and/or holding service folders for delivery."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(default=993, gt=0, le=65535)
    security: Security = "ssl"
    username: str
    password_env: str = Field(description="Name of the environment variable with the password.")
    folder: str = Field(default="INBOX", description="Folder watched by the intake.")
    processed: Literal["flag", "move"] = "flag"
    processed_folder: str = Field(default="Traités", description="Where 'move' puts messages.")
    skip_automated: bool = Field(default=True, description="Skip auto-replies and bulk mail.")
    idle_timeout: float = Field(default=300.0, gt=0, le=1680, description="Re-issue IDLE after.")
    poll_interval: float = Field(default=60.0, gt=0, description="Without IDLE support.")
    timeout: float = Field(default=60.0, gt=0, description="Socket timeout of commands.")


class IntakeSettings(BaseModel):
    """`triage intake imap` and `triage intake http`. HTTP token: TRIAGE_INTAKE__HTTP_TOKEN."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    imap_accounts: tuple[str, ...] = Field(default=(), description="Names under `imap` to watch.")
    state_db: Path | None = Field(default=None, description="Default: <state_dir>/intake.sqlite")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8025, ge=0, le=65535)
    http_max_bytes: int = Field(default=1024 * 1024, gt=0)
    http_token: SecretStr | None = Field(default=None, description="From the environment only.")


class InferenceSettings(BaseModel):
    """How the CamemBERT model runs (the TF-IDF baseline ignores all but `explanations`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; default: one per core"
    )
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto: bf16 where the CPU has it natively and the model allows"
    )
    quantize: Literal["none", "int8"] = Field(
        default="none", description="int8 dynamic quantisation, where the model's check allows it"
    )
    micro_batch: int = Field(
        default=8, gt=0, le=1024, description="requests per forward pass (bench: 8 beats 16 and 32)"
    )
    max_tokens: int | None = Field(
        default=None, ge=8, description="input token budget; default: the model's own"
    )
    explanations: bool = Field(
        default=True, description="attach the words that weighed most to each prediction"
    )


_AGE = re.compile(r"^\s*(\d+)\s*([dwmy])\s*$")
_AGE_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


def parse_age(value: str) -> int:
    """An age such as `12m`, `90d`, `2y` or `6w`, in days (a month counts 30 days, a year 365)."""
    match = _AGE.match(value)
    if match is None:
        raise ValueError(f"expected a number and a unit d, w, m or y (e.g. 12m), got {value!r}")
    days = int(match.group(1)) * _AGE_DAYS[match.group(2)]
    if days < 1:
        raise ValueError(f"an age must be at least one day, got {value!r}")
    return days


class FeedbackSettings(BaseModel):
    """Agents' corrections: where they are stored, for how long, how they reach the worker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: Path | None = Field(default=None, description="Default: <state_dir>/feedback.sqlite")
    retention: str = Field(default="12m", description="Stored texts older than this are purged.")
    remember_requests: bool = Field(
        default=True,
        description="Keep each triaged request's pseudonymised text, so that a later correction "
        "of it can become a training example (purged after `retention`).",
    )
    forward_address: str | None = Field(
        default=None,
        description="Agents forward a misrouted request here with `service: <key>` on top.",
    )
    scan_accounts: tuple[str, ...] = Field(
        default=(), description="IMAP accounts scanned for moved requests; default: all in use."
    )

    @field_validator("retention")
    @classmethod
    def _an_age(cls, value: str) -> str:
        parse_age(value)
        return value

    @field_validator("forward_address")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        return None if value is None else parse_address(value)

    @property
    def retention_days(self) -> int:
        return parse_age(self.retention)


class Settings(BaseSettings):
    """Process-wide settings of the worker and the command line."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    config_dir: Path = Field(default=PROJECT_ROOT / "config", description="taxonomy/routing/safety")
    model_dir: Path | None = Field(
        default=None,
        description="Pin one model directory; default: the model registry's current version.",
    )
    models_root: Path = Field(
        default=PROJECT_ROOT / "models",
        description="The model registry: versions, the `current` pointer, the shipped `default`.",
    )
    state_dir: Path = Field(
        default=Path("var"), description="Default home of what the worker writes."
    )
    maildir_root: Path | None = Field(default=None, description="Default: <state_dir>/maildir.")
    decision_log: Path | None = Field(
        default=None, description="Default: <state_dir>/decisions.jsonl"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    batch_size: int = Field(default=32, gt=0, le=1024)
    limits: ParseLimits = Field(default_factory=ParseLimits)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    imap: dict[str, ImapAccount] = Field(default_factory=dict)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    own_addresses: tuple[str, ...] = Field(
        default=(), description="The mairie's addresses or @domains: never acknowledged."
    )
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The settings file arrives as init keyword arguments; the environment must win over it.
        return env_settings, init_settings

    @property
    def taxonomy_file(self) -> Path:
        return self.config_dir / "taxonomy.yaml"

    @property
    def routing_file(self) -> Path:
        return self.config_dir / "routing.yaml"

    @property
    def safety_file(self) -> Path:
        return self.config_dir / "safety.yaml"

    @property
    def acknowledgements_file(self) -> Path:
        return self.config_dir / "acknowledgements.yaml"

    @property
    def maildir_path(self) -> Path:
        return self.maildir_root or self.state_dir / "maildir"

    @property
    def decision_log_path(self) -> Path:
        return self.decision_log or self.state_dir / "decisions.jsonl"

    @property
    def intake_state_path(self) -> Path:
        return self.intake.state_db or self.state_dir / "intake.sqlite"

    @property
    def idempotency_path(self) -> Path:
        return self.worker.idempotency_db or self.state_dir / "deliveries.sqlite"

    @property
    def feedback_path(self) -> Path:
        return self.feedback.db or self.state_dir / "feedback.sqlite"


class _FileSettings(Settings):
    """The same fields validated from the settings file alone, so errors blame the right source."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _location(loc: tuple[int | str, ...], document: Any = None) -> str:
    """The error's path as the user wrote it: union tags that pydantic inserts are skipped."""
    parts: list[str] = []
    node = document
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif document is not None and not last:
            continue  # not in the input: a discriminator tag or a model name
        parts.append(str(part))
    return ".".join(parts) or "(top level)"


def _first_error(exc: ValidationError, document: Any = None) -> tuple[str, str]:
    error = exc.errors()[0]
    problem = error["msg"]
    if error["type"] not in {"missing", "extra_forbidden"} and "input" in error:
        problem = f"{problem} (got {error['input']!r})"
    return _location(error["loc"], document), problem


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping, or a `ConfigError` saying why there is none."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "", "file not found") from exc
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", "not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            str(path), where, f"invalid YAML ({getattr(exc, 'problem', exc)})"
        ) from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(str(path), "", f"expected a mapping, got {type(document).__name__}")
    return document


def load_yaml_model(path: Path, model: type[ModelT]) -> ModelT:
    """Read and validate one YAML configuration file against `model`."""
    document = read_yaml(path)
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        key, problem = _first_error(exc, document)
        raise ConfigError(str(path), key, problem) from exc


_SECRET_KEYS = frozenset({"password", "http_token", "token", "secret"})


def _find_secret(document: Any, path: str = "") -> str | None:
    """Where a settings file holds a secret (a password, a token, a URL with a password)."""
    if isinstance(document, dict):
        for key, value in document.items():
            where = f"{path}.{key}" if path else str(key)
            if key in _SECRET_KEYS and value:
                return where
            if key == "url" and isinstance(value, str) and re.search(r"//[^/@]*:[^/@]*@", value):
                return where
            found = _find_secret(value, where)
            if found:
                return found
    return None


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the settings from defaults, an optional settings file and the environment."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        file_values = read_yaml(config_file)
        secret = _find_secret(file_values)
        if secret:
            problem = "secrets are read from the environment only (TRIAGE_..., or password_env)"
            raise ConfigError(str(config_file), secret, problem)
        try:
            _FileSettings(**file_values)
        except ValidationError as exc:
            key, problem = _first_error(exc, file_values)
            raise ConfigError(str(config_file), key, problem) from exc
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        key, problem = _first_error(exc)
        variable = ENV_PREFIX + key.replace(".", "__").upper()
        raise ConfigError("environment", variable, problem) from exc


class StrictModel(BaseModel):
    """Base of the configuration file models: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
