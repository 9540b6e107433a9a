"""Parsing RFC 5322 / MIME mail into a `Request`.

The standard library's parser is lenient (it records defects instead of raising), which is what
mail in the wild needs; this module adds the bounds (header size, body size, number of parts), the
charset recovery of `charsets`, HTML conversion and the reply/forward split, and turns anything
unusable into a `ParseError` with a reason that never quotes the content.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from worker.errors import ParseError
from worker.parsing.charsets import decode_text
from worker.parsing.html_text import html_to_text
from worker.parsing.language import guess_language
from worker.parsing.limits import ParseLimits
from worker.parsing.quoting import classifier_view
from worker.request import AttachmentInfo, Channel, Request, Sender, request_id

HEADER_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:")
"""A header field line; group 1 is its name (RFC 5322 2.2: printable ASCII but ':')."""
HEADER_BLOCK_END = re.compile(rb"\r?\n\r?\n")
"""The blank line between the header block and the body."""
_KNOWN_HEADERS = ("from", "to", "subject", "date", "message-id", "mime-version", "received")
_TEXT_TYPES = ("text/plain", "text/html")


def decode_header_value(value: str | None) -> str:
    """A header's text with RFC 2047 encoded words decoded, whatever their charset claims."""
    if not value:
        return ""
    pieces: list[str] = []
    try:
        chunks = decode_header(value)
    except (ValueError, LookupError, AssertionError):
        return " ".join(value.split())
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            text, _ = decode_text(chunk, charset)
            pieces.append(text)
        else:
            pieces.append(chunk)
    return " ".join("".join(pieces).split())


def _check_bounds(data: bytes, limits: ParseLimits) -> None:
    if not data.strip():
        raise ParseError("empty input")
    if len(data) > limits.max_bytes:
        raise ParseError(f"message of {len(data)} bytes exceeds the limit of {limits.max_bytes}")
    first_line = data.lstrip(b"\r\n").split(b"\n", 1)[0]
    if not HEADER_FIELD.match(first_line):
        raise ParseError("not an email: the input does not start with a header field")
    end = HEADER_BLOCK_END.search(data, 0, limits.max_header_bytes + 4)
    if end is None:
        if len(data) > limits.max_header_bytes:
            raise ParseError(f"header block exceeds the limit of {limits.max_header_bytes} bytes")
        raise ParseError("truncated message: the header block never ends")
    if b"\x00" in data[: end.start()]:
        raise ParseError("not an email: NUL bytes in the header block")


def _sender(message: Message) -> Sender:
    raw = decode_header_value(message.get("From"))
    addresses = getaddresses([raw]) if raw else []
    name, address = addresses[0] if addresses else ("", "")
    valid = address if re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", address or "") else None
    return Sender(address=valid, name=name.strip() or None)


def _received_at(message: Message) -> datetime:
    try:
        moment = parsedate_to_datetime(str(message.get("Date", "")))
    except (TypeError, ValueError, IndexError):
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_attachment(part: Message) -> bool:
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment":
        return True
    return part.get_content_type() not in _TEXT_TYPES or bool(part.get_filename())


def _is_body_resource(part: Message) -> bool:
    """An inline image the HTML body refers to by cid: (a logo), not an attachment."""
    disposition = (part.get_content_disposition() or "").lower()
    return (
        "Content-ID" in part
        and disposition != "attachment"
        and part.get_content_maintype() not in {"text", "multipart", "message"}
    )


class _BodyWalker:
    """Collects readable text and attachment metadata from a MIME tree, within the limits."""

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self.parts_seen = 0
        self.attachments: list[AttachmentInfo] = []
        self.warnings: list[str] = []

    def text_of(self, part: Message) -> str:
        self.parts_seen += 1
        if self.parts_seen > self.limits.max_parts:
            raise ParseError(f"more than {self.limits.max_parts} MIME parts")
        content_type = part.get_content_type()
        if part.is_multipart():
            payload = part.get_payload()
            children = (
                [c for c in payload if isinstance(c, Message)] if isinstance(payload, list) else []
            )
            if content_type == "multipart/alternative":
                return self._best_alternative(children)
            texts = [self.text_of(child) for child in children]
            return "\n\n".join(text for text in texts if text)
        if content_type == "message/rfc822":
            return self._attached_message(part)
        if _is_body_resource(part):
            return ""
        if _is_attachment(part):
            self._record_attachment(part)
            return ""
        return self._decode(part)

    def _best_alternative(self, children: list[Message]) -> str:
        # RFC 2046: alternatives come in increasing order of faithfulness; we prefer plain text
        # because HTML mail's plain part is what the sender's client deemed the readable form.
        plain = [child for child in children if child.get_content_type() == "text/plain"]
        for child in plain:
            text = self.text_of(child)
            if text.strip():
                for other in children:
                    if other not in plain:
                        self._collect_attachments_only(other)
                return text
        for child in reversed(children):
            text = self.text_of(child)
            if text.strip():
                return text
        return ""

    def _collect_attachments_only(self, part: Message) -> None:
        for sub in part.walk():
            if not sub.is_multipart() and _is_attachment(sub) and not _is_body_resource(sub):
                self.parts_seen += 1
                self._record_attachment(sub)

    def _attached_message(self, part: Message) -> str:
        inner = part.get_payload()
        inner_message = inner[0] if isinstance(inner, list) and inner else None
        if not isinstance(inner_message, Message):
            self._record_attachment(part)
            return ""
        subject = decode_header_value(inner_message.get("Subject"))
        body = self.text_of(inner_message)
        return f"---------- Message transféré ---------\nObjet : {subject}\n\n{body}"

    def _record_attachment(self, part: Message) -> None:
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        filename = part.get_filename()
        self.attachments.append(
            AttachmentInfo(
                filename=decode_header_value(filename) if filename else None,
                content_type=part.get_content_type(),
                size=size,
            )
        )

    def _decode(self, part: Message) -> str:
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return ""
        text, warning = decode_text(payload, part.get_content_charset())
        if warning:
            self.warnings.append(warning)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if part.get_content_type() == "text/html":
            text = html_to_text(text)
        return text.strip()


def automated_reason(message: Message) -> str | None:
    """Why a mail is machine-sent and must not be triaged or answered (RFC 3834, lists), or None."""
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    if auto and not auto.startswith("no"):
        return f"auto-submitted ({auto.split(';')[0]})"
    if "X-Triage-Request-Id" in message:
        return "a triage forward (loop prevention)"
    if "List-Id" in message or "List-Unsubscribe" in message:
        return "mailing list"
    precedence = str(message.get("Precedence", "")).strip().lower()
    if precedence in {"bulk", "list", "junk", "auto_reply"}:
        return f"precedence {precedence}"
    if "X-Autoreply" in message or "X-Autorespond" in message:
        return "auto-reply"
    return None


def parse_email(data: bytes, limits: ParseLimits | None = None) -> Request:
    """Parse the bytes of one email; raises `ParseError` when they are not a usable request."""
    limits = limits or ParseLimits()
    _check_bounds(data, limits)
    try:
        message = email.message_from_bytes(data, policy=email.policy.compat32)
    except Exception as exc:  # the email package has no single error class
        raise ParseError(f"unreadable MIME structure ({type(exc).__name__})") from exc
    if not any(name in message for name in _KNOWN_HEADERS):
        raise ParseError("not an email: none of From, To, Subject, Date, Message-ID")
    walker = _BodyWalker(limits)
    try:
        body = walker.text_of(message)
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"unreadable MIME body ({type(exc).__name__})") from exc
    body = body[: limits.max_text_chars]
    subject = decode_header_value(message.get("Subject"))[:1000]
    if not body.strip() and not subject:
        raise ParseError("no readable text: neither a subject nor a text part")
    defects = [type(defect).__name__ for defect in message.defects]
    classifier_text = classifier_view(body)
    message_id = decode_header_value(message.get("Message-ID")) or None
    return Request(
        id=request_id(Channel.EMAIL, message_id=message_id, content=data),
        channel=Channel.EMAIL,
        received_at=_received_at(message),
        sender=_sender(message),
        subject=subject,
        classifier_text=classifier_text,
        full_text=body,
        attachments=tuple(walker.attachments),
        language=guess_language(f"{subject}\n{classifier_text}"),
        warnings=tuple(dict.fromkeys([*defects, *walker.warnings])),
        automated=automated_reason(message),
    )
