"""SMTP: the only module that imports smtplib. Forwards to a service's own address.

`SmtpSender` opens one connection per message (a mairie sends a few hundred a day, and a fresh
connection is thread-safe and never stale) and translates smtplib's errors at this border: a 4xx
reply, a refused or lost connection or a timeout is a `TransientError`, a 5xx reply or a protocol
the server does not offer is a `PermanentError`. Messages name the code, never the server's text,
which may quote an address.

`render_forward` builds the forward: a short French summary for the agent, then the request
(the original attached as message/rfc822, or its text quoted inline). Every header written here
comes from validated data through `one_line` or the email package's header registry, and
`SmtpSender.send` refuses a message whose serialised header block holds a field it was not given.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.errors import MessageError
from email.generator import Generator
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Literal, get_args

from classifiers.explain import format_evidence
from worker.addresses import parse_address
from worker.config import SmtpSettings
from worker.delivery.base import Delivery, Receipt
from worker.delivery.message import one_line, triage_headers
from worker.errors import DeliveryError, PermanentError, TransientError
from worker.request import Channel

AttachMode = Literal["rfc822", "inline"]
MESSAGE_ID_DOMAIN = "mairie-triage.invalid"
FORWARD_FROM_NAME = "Tri des demandes"
SUBJECT_LIMIT = 150

_ENHANCED_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _msg_id_part(value: str) -> str:
    return _ID_UNSAFE.sub("-", value)[:100] or "x"


# --- sending -------------------------------------------------------------------------------------


def _reply_error(exc: smtplib.SMTPResponseException, where: str, stage: str) -> DeliveryError:
    """A 4xx reply is worth retrying, a 5xx one is not; the message keeps the codes only."""
    code = exc.smtp_code
    text = exc.smtp_error.decode("ascii", "replace") if isinstance(exc.smtp_error, bytes) else ""
    status = _ENHANCED_STATUS.match(text)
    detail = f"{code} {status.group(0)}" if status else str(code)
    error = PermanentError if 500 <= code <= 599 else TransientError
    return error(f"smtp {where}: {stage} refused ({detail})")


def _stage(exc: smtplib.SMTPResponseException) -> str:
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return "sender"
    if isinstance(exc, smtplib.SMTPDataError):
        return "message"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "authentication"
    if isinstance(exc, smtplib.SMTPConnectError | smtplib.SMTPHeloError):
        return "greeting"
    return "command"


def _header_names(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]


class SmtpSender:
    """Sends messages through the configured relay, one connection per message."""

    def __init__(self, settings: SmtpSettings) -> None:
        try:
            parse_address(settings.sender)
        except ValueError as exc:
            raise ValueError(f"smtp.sender: {exc}") from exc
        if settings.username and settings.password is None:
            raise ValueError("smtp.username is set but TRIAGE_SMTP__PASSWORD is not")
        self.settings = settings
        self._where = f"{settings.host}:{settings.port}"

    def _open(self) -> smtplib.SMTP:
        settings = self.settings
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if settings.security == "ssl":
            client = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout, context=context
            )
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        try:
            client.ehlo()
            if settings.security == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if settings.username and settings.password is not None:
                client.login(settings.username, settings.password.get_secret_value())
        except BaseException:
            client.close()
            raise
        return client

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        """Send `message` to every recipient, from `settings.sender`, or raise `DeliveryError`."""
        if not recipients:
            raise PermanentError("smtp: no recipient")
        try:
            envelope_to = [parse_address(recipient) for recipient in recipients]
        except ValueError as exc:
            raise PermanentError(f"smtp: invalid recipient ({exc})") from exc
        try:
            data = message.as_bytes(policy=SMTP)
        except (MessageError, ValueError) as exc:  # newer Pythons refuse an injected header here
            why = type(exc).__name__
            raise PermanentError(f"smtp: message cannot be serialised ({why})") from exc
        if _header_names(data) != [name.lower() for name in message]:
            raise PermanentError("smtp: the rendered header block differs from the message")
        client: smtplib.SMTP | None = None
        try:
            client = self._open()
            # 8-bit originals are sent as they are; declare it when the server says it can.
            options = (
                ["BODY=8BITMIME"] if not data.isascii() and client.has_extn("8bitmime") else []
            )
            refused = client.sendmail(self.settings.sender, envelope_to, data, mail_options=options)
            _goodbye(client)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            error = PermanentError if all(500 <= c <= 599 for c in codes) else TransientError
            shown = ", ".join(str(code) for code in sorted(set(codes)))
            raise error(f"smtp {self._where}: recipient refused ({shown})") from exc
        except smtplib.SMTPResponseException as exc:
            raise _reply_error(exc, self._where, _stage(exc)) from exc
        except smtplib.SMTPServerDisconnected as exc:
            # smtplib reports a read timeout as a disconnection; the timeout is its context.
            why = "timed out" if isinstance(exc.__context__, TimeoutError) else "connection lost"
            raise TransientError(f"smtp {self._where}: {why}") from exc
        except smtplib.SMTPException as exc:  # an extension the server lacks (STARTTLS, AUTH)
            raise PermanentError(f"smtp {self._where}: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise TransientError(f"smtp {self._where}: timed out") from exc
        except OSError as exc:
            raise TransientError(
                f"smtp {self._where}: {exc.strerror or type(exc).__name__}"
            ) from exc
        finally:
            if client is not None:
                client.close()
        if refused:  # some recipients accepted, others not: report the worst
            codes = [code for code, _ in refused.values()]
            error = PermanentError if all(500 <= c <= 599 for c in codes) else TransientError
            raise error(f"smtp {self._where}: {len(refused)} of {len(envelope_to)} refused")


def _goodbye(client: smtplib.SMTP) -> None:
    """QUIT after the message was accepted; its failure must not turn into a second copy."""
    with contextlib.suppress(smtplib.SMTPException, OSError):
        client.quit()


# --- rendering -----------------------------------------------------------------------------------


class _Verbatim(EmailMessage):
    """Bytes the generator writes back as they are, line ends aside: an attached original.

    Re-serialising a parsed copy would refold headers and repair what it could not read, and the
    generator refuses a non-ASCII string payload under message/rfc822. So the original rides as
    the surrogate-escaped text payload of a part that writes no header block of its own
    (`Generator._write` lets a message do that): its headers are part of its bytes.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(policy=SMTP)
        self.set_payload(data.decode("ascii", "surrogateescape"))

    def _write_headers(self, generator: Generator) -> None:
        """Nothing to write: the original's header block is in its payload."""


def _rfc822_part(original: bytes, filename: str) -> EmailMessage:
    """A message/rfc822 part carrying `original`; RFC 2046 allows only 7bit or 8bit here."""
    part = EmailMessage(policy=SMTP)
    part["Content-Type"] = "message/rfc822"
    part["Content-Disposition"] = f'attachment; filename="{filename}"'
    part["Content-Transfer-Encoding"] = "7bit" if original.isascii() else "8bit"
    part.set_payload([_Verbatim(original)])
    return part


def _summary(
    delivery: Delivery,
    display_names: Mapping[str, str],
    urgency_names: Mapping[str, str],
    inline: bool,
) -> str:
    request, prediction, decision = delivery.request, delivery.prediction, delivery.decision
    if prediction is None:
        return (
            "Cette demande n'a pas pu être triée automatiquement et doit être traitée à la main.\n"
            f"Référence : {delivery.request_id}\n\n"
            "Le motif et la demande d'origine sont dans la pièce jointe.\n"
        )
    department = prediction.department.label
    urgency = prediction.urgency.label
    lines = [
        "Demande transmise par le tri automatique du courrier de la mairie.",
        "",
        f"Service : {display_names.get(department, department)}",
        f"Urgence : {urgency_names.get(urgency, urgency.capitalize())}",
        f"Confiance : {round(prediction.department.confidence * 100)} %",
        f"Référence : {delivery.request_id}",
    ]
    for head, title in (("department", "service"), ("urgency", "urgence")):
        words = format_evidence(prediction.evidence, head)
        if words:
            lines.append(f"Mots déterminants ({title}) : {words}")
    if decision is not None:
        lines += ["", "Pourquoi :", *(f"- {reason}" for reason in decision.reasons)]
        if decision.needs_review:
            lines += [
                "",
                "Le classement est incertain : vérifiez que la demande relève bien de ce service "
                "et réorientez-la sinon.",
            ]
    if urgency == "critique" or (decision is not None and decision.escalated):
        lines += [
            "",
            "URGENCE CRITIQUE : la boîte d'astreinte a été alertée en même temps que ce service.",
        ]
    lines.append("")
    if inline and request is not None:
        lines.append("--- Demande d'origine ---")
        who = [request.sender.name, request.sender.address, request.sender.phone]
        if any(who):
            lines.append(f"De : {' · '.join(part for part in who if part)}")
        lines.append(f"Objet : {request.subject or '(sans objet)'}")
        lines.append("")
        lines += [f"> {line}".rstrip() for line in request.classifier_text.splitlines()]
        if request.attachments:
            lines += [
                "",
                f"Pièces jointes de l'original (non transmises) : {len(request.attachments)}",
            ]
    else:
        lines.append("La demande d'origine est jointe à ce message.")
    return "\n".join(lines) + "\n"


def _original(delivery: Delivery) -> tuple[bytes, str]:
    """What to attach: an email's original bytes, else the default rendering (an email too)."""
    raw = delivery.raw
    if delivery.request is not None and raw is not None and raw.channel is Channel.EMAIL:
        return raw.payload, "demande.eml"
    if delivery.request is not None and delivery.request.channel is Channel.FORM:
        return delivery.message, "formulaire.eml"
    return delivery.message, "demande.eml"


def render_forward(
    delivery: Delivery,
    to: str,
    sender: str,
    display_names: Mapping[str, str],
    attach: AttachMode = "rfc822",
    *,
    destination: str,
    urgency_names: Mapping[str, str] | None = None,
) -> EmailMessage:
    """The forward of one request to a service's address; `PermanentError` on a bad address."""
    try:
        to_address = parse_address(to)
        from_address = parse_address(sender)
    except ValueError as exc:
        raise PermanentError(f"forward to {destination}: {exc}") from exc
    request, prediction = delivery.request, delivery.prediction
    if prediction is None:
        subject = "[Triage] Demande non traitée automatiquement"
    else:
        urgency = prediction.urgency.label
        shown = (urgency_names or {}).get(urgency, urgency.capitalize())
        original = one_line(request.subject, SUBJECT_LIMIT) if request is not None else ""
        subject = f"[Triage · {shown}] {original or '(sans objet)'}"

    message = EmailMessage(policy=SMTP)
    message["From"] = Address(display_name=FORWARD_FROM_NAME, addr_spec=from_address)
    message["To"] = Address(addr_spec=to_address)
    message["Subject"] = one_line(subject, SUBJECT_LIMIT + 40)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = (
        f"<{_msg_id_part(delivery.request_id)}.{_msg_id_part(destination)}@{MESSAGE_ID_DOMAIN}>"
    )
    if request is not None and request.sender.address:
        with contextlib.suppress(ValueError):  # "reply" then reaches the citizen, not this robot
            message["Reply-To"] = Address(addr_spec=parse_address(request.sender.address))
    # RFC 3834: robots (the intake included) must not answer or re-triage a forward; the second
    # header is Exchange's own way of saying it.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    for name, value in triage_headers(delivery.request_id, prediction, delivery.decision):
        message[name] = one_line(value, 900)

    inline = attach == "inline" and request is not None
    message.set_content(
        _summary(delivery, display_names, urgency_names or {}, inline), cte="quoted-printable"
    )
    if not inline:
        payload, filename = _original(delivery)
        message.make_mixed()
        message.attach(_rfc822_part(payload, filename))
    return message


class SmtpDeliverer:
    """Forwards each request to one service address, with a French summary on top.

    SMTP cannot tell whether the service already holds a request, so a second delivery sends a
    second copy; the worker's idempotency store prevents it, and the Message-ID is the same for
    both, which lets a mail system drop the duplicate.
    """

    def __init__(
        self,
        name: str,
        to: str,
        attach: str,
        sender: SmtpSender,
        display_names: Mapping[str, str],
        *,
        urgency_names: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.to = parse_address(to)
        except ValueError as exc:
            raise ValueError(f"destination {name}: to: {exc}") from exc
        if attach not in get_args(AttachMode):
            raise ValueError(f"destination {name}: attach must be 'rfc822' or 'inline'")
        self.name = name
        self.attach: AttachMode = "inline" if attach == "inline" else "rfc822"
        self.sender = sender
        self.display_names = dict(display_names)
        self.urgency_names = dict(urgency_names or {})

    def deliver(self, delivery: Delivery) -> Receipt:
        """Send the forward; raises `TransientError` or `PermanentError` like the sender."""
        message = render_forward(
            delivery,
            self.to,
            self.sender.settings.sender,
            self.display_names,
            self.attach,
            destination=self.name,
            urgency_names=self.urgency_names,
        )
        self.sender.send(message, [self.to])
        return Receipt(self.name, f"smtp:{self.to}")
