"""Separating what the sender just wrote from quoted history, forwards and signatures.

The classifier should read the new text of a reply, not the mairie's own earlier answer quoted
below it; but when an agent or a citizen forwards a message with only "pour info" on top, the
request is the forwarded part. Markers recognised (French and English clients):

- attribution lines: "Le 3 juin 2025 à 10:12, X <x@y> a écrit :" (possibly wrapped over 3 lines),
  "On Tue, Jun 3, 2025 at 10:12 AM X wrote:";
- separators: "-----Message d'origine-----", "---------- Message transféré ---------",
  "----- Original Message -----", "Début du message réexpédié :", "Begin forwarded message:";
- Outlook header blocks: "De : …" followed within a few lines by "Envoyé : …" / "Date : …";
- lines starting with ">".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(message transf[ée]r[ée]|forwarded message|original message|message d'origine"
    r"|mail original|courriel d'origine|message original)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_FORWARD_INTRO = re.compile(
    r"^\s*(d[ée]but du message r[ée]exp[ée]di[ée]|begin forwarded message)\s*:\s*$", re.IGNORECASE
)
_UNDERSCORES = re.compile(r"^\s*_{8,}\s*$")
_ATTRIBUTION_START = re.compile(r"^\s*(le|on)\s", re.IGNORECASE)
_ATTRIBUTION_END = re.compile(r"(a [ée]crit|wrote)\s*:\s*$", re.IGNORECASE)
_HEADER_FROM = re.compile(r"^\s*\*?(de|from)\s*\*?\s*:\s*\S", re.IGNORECASE)
_HEADER_SENT = re.compile(r"^\s*\*?(envoy[ée]|sent|date)\s*\*?\s*:", re.IGNORECASE)
_HEADER_LINE = re.compile(
    r"^\s*\*?(de|from|envoy[ée]|sent|date|[àa]|to|cc|cci|bcc)\s*\*?\s*:", re.IGNORECASE
)
_QUOTED = re.compile(r"^\s*>")
_SUBJECT_LINE = re.compile(r"^\s*\*?(?:objet|subject)\s*\*?\s*:\s*(.*)$", re.IGNORECASE)

_SIGNATURE_START = re.compile(
    r"^(--|__)\s*$"
    r"|^(envoy[ée] (de|depuis) (mon|ma|l'application|un|outlook)|sent from (my|outlook))\b"
    r"|^(t[ée]l[ée]charger|get) outlook (pour|for)\b"
    r"|^(ce (message|courriel|mail|e-mail)\b.{0,80}(confidenti|exclusivement|destinataire)"
    r"|this (e-?mail|message)\b.{0,80}confidential"
    r"|avertissement\s*:|disclaimer\s*:"
    r"|pensez [àa] l'environnement|please consider the environment)",
    re.IGNORECASE,
)

# Words that carry no request: greetings, closings and the phrases that point at a forward.
_FILLER_WORDS = frozenset(
    """bonjour bonsoir salut madame monsieur mesdames messieurs cher chere chers cheres
    collegue collegues cordialement bien a vous votre vos merci beaucoup d'avance par avance
    bonne belle journee soiree salutations sinceres respectueuses distinguees hello hi dear
    thanks thank you regards best kind pour info information fyi voir ci-dessous cf ci dessous
    see below le la les du de des mail message courriel email e-mail suite donner traitement
    action traiter je vous transfere transfert transmets transmis ci-joint fwd tr et svp
    s'il plait please""".split()  # noqa: SIM905 (a word list reads better as prose)
)
_POINTER = re.compile(
    r"pour (info|information|suite [àa] donner|traitement|action)|ci-dessous|ci dessous"
    r"|\bfyi\b|see below|je vous (transf[èe]re|transmets)|^\s*(tr|fwd?)\s*:",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SplitText:
    """A message body cut into what was just written and what it quotes or forwards."""

    new_text: str
    history: str


def _attribution_span(lines: list[str], index: int) -> int:
    """Length of the attribution line(s) starting at `index` (wrapped over up to 3), or 0."""
    if not _ATTRIBUTION_START.match(lines[index]):
        return 0
    joined = ""
    for span in range(1, 4):
        if index + span > len(lines):
            break
        joined = " ".join(line.strip() for line in lines[index : index + span])
        if _ATTRIBUTION_END.search(joined) and re.search(r"\d|@", joined):
            return span
    return 0


def _is_outlook_block(lines: list[str], index: int) -> bool:
    if not _HEADER_FROM.match(lines[index]):
        return False
    return any(_HEADER_SENT.match(line) for line in lines[index + 1 : index + 5])


def split_history(text: str) -> SplitText:
    """Cut `text` at the first history marker; quoted ">" lines above it go to history too."""
    lines = text.split("\n")
    cut = len(lines)
    for index, line in enumerate(lines):
        if (
            _SEPARATOR.match(line)
            or _FORWARD_INTRO.match(line)
            or _attribution_span(lines, index)
            or _is_outlook_block(lines, index)
        ):
            cut = index
            break
        if (
            _UNDERSCORES.match(line)
            and index + 1 < len(lines)
            and _is_outlook_block(lines, index + 1)
        ):
            cut = index
            break
    head, tail = lines[:cut], lines[cut:]
    new_lines = [line for line in head if not _QUOTED.match(line)]
    quoted = [line for line in head if _QUOTED.match(line)]
    return SplitText(
        new_text="\n".join(new_lines).strip(), history="\n".join(quoted + tail).strip()
    )


def trim_signature(text: str) -> str:
    """Drop a signature, a mobile footer or a legal disclaimer, if content stands above it."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if index and _SIGNATURE_START.match(line.strip()) and "\n".join(lines[:index]).strip():
            return "\n".join(lines[:index]).strip()
    return text.strip()


def _plain_words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(char for char in folded if not unicodedata.combining(char))
    return re.findall(r"[a-z][a-z'\-]*", folded.replace("’", "'"))


def points_to_history(new_text: str) -> bool:
    """True when the new text is empty or only says "see the message below"."""
    content = [word for word in _plain_words(new_text) if word not in _FILLER_WORDS]
    if len(content) <= 3:
        return True
    return bool(_POINTER.search(new_text)) and len(content) <= 10


def _clean_history(history: str) -> str:
    """The forwarded or quoted message itself, without quote marks, markers and address lines."""
    lines = [re.sub(r"^(\s*>)+\s?", "", line) for line in history.split("\n")]
    kept: list[str] = []
    index = 0
    while index < len(lines):  # skip the marker and header block that open the history
        line = lines[index]
        subject = _SUBJECT_LINE.match(line)
        span = _attribution_span(lines, index)
        if subject:
            kept.append(subject.group(1))
        elif span:
            index += span
            continue
        elif line.strip() and not (
            _SEPARATOR.match(line)
            or _FORWARD_INTRO.match(line)
            or _UNDERSCORES.match(line)
            or _HEADER_LINE.match(line)
        ):
            break
        index += 1
    inner = split_history("\n".join(lines[index:]))
    return trim_signature("\n".join([*kept, inner.new_text]))


def classifier_view(body: str) -> str:
    """The text the classifier reads: the new text, or the forwarded request it points to."""
    split = split_history(body)
    new_text = trim_signature(split.new_text)
    if split.history and points_to_history(new_text):
        forwarded = _clean_history(split.history)
        return f"{new_text}\n\n{forwarded}".strip()
    return new_text
