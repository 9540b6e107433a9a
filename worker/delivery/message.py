"""The messages deliverers write: the original request plus triage headers, or a dead letter.

An original email is kept byte for byte below the added headers (any `X-Triage-*` header it
already carried is removed, so a sender cannot forge a triage decision). An e-form becomes a
readable email whose body is the citizen's message and whose attachment is the original JSON.
Every header value written here is built from validated data and folded to one line.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from classifiers.base import Prediction
from worker.parsing.email_parser import HEADER_BLOCK_END, HEADER_FIELD
from worker.request import Channel, RawRequest, Request
from worker.routing import RoutingDecision

TRIAGE_HEADER_PREFIX = "X-Triage-"


def one_line(value: str, limit: int = 200) -> str:
    """A header-safe value: control characters folded into spaces, every `=?` broken.

    The email package decodes RFC 2047 encoded words even in values the program sets, and Python
    before 3.11.10 then writes a decoded CR/LF raw: a subject decoded once by the parser may still
    hold a second, encoded line break (`=?UTF-8?B?...?=`) that would become a header of its own.
    """
    folded = re.sub(r"[\x00-\x1f\x7f]", " ", value).replace("=?", "= ?")
    return " ".join(folded.split())[:limit]


def triage_headers(
    request_id: str, prediction: Prediction | None, decision: RoutingDecision | None
) -> list[tuple[str, str]]:
    headers = [("X-Triage-Request-Id", request_id)]
    if prediction is not None:
        headers += [
            ("X-Triage-Department", prediction.department.label),
            ("X-Triage-Urgency", prediction.urgency.label),
            ("X-Triage-Confidence", f"{prediction.department.confidence:.3f}"),
            ("X-Triage-Model", one_line(prediction.model_version)),
        ]
    if decision is not None:
        headers += [
            ("X-Triage-Review", "yes" if decision.needs_review else "no"),
            ("X-Triage-Reason", one_line("; ".join(decision.reasons), 900)),
        ]
    return headers


def _strip_triage_headers(header_block: bytes) -> bytes:
    kept: list[bytes] = []
    dropping = False
    for line in header_block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # continuation of the previous field
            if not dropping:
                kept.append(line)
            continue
        name = HEADER_FIELD.match(line)
        dropping = bool(name and name.group(1).lower().startswith(b"x-triage-"))
        if not dropping:
            kept.append(line)
    return b"".join(kept)


def _with_headers(original: bytes, headers: list[tuple[str, str]]) -> bytes:
    newline = b"\r\n" if b"\r\n" in original[:4096] else b"\n"
    end = HEADER_BLOCK_END.search(original)
    if end is None:
        head, body = original, b""
    else:  # the head keeps the line break of its last field; the body starts at the blank line
        cut = end.start() + (2 if original[end.start() : end.start() + 2] == b"\r\n" else 1)
        head, body = original[:cut], original[cut:]
    added = b"".join(
        f"{name}: {value}".encode("ascii", "replace") + newline for name, value in headers
    )
    return added + _strip_triage_headers(head) + body


def _form_as_email(raw: RawRequest, request: Request, headers: list[tuple[str, str]]) -> bytes:
    message = EmailMessage(policy=SMTP)
    for name, value in headers:
        message[name] = value
    if request.sender.address:
        message["From"] = formataddr((one_line(request.sender.name or ""), request.sender.address))
    form_id = one_line(str(request.extra.get("form_id", "formulaire")), 80)
    subject = one_line(request.subject) or "(sans objet)"
    message["Subject"] = f"[Formulaire {form_id}] {subject}"
    message["Date"] = format_datetime(request.received_at)
    message["Message-ID"] = f"<{request.id}@mairie-triage.invalid>"
    lines = [request.classifier_text, ""]
    if request.form_fields:
        lines += ["Champs du formulaire :"]
        lines += [f"- {key} : {value}" for key, value in request.form_fields.items()]
        lines.append("")
    if request.sender.phone:
        lines += [f"Téléphone : {request.sender.phone}", ""]
    if request.attachments:
        lines += ["Pièces jointes déclarées :"]
        lines += [
            f"- {a.filename or '(sans nom)'} ({a.content_type}, {a.size} octets)"
            for a in request.attachments
        ]
    message.set_content("\n".join(lines).strip() + "\n")
    message.add_attachment(
        raw.payload, maintype="application", subtype="json", filename="formulaire.json"
    )
    return message.as_bytes()


def render_triaged(
    raw: RawRequest, request: Request, prediction: Prediction, decision: RoutingDecision
) -> bytes:
    """The delivered form of a classified request."""
    headers = triage_headers(request.id, prediction, decision)
    if raw.channel is Channel.EMAIL:
        return _with_headers(raw.payload, headers)
    return _form_as_email(raw, request, headers)


def render_dead_letter(raw: RawRequest, request_id: str, reason: str, error_class: str) -> bytes:
    """A message carrying a request that could not be handled, with the reason, for an agent."""
    message = EmailMessage(policy=SMTP)
    for name, value in triage_headers(request_id, None, None):
        message[name] = value
    message["X-Triage-Error"] = one_line(reason, 900)
    message["X-Triage-Error-Class"] = one_line(error_class, 100)
    message["Subject"] = "[Triage] Demande non traitée automatiquement"
    message["Message-ID"] = f"<{request_id}.rejet@mairie-triage.invalid>"
    message.set_content(
        "Cette demande n'a pas pu être triée automatiquement et doit être traitée à la main.\n"
        f"Motif : {one_line(reason, 900)}\n\n"
        "L'original est joint tel qu'il a été reçu.\n"
    )
    suffix = "eml" if raw.channel is Channel.EMAIL else "json"
    message.add_attachment(
        raw.payload, maintype="application", subtype="octet-stream", filename=f"original.{suffix}"
    )
    return message.as_bytes()
