"""The request model: what the parsers produce and every later stage reads."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Channel(StrEnum):
    """How a request reached the mairie."""

    EMAIL = "email"
    FORM = "form"


CONTENT_TYPES = {Channel.EMAIL: "message/rfc822", Channel.FORM: "application/json"}


class Sender(BaseModel):
    """Who wrote the request, as far as the input says."""

    model_config = ConfigDict(frozen=True)

    address: str | None = None
    name: str | None = None
    phone: str | None = None


class AttachmentInfo(BaseModel):
    """Metadata of an attachment; the content itself is never kept or written under this name."""

    model_config = ConfigDict(frozen=True)

    filename: str | None = None
    content_type: str
    size: int = Field(ge=0)


class Request(BaseModel):
    """One parsed request, the same for emails and e-forms."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Stable id: a digest of the Message-ID, else of the content.")
    channel: Channel
    received_at: datetime
    sender: Sender = Field(default_factory=Sender)
    subject: str = ""
    classifier_text: str = Field(description="The text the classifier reads: new text first.")
    full_text: str = Field(description="Everything readable, quoted history and forwards included.")
    attachments: tuple[AttachmentInfo, ...] = ()
    language: str | None = Field(default=None, description="'fr' or 'en' when the text says so.")
    form_fields: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict, description="Unknown e-form keys, kept.")
    warnings: tuple[str, ...] = Field(default=(), description="Defects found while parsing.")
    automated: str | None = Field(
        default=None,
        description="Why the mail looks machine-sent (auto-reply, list, bulk, our own forward).",
    )


class RawRequest(BaseModel):
    """The bytes of a request as they arrived, before parsing; what dead-letter keeps."""

    model_config = ConfigDict(frozen=True)

    payload: bytes
    channel: Channel
    origin: str = Field(default="", description="Where it came from: a path, a mailbox, a queue.")

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.channel]

    @property
    def fallback_id(self) -> str:
        """The id a request gets when it cannot be parsed: a digest of its bytes."""
        return request_id(self.channel, content=self.payload)


def request_id(channel: Channel, *, message_id: str | None = None, content: bytes = b"") -> str:
    """A stable, opaque request id.

    Derived from the Message-ID when there is one, so that the same mail fetched twice gets the
    same id; else from the content. Hashed, because a Message-ID can hold an address.
    """
    prefix = "em" if channel is Channel.EMAIL else "fm"
    if message_id:
        seed = b"mid:" + message_id.strip().strip("<>").encode("utf-8", "replace")
    else:
        seed = b"raw:" + content
    return f"{prefix}-{hashlib.sha256(seed).hexdigest()[:24]}"
