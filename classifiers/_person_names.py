"""Person names in request text, for `classifiers.pseudonymise` (its last step)."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from functools import cache, lru_cache
from importlib import resources

from classifiers.folding import fold

NOM = "<NOM>"
EMAIL = "<EMAIL>"
BLANK = "[ \u00a0\u202f]"  # spaces as typed, and the no-break spaces French typography adds
FIRST_NAMES_RESOURCE = "data/first_names.txt"
"""The given-name list, in the `classifiers` package: one name per line, `#` starts a comment."""

# Person names. A known given name is the main signal; a title, a greeting, an introduction, a
# closing formula, an initial, a form label or an e-mail display name is the other. A
# capitalised word alone never is: sentence starts, communes, services and months survive.
# Word lists hold folded words (lower case, no accents), as `fold` writes them.


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Given names that are also words ("Pierre", "Rose", "Grâce à vous"): alone, they count only
# where a word would not be capitalised, or alone on their line.
_COMMON_WORD_NAMES = _words(
    "pierre rose claire marguerite olive ambre jade violette capucine aurore oceane victoire"
    " constance clemence colombe celeste blanche prune iris reine marine melodie prudence perle"
    " clementine garance florence aude marianne grace mark max ange colin marin urbain modeste"
    " constant aime desire auguste germain martial placide narcisse duc said clement honore come"
    " samba"
)
# Given names holding a part the list leaves out as a word ("France", "Noël").
_COMPOUND_NAMES = _words("marie-france jean-noel marie-noel")
_PARTICLES = _words(
    "de du des la le les van von der den da dos das di del della ben bin ibn el al ait abou mac"
)
_TITLES = _words(
    "m mm mr mrs ms mme mmes mlle melle dr pr me madame monsieur mademoiselle messieurs mesdames"
    " docteur maitre professeur miss sir madam"
)
_NOT_NAME = _TITLES | _words(
    "bonjour bonsoir salut coucou merci cordialement cdlt salutations regards thanks thank dear"
    " hello hi hey best sincerely bien tres bonne beaucoup je j tu il elle on nous vous ils elles"
    " un une ce cet cette ces mon ma mes ton ta tes son sa ses notre nos votre vos leur leurs qui"
    " que quoi dont ou et mais donc or ni car si en y a au aux par pour sur sous dans avec sans"
    " chez vers depuis pendant est sont ai avons avez ont suis etes sommes ne pas plus c s n qu"
    " i we you he she they it the an and of to in on at for with my our your his her is are was"
    " am maire adjoint adjointe directeur directrice president presidente secretaire conseiller"
    " conseillere responsable chef agent agente prefet prefete depute deputee senateur"
    " senatrice commissaire gerant gerante tresorier tresoriere charge chargee assistant"
    " assistante proviseur principal principale instituteur institutrice maitresse infirmier"
    " infirmiere gardien gardienne technicien technicienne janvier fevrier mars avril mai juin"
    " juillet aout septembre octobre novembre decembre lundi mardi mercredi jeudi vendredi samedi"
    " dimanche january february march april may june july august september october november"
    " december monday tuesday wednesday thursday friday saturday sunday urgent svp rdv re tr fw"
    " fwd objet ok pj nb ps cc cci tel email mail courriel nom noms prenom prenoms adresse date"
    " respectueusement sportivement amicalement sincerement remerciements bises vice sous"
    " mayor council team all everyone friends maman papa mamie mamy papi papy tata tonton"
    " rh svt eps cp ce cm pmi ape dgs dst atsem plu rsa apl tva rib iban"
)
# A capitalised word after one of these names a street, a building or a car: "rue Victor
# Hugo", "école Jules-Ferry", "une Renault Zoé".
_PLACE_WORDS = _words(
    "rue ruelle avenue av bd boulevard chemin impasse allee route quai square place cours passage"
    " voie lotissement residence chaussee sentier rond-point faubourg hameau lieu-dit cite"
    " esplanade promenade parvis pont port parc jardin jardins stade gymnase salle ecole college"
    " lycee groupe creche centre espace maison halle mediatheque bibliotheque piscine complexe"
    " foyer hopital clinique ehpad eglise chapelle cathedrale quartier saint sainte st ste clos"
    " domaine gare station arret aeroport theatre cinema musee institut universite fondation"
    " restaurant cantine plage bois renault peugeot citroen dacia toyota volkswagen fiat ford"
    " opel nissan bmw audi mercedes tesla kia hyundai skoda seat"
)
# Words that may stand between a place word and the name: "rue du Général", "école maternelle".
_PLACE_SKIP = _PARTICLES | _words(
    "general marechal president colonel commandant capitaine lieutenant amiral abbe pere docteur"
    " professeur maternelle elementaire primaire scolaire municipal municipale communal"
    " communale sportif sportive culturel culturelle polyvalente fetes public publique"
)
# Capitalised words that make a run of them a body, not a person: "Mairie de Saint-Loup".
_ORG_WORDS = _PLACE_WORDS | _words(
    "mairie ville commune service services voirie urbanisme ccas police gendarmerie pompiers"
    " sdis samu etat civil association comite club collectif syndicat amicale conseil entreprise"
    " societe sarl sas eurl sci cabinet agence direction equipe team bureau accueil secretariat"
    " mission locale departement region prefecture caf cpam sncf edf enedis grdf poste tresor"
    " finances france boulangerie pharmacie librairie gite camping hotel garage"
)
_CONNECTORS = _words("et and")

_TOKEN_RE = re.compile(r"(?<![<\w'’])[^\W\d_]+(?:['’-][^\W\d_]+)*(?![>\w])")
_INITIAL_GAP_RE = re.compile(r"\.-?[ \u00a0]{0,2}")
_NAME_LINE_PUNCTUATION_RE = re.compile(r"(?:[\s.,>&]|(?<=\.)-)*")  # "-" only in "J.-M."
_TITLE_RE = re.compile(
    r"(?<![\w.])(?:M\.|MM\.|Mr\.?|Mrs\.?|Ms\.?|Mme\.?|MME|Mmes|Mlle\.?|Melle|Dr\.?|Pr\.?|Me"
    r"|Docteur|Ma[iî]tre|Professeur|Miss"
    rf"|(?i:madame|monsieur|mademoiselle|famille|family|veuve|épouse|époux|née)){BLANK}+"
)
_GREETING_RE = re.compile(
    rf"(?i:\b(?:bonjour|bonsoir|salut|coucou|hello|hi|hey|dear|cher|chère|chers|chères)){BLANK}+"
)
_INTRO_RE = re.compile(
    r"(?i:\b(?:je m['’]appelle|je me nomme|je me présente|my name is|moi c['’]est))[ :,\u00a0]+"
)
_I_AM_RE = re.compile(rf"(?i:\b(?:je suis|i am|i['’]m)){BLANK}+")
_CLOSING_INLINE_RE = re.compile(
    r"(?i:\b(?:cordialement|bien à vous|merci|regards|sincerely|thanks|bonne journée"
    r"|bonne soirée|à bientôt|amicalement|salutations))[ \t]*[,.!]?[ \t]+"
)
# A line with a closing formula, at its start or its end: the next line may be a signature.
_CLOSING_LINE_RE = re.compile(
    r"(?im)^[ \t>]*(?:(?:bien|très|tres|avec mes|avec nos|je vous|en vous)[ \t]+)?"
    r"(?:cordialement|cdlt|bien à vous|à bientôt|salutations|sincères salutations|merci"
    r"|remerci\w*|bonne (?:journée|soirée|fin de journée|semaine|continuation)|respectueusement"
    r"|amicalement|bises|regards|best regards|kind regards|best wishes|sincerely|yours \w+"
    r"|thanks|thank you|many thanks|cheers)\b.*$"
    r"|^.*(?:salutations|sentiments|considération|respectueuses|distinguées|merci|cordialement"
    r"|remercie)\W*$"
)
_LABEL_RE = re.compile(
    r"(?im)^[ \t]*(?:noms?(?: de famille| d['’]usage| et prénoms?| prénoms?)?"
    r"|prénoms?(?: et nom| nom)?|(?:full |first |last )?name|surname|signataire|demandeur"
    r"|demandeuse|père|mère)[ \t]*:[ \t]*"
)
# After each context: the most words a name may have, whether a punctuation mark or a line end
# must close it ("Bonjour Pierre," but not "Bonjour Tout le monde"), and the fewest words it
# needs ("je suis Français" is no name, "je suis Marc Petit" is one).
_CONTEXTS = (
    (_TITLE_RE, 3, False, 1),
    (_GREETING_RE, 3, True, 1),
    (_INTRO_RE, 3, False, 1),
    (_I_AM_RE, 3, False, 2),
    (_CLOSING_INLINE_RE, 4, True, 1),
)


@cache
def _first_names() -> frozenset[str]:
    """The folded given names of `FIRST_NAMES_RESOURCE`, read once."""
    text = resources.files("classifiers").joinpath(FIRST_NAMES_RESOURCE).read_text("utf-8")
    lines = (line.strip() for line in text.splitlines())
    return frozenset(fold(line) for line in lines if line and not line.startswith("#"))


@lru_cache(maxsize=16384)
def _key(word: str) -> str:
    return fold(word)


def _is_given_name(key: str) -> bool:
    # "Jean-Pierre" is a given name as each part is one; "Saint-Pierre", "Pierre-Bénite" and
    # "Anatole-France" (a school) are not.
    names = _first_names()
    return key in _COMPOUND_NAMES or all(part in names for part in key.split("-"))


class _Words:
    """The words of a text and, by index, what the name rules ask about them: computed once,
    as the rules ask many times."""

    def __init__(self, text: str) -> None:
        self.text = text
        matches = list(_TOKEN_RE.finditer(text))
        self.words = [match.group() for match in matches]
        self.starts = [match.start() for match in matches]
        self.ends = [match.end() for match in matches]
        self.keys = [_key(word) for word in self.words]
        self.index_at = {start: index for index, start in enumerate(self.starts)}
        self.capitalised = [
            word[0].isupper() or (word[:2] in ("d'", "d’") and word[2:3].isupper())
            for word in self.words
        ]
        self.all_caps = [len(word) > 1 and word.isupper() for word in self.words]
        self.initial = [
            all(len(part) == 1 and part.isupper() for part in word.split("-"))
            for word in self.words
        ]
        self._joined = [False] + [self._continues(index) for index in range(1, len(self.words))]
        self.first_name = [
            capital and _is_given_name(key)
            for capital, key in zip(self.capitalised, self.keys, strict=True)
        ]
        self.name_word = [self._may_be_in_name(index) for index in range(len(self.words))]

    def __len__(self) -> int:
        return len(self.words)

    def span(self, first: int, last: int) -> tuple[int, int]:
        return self.starts[first], self.ends[last]

    def gap(self, index: int) -> str:
        """The characters between word `index - 1` and word `index`."""
        return self.text[self.ends[index - 1] : self.starts[index]]

    def joined(self, index: int) -> bool:
        """Whether word `index` exists and may continue the name the word before it is in."""
        return 0 < index < len(self.words) and self._joined[index]

    def _continues(self, index: int) -> bool:
        # On the same line one or two blanks away, or after an initial: "J. Dupont", "P.-Y. Le".
        gap = self.gap(index)
        if 0 < len(gap) <= 2 and not gap.strip(" \t\u00a0"):
            return True
        return self.initial[index - 1] and _INITIAL_GAP_RE.fullmatch(gap) is not None

    def _may_be_in_name(self, index: int) -> bool:
        # Capitalised, and no title, function, month, body or sentence word: "Sous-Préfet" is a
        # function, "L'équipe" an article and a noun.
        key = self.keys[index]
        if self.initial[index]:  # "J. Dupont"; not the "A" of "A bientôt", nor "M." (a title)
            return key not in _TITLES and self.text.startswith(".", self.ends[index])
        if not self.capitalised[index] or key.startswith("l'") or key in _ORG_WORDS:
            return False
        if key in _PARTICLES:  # inside a name only, which `run_end` sees: "Le Gall", "DA SILVA"
            return False
        return key not in _NOT_NAME and not any(part in _NOT_NAME for part in key.split("-")[1:])

    def run_end(self, index: int, limit: int) -> int | None:
        """The last word of the name of at most `limit` words (particles not counted) that
        starts at word `index`, or None when no name starts there."""
        last: int | None = None
        count, current = 0, index
        while current < len(self) and count < limit and (current == index or self.joined(current)):
            if self.keys[current] not in _PARTICLES:
                # After a particle, a word in the other case style starts something else:
                # "Mme Lefèvre des RH", but "Marie de la Fontaine" and "Jean DE LA FONTAINE".
                style_changes = (
                    last is not None
                    and current > last + 1
                    and self.all_caps[current] != self.all_caps[last]
                )
                if not self.name_word[current] or style_changes:
                    break
                last, count = current, count + 1
            current += 1
        return last

    def names_a_place(self, index: int) -> bool:
        """Whether word `index` follows a street type, a building, a car make or "Saint"."""
        current = index - 1
        while current >= 0 and not any(char in ".!?;:()\n" for char in self.gap(current + 1)):
            key = self.keys[current].removeprefix("l'").removeprefix("d'")
            if key in _PLACE_WORDS:
                return True
            if key not in _PLACE_SKIP:
                return False
            current -= 1
        return False

    def starts_sentence(self, index: int) -> bool:
        position = self.starts[index] - 1
        while position >= 0 and self.text[position] in " \t\u00a0\"«“'(":
            position -= 1
        return position < 0 or self.text[position] in ".!?:;…\n-•*>"

    def line(self, index: int) -> tuple[int, int]:
        """Where the line holding word `index` starts and ends, blanks left out."""
        start = self.text.rfind("\n", 0, self.starts[index]) + 1
        end = self.text.find("\n", self.starts[index])
        line = self.text[start : len(self.text) if end < 0 else end]
        return start + len(line) - len(line.lstrip()), start + len(line.rstrip())


def replace_names(text: str) -> str:
    words = _Words(text)
    spans = sorted(
        [
            *_first_name_spans(words),
            *_context_spans(words),
            *_signature_spans(words),
            *_display_name_spans(words),
            *_label_spans(words),
        ]
    )
    pieces: list[str] = []
    position = 0
    for start, end in spans:
        if start >= position:  # rules that found the same name overlap: one placeholder
            pieces += [text[position:start], NOM]
        position = max(position, end)
    return "".join([*pieces, text[position:]])


def _first_name_spans(words: _Words) -> list[tuple[int, int]]:
    """Given names, with the surname after them ("Jean DUPONT") or in capitals before them."""
    spans = []
    index = 0
    while index < len(words):
        if not words.first_name[index]:
            index += 1
            continue
        last_given = index
        while last_given - index < 2 and words.joined(last_given + 1):
            if not words.first_name[last_given + 1]:
                break
            last_given += 1
        end = last_given
        if words.joined(last_given + 1):
            end = words.run_end(last_given + 1, 2) or last_given  # Maria da Conceição Lopes
            while end - last_given < 3 and words.all_caps[end] and words.joined(end + 1):
                if not (words.all_caps[end + 1] and words.name_word[end + 1]):
                    break
                end += 1  # DE LA FONTAINE, DA SILVA SANTOS
        start = index
        if words.joined(index) and words.all_caps[index - 1] and words.name_word[index - 1]:
            start = index - 1 if not words.first_name[index - 1] else index
        if _is_person(words, start, index, last_given, end):
            spans.append(words.span(start, end))
        index = end + 1
    return spans


def _is_person(words: _Words, start: int, first: int, last_given: int, end: int) -> bool:
    """Whether the given names `first..last_given`, in the name `start..end`, name a person."""
    if words.names_a_place(start):
        return False
    given = range(first, last_given + 1)
    capitals = [words.all_caps[index] for index in given]
    has_surname = start < first or end > last_given or (any(capitals) and not all(capitals))
    common_words = all(words.keys[index] in _COMMON_WORD_NAMES for index in given)
    if all(capitals):
        # A given name in capitals needs a surname next to it and, in an all-capital line
        # ("CHUTE DE PIERRE SUR LA ROUTE"), must not also be a word.
        line_start, line_end = words.line(first)
        all_caps_line = not any(char.islower() for char in words.text[line_start:line_end])
        return has_surname and not (all_caps_line and common_words)
    if has_surname or not common_words or words.line(start) == words.span(start, end):
        return True
    after_capital = words.joined(first) and words.capitalised[first - 1]  # la Croix Blanche
    return not words.starts_sentence(first) and not after_capital


def _context_spans(words: _Words) -> list[tuple[int, int]]:
    """Names after a title, a greeting, an introduction or a closing formula, and names that
    start with an initial at a sentence start ("S. Vial")."""
    spans = []
    for pattern, limit, closed, at_least in _CONTEXTS:
        for match in pattern.finditer(words.text):
            index = words.index_at.get(match.end())
            if index is not None and not words.names_a_place(index - 1):  # rue du Docteur Roux
                spans += _run_span(words, index, limit, closed=closed, at_least=at_least)
    for index in range(len(words)):
        if words.initial[index] and words.name_word[index] and words.starts_sentence(index):
            spans += _run_span(words, index, 3, closed=True)
    return spans


def _run_span(
    words: _Words, index: int, limit: int, *, closed: bool = False, at_least: int = 1
) -> list[tuple[int, int]]:
    """The name of at most `limit` words starting at word `index`, if there is one, it has
    `at_least` words and, when `closed`, a punctuation mark or a line end follows it."""
    end = words.run_end(index, limit)
    if end is None:
        return []
    while words.keys[index] in _PARTICLES and not words.capitalised[index]:
        index += 1  # "veuve de <NOM>", but "Madame <NOM>" for "Madame Le Floch"
    count = sum(1 for current in range(index, end + 1) if words.keys[current] not in _PARTICLES)
    after = words.text[words.ends[end] :].lstrip(" \t\u00a0")
    if count < at_least or (closed and after and after[0] not in ",!.;:\n"):
        return []
    return [words.span(index, end)]


def _signature_spans(words: _Words) -> list[tuple[int, int]]:
    """The people named on the first line after a line with a closing formula."""
    spans = []
    for match in _CLOSING_LINE_RE.finditer(words.text):
        start = len(words.text) - len(words.text[match.end() :].lstrip())
        end = words.text.find("\n", start)
        spans += _line_of_names(words, start, len(words.text) if end < 0 else end)
    return spans


def _line_of_names(words: _Words, start: int, end: int) -> list[tuple[int, int]]:
    """The people the line `start..end` names when it holds only capitalised names joined by
    "et" or "and" ("Claire et Paul Martin", "J.-M. Dupont"); nothing when it holds more."""
    indices = range(bisect_left(words.starts, start), bisect_left(words.starts, end))
    punctuation = _TOKEN_RE.sub("", words.text[start:end])
    if not indices or _NAME_LINE_PUNCTUATION_RE.fullmatch(punctuation) is None:
        return []
    people: list[list[int]] = [[]]
    for index in indices:
        if words.keys[index] in _CONNECTORS:
            people.append([])
        elif words.name_word[index] or words.initial[index]:  # "R Fauvel" has no full stop
            people[-1].append(index)
        elif words.keys[index] not in _PARTICLES:
            return []
    if not all(0 < len(person) <= 4 for person in people):
        return []
    return [words.span(person[0], person[-1]) for person in people]


def _display_name_spans(words: _Words) -> list[tuple[int, int]]:
    """The name an e-mail client writes before an address: "Karine Bouvier <karine@…>"."""
    spans = []
    ends = words.ends
    for match in re.finditer(re.escape(EMAIL), words.text):
        last = bisect_right(ends, match.start()) - 1
        if last < 0 or not re.fullmatch(
            r"[ \t\"'<(\[]{0,4}", words.text[ends[last] : match.start()]
        ):
            continue
        first: int | None = None
        current = last
        while current >= 0 and (current == last or words.joined(current + 1)):
            if words.keys[current] in _ORG_WORDS:  # "Mairie de Saint-Loup <mairie@…>"
                first = None
                break
            if words.keys[current] not in _PARTICLES:
                if not words.name_word[current] or last - current >= 4:
                    break
                first = current
            current -= 1
        if first is not None:
            spans.append(words.span(first, last))
    return spans


def _label_spans(words: _Words) -> list[tuple[int, int]]:
    """The rest of a form line labelled with a name ("Nom : DUPONT"), in whatever case."""
    spans = []
    for match in _LABEL_RE.finditer(words.text):
        first = words.index_at.get(match.end())
        if first is None or words.keys[first] in _NOT_NAME:
            continue
        last = first
        while last - first < 3 and words.joined(last + 1) and words.keys[last + 1] not in _NOT_NAME:
            last += 1
        spans.append(words.span(first, last))
    return spans
