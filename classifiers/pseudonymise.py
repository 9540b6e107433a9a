"""Pseudonymisation of request text: personal identifiers become typed placeholders.

Training and serving both read text that went through `pseudonymise`, so the classifier learns
and predicts on the same input, and nothing that identifies a citizen reaches a model, a
decision log or a kept request (RGPD, data minimisation). Replaced: e-mail addresses, IBANs,
social-security numbers (NIR), payment cards, phone numbers, licence plates, number-and-street
addresses and person names. Kept on purpose, because they name nobody and help routing:
communes, postal codes, dates, amounts, file references, service names and forms of address
such as "Madame la Maire".

The steps run in a fixed order, each on the previous one's output: e-mails first (their local
part holds names and digits); then the long numbers, strictest check first — IBAN (mod 97),
NIR (its key), payment card (Luhn) — so that none is cut into a phone number; then phones,
plates and addresses (a street named after a person stays an address); names last, on text
whose numbers and streets are gone. A placeholder is never matched again, so the transform is
idempotent, and everything outside a replaced span is kept byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from classifiers._person_names import BLANK, EMAIL, NOM, replace_names
from classifiers.explain import Word

__all__ = ["PLACEHOLDERS", "is_placeholder", "pseudonymise"]

IBAN = "<IBAN>"
NIR = "<NIR>"
CARTE = "<CARTE>"
TEL = "<TEL>"
PLAQUE = "<PLAQUE>"
ADRESSE = "<ADRESSE>"

PLACEHOLDERS: tuple[str, ...] = (EMAIL, IBAN, NIR, CARTE, TEL, PLAQUE, ADRESSE, NOM)
"""Every placeholder `pseudonymise` can write, in the order its steps run."""


_EMAIL_RE = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[\w-]+\.)+[^\W\d_]{2,}(?![\w-])")

_IBAN_RE = re.compile(r"(?<!\w)[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)")
_IBAN_LENGTHS = {
    "FR": 27, "MC": 27, "BE": 16, "LU": 20, "CH": 21, "DE": 22, "NL": 18, "GB": 22, "IE": 22,
    "ES": 24, "PT": 25, "IT": 27, "AT": 20, "PL": 28, "RO": 24, "MA": 28, "TN": 24, "DZ": 26,
    "SN": 28, "CI": 28, "TR": 26,
}  # fmt: skip

# Sex, year, month, department (2A/2B in Corsica), six digits that overseas departments group
# 3+3 rather than 2+4, and the key; a space or a dot may follow each group.
_NIR_RE = re.compile(
    r"(?<!\w)[12](?:[ .]?\d{2}){2}[ .]?(?:\d{2}|2[AB])(?:[ .]?\d){6}[ .]?\d{2}(?!\w)"
)

_CARD_RE = re.compile(
    r"(?<![\w.,])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"  # 16 to 19 digits, by four
    r"|\d{4}([ -])\d{6}\2\d{4,5}"  # American Express and Diners: 4-6-5 and 4-6-4
    r"|\d{13,19})(?!\w|[.,]\d)"
)

# The same separator between every pair, so that "03.04.2025 12:30" is no phone; +33 with or
# without the "(0)" or the 0 people keep by mistake; other countries' + numbers too.
_TEL_RE = re.compile(
    r"(?<![\w+])(?:(?:\(?(?:\+|00) ?33\)? ?(?:\(0\) ?|0 ?)?[1-9]|0[1-9])"
    r"([ .\-\u00a0\u202f]?)\d{2}(?:\1\d{2}){3}"
    r"|\+(?!33)[1-9]\d{0,2}(?:[ .-]?\(0\))?(?:[ .-]?\d){6,12})(?!\d)"
)

_PLATE_LETTER = "[A-HJ-NP-TV-Z]"  # plates since 2009 use no I, O or U
_PLATE_RE = re.compile(
    rf"(?<![\w-])(?:({_PLATE_LETTER}{{2}})([ -]?)\d{{3}}\2({_PLATE_LETTER}{{2}})"
    # The old "1234 AB 56", without dashes and not starting with a year: "2025-TX-07" is a
    # tender reference.
    r"|(?!(?:19|20)\d\d\b)\d{3,4}( ?)([A-Z]{1,3})\4"
    r"(?:0[1-9]|[1-8]\d|9[0-5]|2[AB]|97[1-6]))(?![\w-])"
)
# Two-letter words that look like a plate's letters in an all-caps sentence: "LE 112 NE REPOND".
_PLATE_WORDS = frozenset({"LE", "LA", "DE", "EN", "ET", "NE", "SE", "CE", "SA", "MA", "TA", "ME"})

_MONTHS = (
    "janvier|février|fevrier|mars|avril|mai|juin|juillet|août|aout|septembre|octobre|novembre"
    "|décembre|decembre"
)
_CAP_WORD = r"[A-ZÀ-ÖØ-Þ][^\W\d_]*(?:['’-][^\W\d_]+)*"
# Words that end a street name written in lower case: "12 rue basse a démoli".
_LOW_STOP = (
    "à|a|au|aux|est|sont|était|et|ou|où|qui|que|qu|depuis|pour|par|dans|avec|chez|mais|donc|car"
    "|ne|n|il|elle|ils|elles|on|je|j|nous|vous|y|se|s|c|ce|cette|mon|ma|mes|notre|nos|votre|vos"
    "|son|sa|ses|leur|leurs|un|une|près|devant|derrière|entre|vers|face|côté|juste|pendant|lors"
    "|quand|comme|si|the|and"
)
_LOW_WORD = rf"(?!(?:{_LOW_STOP})(?![^\W\d_]))[a-zß-öø-ÿ][^\W\d_]*(?:['’-][^\W\d_]+)*"
_DATE_WORD = rf"\d{{1,2}}(?:er)?{BLANK}+(?i:{_MONTHS})(?:{BLANK}+\d{{4}})?"  # rue du 8 Mai 1945
_PARTICLE = rf"(?:(?:de|du|des|la|le|les|aux|au|en|sur|sous|lès){BLANK}+|[dlDL]['’])"
_STREET_NAME_WORD = rf"(?:{_CAP_WORD}|{_DATE_WORD})"
_STREET = (
    "rue|ruelle|avenue|av|boulevard|bd|bld|bvd|chemin|impasse|imp|allée|allee|route|rte|quai"
    "|lotissement|résidence|residence|chaussée|chaussee|sentier|rond-point|faubourg|fbg|hameau"
    "|lieu-dit|lieudit|cité|cite|esplanade|promenade|montée|montee|traverse|venelle|parvis|square"
)
# Street types that are also common words ("3 cours de piano", "1 place de libre"): the
# street's name must then be capitalised.
_STREET_AMBIGUOUS = "place|pl|cours|passage|voie|clos|lot"
_ADDRESS_RE = re.compile(
    rf"(?<![\w,.])\d{{1,4}}(?:-\d{{1,4}})?(?: ?(?:bis|ter|quater|[A-D])(?!\w))?,?{BLANK}+"
    rf"(?:(?i:{_STREET})\.?{BLANK}+{_PARTICLE}*(?:{_STREET_NAME_WORD}|{_LOW_WORD})"
    rf"|(?i:{_STREET_AMBIGUOUS})\.?{BLANK}+{_PARTICLE}*{_STREET_NAME_WORD})"
    rf"(?:{BLANK}+{_PARTICLE}*{_STREET_NAME_WORD})*"
)


def pseudonymise(text: str) -> str:
    """`text` with every personal identifier found replaced by its placeholder.

    Deterministic and idempotent; characters outside the replaced spans are left as they are.
    """
    for pattern, replacement in _PATTERN_STEPS:
        text = pattern.sub(replacement, text)
    return replace_names(text)


def _replace_iban(match: re.Match[str]) -> str:
    # The pattern may take a trailing group that is no part of the IBAN: drop groups until the
    # checksum holds. One of a common country's exact length counts even with a typo in it.
    groups = match.group().split(" ")
    for end in range(len(groups), 0, -1):
        if _iban_valid("".join(groups[:end])):
            return " ".join([IBAN, *groups[end:]])
    compact = "".join(groups)
    return IBAN if _IBAN_LENGTHS.get(compact[:2]) == len(compact) else match.group()


def _iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _replace_nir(match: re.Match[str]) -> str:
    raw = match.group()
    compact = raw.replace(" ", "").replace(".", "")
    department = {"2A": "19", "2B": "18"}.get(compact[5:7], compact[5:7])  # the official rule
    key_valid = 97 - int(compact[:5] + department + compact[7:13]) % 97 == int(compact[13:])
    # Written in its usual groups it is a NIR even when the key was mistyped.
    grouped = len(raw) - len(compact) >= 5
    return NIR if key_valid or grouped else raw


def _replace_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    if digits[0] not in "23456" or not _luhn_valid(digits):
        return match.group()
    # 14 digits that are not a Diners card are most likely a SIRET, which is Luhn-valid too.
    if len(digits) == 14 and digits[:2] not in ("30", "36", "38"):
        return match.group()
    return CARTE


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _replace_plate(match: re.Match[str]) -> str:
    new_first, new_separator, new_last, old_separator, old_letters = match.groups()
    if new_first is not None:
        separator, letters = new_separator, {new_first, new_last}
    else:
        separator, letters = old_separator, {old_letters}
    return match.group() if separator != "-" and letters & _PLATE_WORDS else PLAQUE


_PATTERN_STEPS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (_EMAIL_RE, EMAIL),
    (_IBAN_RE, _replace_iban),
    (_NIR_RE, _replace_nir),
    (_CARD_RE, _replace_card),
    (_TEL_RE, TEL),
    (_PLATE_RE, _replace_plate),
    (_ADDRESS_RE, ADRESSE),
)
"""Every step but names, in the order the module docstring explains."""


def is_placeholder(text: str, word: Word) -> bool:
    """Whether `word` of `text` is the name inside a placeholder (`NOM` of `<NOM>`)."""
    return (
        text[word.start - 1 : word.start] == "<"
        and text[word.end : word.end + 1] == ">"
        and f"<{word.text}>" in PLACEHOLDERS
    )
