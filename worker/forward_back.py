"""Forward-back corrections: an agent forwards a misrouted request with the right service on top.

The agent forwards the request to the configured `feedback.forward_address` and writes, as the
first line of the forward, `service: voirie` (a department key or its display name), optionally
followed by `urgence: haute` on the same or the next line. The worker then records the correction
and re-routes the request to that service.

What is re-routed is the original request: the attached message when the agent forwarded it as an
attachment (it keeps its headers, hence its request id), else the forward itself (an inline
forward keeps only the text). The corrected request id is the attached message's
`X-Triage-Request-Id`, or the `Référence : em-…` that our SMTP forwards print, or failing both the
id of what is re-routed.

Only the mairie's own addresses (`own_addresses`) may correct: a citizen who learns the address
must not be able to write into the training data.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses

from classifiers.taxonomy import Taxonomy
from classifiers.text import fold
from worker.acknowledgement import is_own_address
from worker.errors import ParseError
from worker.request import Channel, RawRequest, Request

RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")
REQUEST_ID = re.compile(r"\b(?:em|fm)-[0-9a-f]{24}\b")
_SERVICE = re.compile(
    r"^\s*(?:service|d[ée]partement|department)\s*[:=]\s*(?P<service>[^;,\n]+?)\s*"
    r"(?:[;,]\s*(?:urgence|urgency)\s*[:=]\s*(?P<urgency>[^\s;,]+)\s*)?[.;,]?\s*$",
    re.IGNORECASE,
)
_URGENCY = re.compile(r"^\s*(?:urgence|urgency)\s*[:=]\s*(?P<urgency>[^\s;,.]+)", re.IGNORECASE)


class ForwardBackError(ParseError):
    """A message to the forward-back address that cannot be read as a correction.

    A parse error of sorts: the worker dead-letters it with the reason, for an agent to redo.
    """


@dataclass(frozen=True)
class ForwardBack:
    """A correction an agent sent by forwarding, and the request to re-route."""

    department: str
    urgency: str | None
    original: RawRequest
    corrected_id: str | None


def _headers(payload: bytes) -> Message:
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    headers: Message = parser.parsebytes(payload)
    return headers


def _addresses(message: Message, names: Sequence[str]) -> list[str]:
    values = [str(value) for name in names for value in message.get_all(name, [])]
    return [address.lower() for _, address in getaddresses(values) if address]


class ForwardBackReader:
    """Recognises forward-backs and reads the service, urgency and original out of them."""

    def __init__(self, address: str, own_addresses: Sequence[str], taxonomy: Taxonomy) -> None:
        self.address = address.lower()
        self.own_addresses = tuple(own_addresses)
        self._departments = {key: key for key in taxonomy.department_keys}
        for key, label in taxonomy.departments.items():
            self._departments[fold(label.display_name).strip()] = key
        self._urgencies = {key: key for key in taxonomy.urgency_keys}
        for key, label in taxonomy.urgencies.items():
            self._urgencies[fold(label.display_name).strip()] = key

    def addressed_to_us(self, raw: RawRequest) -> bool:
        """Whether an email was sent to the forward-back address (headers only, cheap)."""
        if raw.channel is not Channel.EMAIL:
            return False
        return self.address in _addresses(_headers(raw.payload), RECIPIENT_HEADERS)

    def read(self, raw: RawRequest, forward: Request) -> ForwardBack:
        """The correction in `raw` (already parsed as `forward`); `ForwardBackError` if none."""
        sender = forward.sender.address or ""
        if not is_own_address(sender, self.own_addresses):
            raise ForwardBackError("forward-back from an address that is not the mairie's")
        department, urgency = self._labels(forward.full_text)
        attached = _attached_message(raw.payload)
        if attached is not None:
            original = RawRequest(payload=attached, channel=Channel.EMAIL, origin=raw.origin)
            corrected = str(_headers(attached).get("X-Triage-Request-Id", "")).strip()
            found = REQUEST_ID.search(corrected)
            return ForwardBack(department, urgency, original, found.group(0) if found else None)
        found = REQUEST_ID.search(f"{forward.subject}\n{forward.full_text}")
        return ForwardBack(department, urgency, raw, found.group(0) if found else None)

    def _labels(self, text: str) -> tuple[str, str | None]:
        lines = [line for line in text.splitlines() if line.strip()][:2]
        match = _SERVICE.match(lines[0]) if lines else None
        if match is None:
            raise ForwardBackError("forward-back whose first line is not `service: <department>`")
        service = fold(match.group("service")).strip()
        department = self._departments.get(service) or self._departments.get(
            service.replace(" ", "_")
        )
        if department is None:
            known = ", ".join(sorted(self._departments.values()))
            raise ForwardBackError(f"forward-back names an unknown service; known: {known}")
        urgency_text = match.group("urgency")
        if urgency_text is None and len(lines) > 1:
            second = _URGENCY.match(lines[1])
            urgency_text = second.group("urgency") if second else None
        urgency = None
        if urgency_text is not None:
            urgency = self._urgencies.get(fold(urgency_text).strip())
            if urgency is None:
                known = ", ".join(sorted(set(self._urgencies.values())))
                raise ForwardBackError(f"forward-back names an unknown urgency; known: {known}")
        return department, urgency


def _attached_message(payload: bytes) -> bytes | None:
    """The bytes of the first message attached as `message/rfc822`, if any."""
    message = email.message_from_bytes(payload, policy=email.policy.compat32)
    for part in message.walk():
        if part.get_content_type() != "message/rfc822":
            continue
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return inner[0].as_bytes()
    return None
