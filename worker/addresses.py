"""Strict validation of the email addresses the worker writes into headers and envelopes.

Pure and dependency-free, so the routing configuration, the SMTP forward and the citizen
acknowledgement can all refuse the same inputs. Only a plain ASCII `local@domain.tld` passes: no
display name, no list, no comment, no quoted local part, no line break, no RFC 2047 word.
"""

from __future__ import annotations

import re
from email.headerregistry import HeaderRegistry

MAX_ADDRESS_LENGTH = 254  # RFC 5321 4.5.3.1.3, less the angle brackets of the path

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_SPEC = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,63}}")
_REGISTRY = HeaderRegistry()


def parse_address(value: str) -> str:
    """`value` as one plain addr-spec, or `ValueError` saying why not (without quoting it)."""
    if not isinstance(value, str):
        raise ValueError("an address must be a string")
    if len(value) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"an address is at most {MAX_ADDRESS_LENGTH} characters")
    if not _ADDR_SPEC.fullmatch(value):
        raise ValueError("expected exactly one plain address such as service@commune.fr")
    if "=?" in value:
        # The email package decodes RFC 2047 words even inside an addr-spec; refuse them.
        raise ValueError("an address cannot hold an encoded word")
    # Belt and braces: the header the email package would build must hold this address alone.
    header = _REGISTRY("To", value)
    parsed = [address.addr_spec for address in getattr(header, "addresses", ())]
    if header.defects or parsed != [value]:
        raise ValueError("expected exactly one plain address such as service@commune.fr")
    return value


def domain_of(address: str) -> str:
    """The lower-cased domain of a validated address."""
    return address.rpartition("@")[2].lower()
