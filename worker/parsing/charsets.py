"""Decoding text whose declared charset may be missing, unknown or wrong.

French mail in the wild is UTF-8, ISO-8859-1 or windows-1252, and the label does not always match
the bytes. The rules, in order:
1. ISO-8859-1 (and its aliases) is read as windows-1252, its superset, as browsers do: mail labelled
   latin-1 routinely carries windows-1252 quotes, the euro sign and "œ".
2. Text labelled as a single-byte charset that is valid UTF-8 with non-ASCII bytes is UTF-8: real
   windows-1252 French text almost never forms valid multi-byte UTF-8 sequences by accident.
3. A declared charset is tried strictly; if it is unknown or the bytes do not fit, UTF-8, then
   windows-1252 are tried; latin-1 never fails and ends the chain.
"""

from __future__ import annotations

import codecs

_SINGLE_BYTE_LATIN = frozenset({"iso8859-1", "cp1252", "iso8859-15", "ascii"})


def _normalise(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset.strip().strip('"').lower()).name
    except LookupError:
        return None


def decode_text(data: bytes, declared: str | None) -> tuple[str, str | None]:
    """Decode `data`, returning the text and a warning when the declared charset was not used."""
    charset = _normalise(declared)
    if charset == "iso8859-1":
        charset = "cp1252"
    candidates: list[str] = []
    if charset in _SINGLE_BYTE_LATIN and not data.isascii():
        candidates.append("utf-8")
    if charset:
        candidates.append(charset)
    candidates += ["utf-8", "cp1252"]
    for candidate in dict.fromkeys(candidates):
        try:
            text = data.decode(candidate)
        except UnicodeDecodeError:
            continue
        warning = None
        if declared and charset is None:
            warning = f"unknown charset {declared!r}; decoded as {candidate}"
        elif declared and candidate != charset:
            warning = f"declared charset {declared!r} did not fit; decoded as {candidate}"
        return text, warning
    return data.decode("latin-1"), f"undecodable text; read as latin-1 (declared {declared!r})"
