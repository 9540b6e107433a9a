"""Turning raw bytes (an email or an e-form) into a validated `Request`."""

from __future__ import annotations

from pathlib import Path

from worker.errors import ParseError
from worker.parsing.eform_parser import load_eform, parse_eform
from worker.parsing.email_parser import parse_email
from worker.parsing.limits import ParseLimits
from worker.request import Channel, RawRequest, Request

__all__ = [
    "ParseLimits",
    "channel_for_path",
    "load_eform",
    "parse_eform",
    "parse_email",
    "parse_raw",
    "read_raw",
]

_SUFFIXES = {".eml": Channel.EMAIL, ".json": Channel.FORM}


def channel_for_path(path: Path) -> Channel | None:
    """The channel a file's suffix stands for, or None for files that are not requests."""
    return _SUFFIXES.get(path.suffix.lower())


def read_raw(path: Path, limits: ParseLimits | None = None) -> RawRequest:
    """Read a request file, refusing unknown suffixes and files past the size limit unread."""
    limits = limits or ParseLimits()
    channel = channel_for_path(path)
    if channel is None:
        raise ParseError(f"unsupported file type {path.suffix!r}: expected .eml or .json")
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ParseError(f"file of {size} bytes exceeds the limit of {limits.max_bytes}")
        payload = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"cannot read file ({exc.strerror or type(exc).__name__})") from exc
    return RawRequest(payload=payload, channel=channel, origin=str(path))


def parse_raw(raw: RawRequest, limits: ParseLimits | None = None) -> Request:
    """Parse raw bytes according to their channel."""
    if raw.channel is Channel.EMAIL:
        return parse_email(raw.payload, limits)
    return parse_eform(raw.payload, limits)
