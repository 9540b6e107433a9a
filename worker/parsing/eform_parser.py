"""Parsing e-form submissions (JSON posted by the commune's website) into a `Request`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.errors import ParseError
from worker.parsing.language import guess_language
from worker.parsing.limits import ParseLimits
from worker.request import AttachmentInfo, Channel, Request, Sender, request_id

_ADDRESS = re.compile(r"[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[A-Za-z0-9-]{2,}")


class FormSubmitter(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = None
    email: str | None = None
    phone: str | None = None

    @field_validator("email")
    @classmethod
    def _strict_address(cls, value: str | None) -> str | None:
        if value and not _ADDRESS.fullmatch(value):
            raise ValueError("not an email address")
        return value or None


class FormAttachment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filename: str | None = None
    content_type: str = "application/octet-stream"
    size: int = Field(default=0, ge=0)


class EForm(BaseModel):
    """The e-form contract. Unknown top-level keys are kept in `model_extra`."""

    model_config = ConfigDict(extra="allow", strict=False)

    form_id: str = Field(min_length=1)
    submitted_at: datetime
    submitter: FormSubmitter | None = None
    subject: str | None = None
    message: str
    fields: dict[str, str] = Field(default_factory=dict)
    attachments: list[FormAttachment] = Field(default_factory=list)

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("form_id", "subject", "message", mode="before")
    @classmethod
    def _strings_only(cls, value: Any) -> Any:
        # Pydantic would refuse numbers for str anyway; this keeps the message uniform.
        if value is not None and not isinstance(value, str):
            raise ValueError("must be a string")
        return value


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "(document)"


def load_eform(data: bytes, limits: ParseLimits | None = None) -> EForm:
    """Validate e-form bytes; raises `ParseError` naming the offending field."""
    limits = limits or ParseLimits()
    if not data.strip():
        raise ParseError("empty input")
    if len(data) > limits.max_form_bytes:
        raise ParseError(f"form of {len(data)} bytes exceeds the limit of {limits.max_form_bytes}")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    if not isinstance(document, dict):
        raise ParseError(f"expected a JSON object, got {type(document).__name__}")
    try:
        return EForm.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_path(first["loc"])
        raise ParseError(first["msg"], field=field) from exc


def parse_eform(data: bytes, limits: ParseLimits | None = None) -> Request:
    """Parse the bytes of one e-form submission into a `Request`."""
    limits = limits or ParseLimits()
    form = load_eform(data, limits)
    submitter = form.submitter or FormSubmitter()
    subject = (form.subject or "").strip()
    message = form.message.strip()[: limits.max_text_chars]
    details = "\n".join(f"{key} : {value}" for key, value in form.fields.items())
    received = form.submitted_at
    if received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    return Request(
        id=request_id(Channel.FORM, content=data),
        channel=Channel.FORM,
        received_at=received,
        sender=Sender(address=submitter.email, name=submitter.name, phone=submitter.phone),
        subject=subject,
        classifier_text=message,
        full_text=f"{message}\n\n{details}".strip(),
        attachments=tuple(
            AttachmentInfo(filename=a.filename, content_type=a.content_type, size=a.size)
            for a in form.attachments
        ),
        language=guess_language(f"{subject}\n{message}"),
        form_fields=dict(form.fields),
        extra={"form_id": form.form_id, **(form.model_extra or {})},
    )
