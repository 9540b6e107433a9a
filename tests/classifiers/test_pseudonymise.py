"""Tests of `classifiers/pseudonymise.py`: personal identifiers become typed placeholders."""

from __future__ import annotations

import json
import random
import re
import statistics
import string
import time
import tomllib
from importlib import resources

import pytest

from classifiers._person_names import FIRST_NAMES_RESOURCE
from classifiers.pseudonymise import PLACEHOLDERS, pseudonymise
from tests.conftest import FIXTURES
from worker.config import PROJECT_ROOT

CASES = [
    json.loads(line)
    for line in (FIXTURES / "pseudonymisation" / "cases.jsonl").read_text("utf-8").splitlines()
]
SEED = 20250312
ROUNDS = 300

# Sentences a generated value is written into; the text around it must come out unchanged.
CARRIERS = (
    "Vous pouvez me joindre au {} après 18h.",
    "Mon contact : {}",
    "{} — merci de le noter dans le dossier.",
    "Voici ce que vous m'avez demandé : {}, pour le dossier de cantine.",
    "Je vous transmets {} comme convenu avec l'accueil.",
    "Pour la facture de mars (réf. {}) le montant est de 45 €.",
    "Coordonnées :\n{}\nMerci d'avance.",
)

NO_IDENTIFIER_TEXTS = (
    "Madame la Maire,\n\nLa rue est inondée depuis ce matin au carrefour de la rue Victor Hugo. "
    "Pouvez-vous prévenir la Voirie ?\n\nMerci.",
    "Bonjour, le marché de Noël aura-t-il lieu le samedi 13 décembre place de l'Église ? "
    "Le stand coûte-t-il toujours 45 € ?",
    "Monsieur le Maire, Mesdames et Messieurs les élus,\nLe Comité des fêtes de "
    "Saint-Loup-des-Vignes vous invite à son assemblée générale le vendredi 7 mars à 20h30.",
    "Objet : PC 069 123 24 A0012 – pièces complémentaires\nVeuillez trouver ci-joint le plan "
    "de masse demandé le 12/03/2025 par le service Urbanisme.",
    "URGENT : ARBRE TOMBÉ SUR LA ROUTE DE LYON, LA CHAUSSÉE EST BLOQUÉE DANS LES DEUX SENS",
    "Je souhaite inscrire ma fille à la cantine à partir de septembre. Le tarif est-il "
    "toujours de 3,20 € le repas ? Merci, bonne journée.",
    "Dear Sir or Madam, could you tell me when the recycling centre is open in January? "
    "Many thanks.",
    "Madame, Monsieur,\nLa Police municipale et le CCAS ont été prévenus. Rendez-vous à "
    "75011 Paris puis 69003 Lyon, 2 rues plus loin, après 3 cours de piano ; 1 place de libre.",
)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _leaks(planted: str, output: str) -> list[str]:
    """What of `planted` is still readable in `output`: the string itself, its digits when it
    has at least four (whatever the separators), and, for a name, any word of it."""
    leaks = [planted] if planted in output else []
    digits = _digits(planted)
    if len(digits) >= 4 and any(
        digits in _digits(run) for run in re.findall(r"\d[\d .()-]*", output)
    ):
        leaks.append(digits)
    if not any(char.isdigit() or char in "@+" for char in planted):
        words = [word for word in re.findall(r"[^\W\d_]{3,}", planted) if word[0].isupper()]
        leaks += [word for word in words if re.search(rf"\b{re.escape(word)}\b", output)]
    return leaks


def _luhn_complete(partial: str) -> str:
    """`partial` followed by the digit that makes it pass the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(partial)):
        value = int(char) * (1 if position % 2 else 2)
        total += value - 9 if value > 9 else value
    return partial + str(-total % 10)


def _iban(country: str, bban: str) -> str:
    number = int("".join(str(int(char, 36)) for char in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def _in_groups(value: str, sizes: tuple[int, ...], separator: str) -> str:
    groups, position = [], 0
    for size in sizes:
        groups.append(value[position : position + size])
        position += size
    return separator.join(group for group in groups if group)


def _assert_replaced(values: list[str], placeholder: str, rng: random.Random) -> None:
    for value in values:
        carrier = rng.choice(CARRIERS)
        assert pseudonymise(carrier.format(value)) == carrier.format(placeholder), value


def _phone(rng: random.Random) -> str:
    first = rng.choice("123456789")
    pairs = [f"{rng.randrange(100):02d}" for _ in range(4)]
    separator = rng.choice([" ", ".", "-", ""])
    national = separator.join([f"0{first}", *pairs])
    return rng.choice(
        [
            national,
            separator.join([f"+33 {first}", *pairs]),
            separator.join([f"+33 (0){first}", *pairs]),
            separator.join([f"+33{first}", *pairs]),
            separator.join([f"0033 {first}", *pairs]),
        ]
    )


def _email(rng: random.Random) -> str:
    def label(alphabet: str) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))

    local_alphabet = string.ascii_lowercase + string.digits
    local = label(local_alphabet)
    for _ in range(rng.randint(0, 2)):
        local += rng.choice(".+-_") + label(local_alphabet)
    domain = ".".join(label(string.ascii_lowercase) for _ in range(rng.randint(1, 2)))
    tld = rng.choice(["fr", "gouv.fr", "com", "org", "net", "eu", "bzh", "paris", "example"])
    return f"{local if rng.random() < 0.8 else local.capitalize()}@{domain}.{tld}"


def _random_iban(rng: random.Random) -> str:
    def chars(alphabet: str, count: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(count))

    digits, upper = string.digits, string.ascii_uppercase
    country, bban = rng.choice(
        [
            ("FR", chars(digits, 10) + chars(digits + upper, 11) + chars(digits, 2)),
            ("DE", chars(digits, 18)),
            ("BE", chars(digits, 12)),
            ("ES", chars(digits, 20)),
            ("IT", chars(upper, 1) + chars(digits, 10) + chars(digits + upper, 12)),
            ("GB", chars(upper, 4) + chars(digits, 14)),
        ]
    )
    compact = _iban(country, bban)
    if rng.random() < 0.5:
        return compact
    return " ".join(compact[index : index + 4] for index in range(0, len(compact), 4))


def _nir(rng: random.Random) -> str:
    sex, year, month = rng.choice("12"), f"{rng.randrange(100):02d}", f"{rng.randint(1, 12):02d}"
    kind = rng.random()
    if kind < 0.15:
        place, sizes = rng.choice(["2A", "2B"]) + f"{rng.randint(1, 999):03d}", (2, 3)
    elif kind < 0.3:
        place, sizes = f"97{rng.randint(1, 6)}{rng.randint(1, 99):02d}", (3, 2)
    else:
        place, sizes = (
            f"{rng.choice([*range(1, 20), *range(21, 96)]):02d}{rng.randint(1, 999):03d}",
            (2, 3),
        )
    body = f"{sex}{year}{month}{place}{rng.randint(1, 999):03d}"
    corsica = {"2A": "19", "2B": "18"}.get(body[5:7], body[5:7])
    number = body + f"{97 - int(body[:5] + corsica + body[7:]) % 97:02d}"
    if rng.random() < 0.5:
        return number
    return _in_groups(number, (1, 2, 2, *sizes, 3, 2), " ")


def _card(rng: random.Random) -> str:
    prefix, length, sizes = rng.choice(
        [
            ("4", 16, (4, 4, 4, 4)),
            ("4", 13, (13,)),
            ("4", 19, (4, 4, 4, 4, 3)),
            (str(rng.randint(51, 55)), 16, (4, 4, 4, 4)),
            (str(rng.randint(2221, 2720)), 16, (4, 4, 4, 4)),
            (rng.choice(["34", "37"]), 15, (4, 6, 5)),
            ("6011", 16, (4, 4, 4, 4)),
            ("36", 14, (4, 6, 4)),
        ]
    )
    partial = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = _luhn_complete(partial)
    return number if rng.random() < 0.3 else _in_groups(number, sizes, rng.choice([" ", "-"]))


class TestPlaceholders:
    def test_placeholders_are_the_eight_typed_tags(self) -> None:
        """PLACEHOLDERS lists the eight tags the other modules expect, each once."""
        expected = {
            "<EMAIL>",
            "<TEL>",
            "<NIR>",
            "<IBAN>",
            "<CARTE>",
            "<ADRESSE>",
            "<PLAQUE>",
            "<NOM>",
        }
        assert set(PLACEHOLDERS) == expected
        assert len(PLACEHOLDERS) == len(expected)

    def test_output_holds_no_other_tag(self) -> None:
        """Every tag the transform writes into the realistic requests is one of PLACEHOLDERS."""
        written = {
            tag for case in CASES for tag in re.findall(r"<[A-Z]+>", pseudonymise(case["text"]))
        }
        assert written <= set(PLACEHOLDERS)

    def test_placeholders_are_never_altered(self) -> None:
        """A text made of placeholders and plain words comes back unchanged."""
        text = (
            "Bonjour <NOM>,\nM. <NOM> (<TEL>, <EMAIL>) habite au <ADRESSE>.\nCordialement,\n<NOM>"
        )
        assert pseudonymise(text) == text


class TestRealisticRequests:
    @pytest.mark.parametrize("case", CASES, ids=lambda case: case["text"].split("\n")[0][:40])
    def test_planted_identifiers_are_gone(self, case: dict[str, list[str] | str]) -> None:
        """No planted identifier, nor its digits, nor a word of a planted name, survives."""
        output = pseudonymise(str(case["text"]))
        assert {planted: _leaks(planted, output) for planted in case["planted"]} == {
            planted: [] for planted in case["planted"]
        }

    @pytest.mark.parametrize("case", CASES, ids=lambda case: case["text"].split("\n")[0][:40])
    def test_kept_strings_survive(self, case: dict[str, list[str] | str]) -> None:
        """Forms of address, services, places, dates, amounts and references are kept."""
        output = pseudonymise(str(case["text"]))
        assert [kept for kept in case["kept"] if kept not in output] == []

    def test_fixtures_cover_french_and_english(self) -> None:
        """The fixture file holds about twenty-five requests, two of them in English."""
        english = [case for case in CASES if "Dear" in case["text"] or "Hello" in case["text"]]
        assert len(CASES) >= 25
        assert len(english) == 2


class TestGeneratedIdentifiers:
    def test_french_phone_numbers_become_tel(self) -> None:
        """Phones in every separator style and +33 / 0033 form are replaced, carrier intact."""
        rng = random.Random(SEED)
        _assert_replaced([_phone(rng) for _ in range(ROUNDS)], "<TEL>", rng)

    def test_emails_become_email(self) -> None:
        """Addresses with dots, plus signs and dashes, on any domain, are replaced."""
        rng = random.Random(SEED + 1)
        _assert_replaced([_email(rng) for _ in range(ROUNDS)], "<EMAIL>", rng)

    def test_valid_ibans_become_iban(self) -> None:
        """IBANs of six countries with valid check digits, grouped or not, are replaced."""
        rng = random.Random(SEED + 2)
        _assert_replaced([_random_iban(rng) for _ in range(ROUNDS)], "<IBAN>", rng)

    def test_nirs_with_a_valid_key_become_nir(self) -> None:
        """NIRs, Corsican and overseas ones included, grouped or not, are replaced."""
        rng = random.Random(SEED + 3)
        _assert_replaced([_nir(rng) for _ in range(ROUNDS)], "<NIR>", rng)

    def test_luhn_valid_cards_become_carte(self) -> None:
        """Card numbers of 13 to 19 digits that pass Luhn, grouped or not, are replaced."""
        rng = random.Random(SEED + 4)
        _assert_replaced([_card(rng) for _ in range(ROUNDS)], "<CARTE>", rng)

    def test_generated_values_are_idempotent(self) -> None:
        """Transforming a carrier twice gives what transforming it once gives."""
        rng = random.Random(SEED + 5)
        makers = (_phone, _email, _random_iban, _nir, _card)
        texts = [rng.choice(CARRIERS).format(rng.choice(makers)(rng)) for _ in range(ROUNDS)]
        assert [pseudonymise(pseudonymise(text)) for text in texts] == [
            pseudonymise(text) for text in texts
        ]


class TestNumbersThatAreNoIdentifiers:
    def test_luhn_invalid_card_number_survives(self) -> None:
        """Sixteen digits that fail the Luhn check are left alone."""
        number = _luhn_complete("497010123456789")
        wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
        assert pseudonymise(f"Commande n° {wrong} livrée.") == f"Commande n° {wrong} livrée."

    def test_siret_survives(self) -> None:
        """A company's SIRET, Luhn-valid, grouped or not, is kept: it names no person."""
        siret = _luhn_complete("7328293200007")
        text = f"SIRET {siret[:3]} {siret[3:6]} {siret[6:9]} {siret[9:]} ou {siret}."
        assert pseudonymise(text) == text

    def test_ungrouped_number_with_a_wrong_nir_key_survives(self) -> None:
        """Fifteen digits whose last two are not the NIR key stay, written in one block."""
        rng = random.Random(SEED)
        nir = _nir(rng).replace(" ", "")
        wrong = nir[:13] + f"{(int(nir[13:]) + 1) % 100:02d}"
        assert pseudonymise(f"Dossier {wrong} clos.") == f"Dossier {wrong} clos."

    def test_dates_times_and_references_survive(self) -> None:
        """Dates with dots, times, tender references and amounts are no phone or plate."""
        text = "Le 03.04.2025 12:30, consultation 2025-TX-07 : 1 250,00 € (facture 25-0461)."
        assert pseudonymise(text) == text

    def test_foreign_number_with_plus_becomes_tel(self) -> None:
        """A number with another country's + prefix is replaced too."""
        assert pseudonymise("Call me on +44 7700 900123.") == "Call me on <TEL>."


class TestPlates:
    @pytest.mark.parametrize(
        "plate", ["AB-123-CD", "AB 123 CD", "AB123CD", "1234 AB 56", "123 ABC 2A"]
    )
    def test_plates_become_plaque(self, plate: str) -> None:
        """Current and old French plates, in each usual writing, are replaced."""
        assert pseudonymise(f"La voiture {plate} gêne.") == "La voiture <PLAQUE> gêne."

    def test_all_caps_sentence_is_no_plate(self) -> None:
        """Two-letter words around a number in capitals are not a plate."""
        assert pseudonymise("LE 112 NE REPOND PAS") == "LE 112 NE REPOND PAS"


class TestAddresses:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("au 12 rue de la Paix 75011 Paris.", "au <ADRESSE> 75011 Paris."),
            ("au 3 bis avenue du Général Leclerc, côté pair", "au <ADRESSE>, côté pair"),
            ("Le propriétaire du 12 rue Basse a démoli", "Le propriétaire du <ADRESSE> a démoli"),
            ("J'habite 12, rue Pasteur depuis mars", "J'habite <ADRESSE> depuis mars"),
            ("au 4 rue du 8 Mai 1945.", "au <ADRESSE>."),
            ("au 5 impasse des lilas il y a un trou", "au <ADRESSE> il y a un trou"),
            ("au 6-10 rue de la Tuilerie\n", "au <ADRESSE>\n"),
            ("garée 2 place Bellecour.", "garée <ADRESSE>."),
        ],
    )
    def test_number_and_street_become_adresse(self, text: str, expected: str) -> None:
        """The number, street type and street name go; what follows the name stays."""
        assert pseudonymise(text) == expected

    def test_streets_without_number_and_common_words_survive(self) -> None:
        """A street without a house number, and "3 cours de piano", are not addresses."""
        text = "La rue est inondée rue Victor Hugo ; il suit 3 cours de piano, 1 place de libre."
        assert pseudonymise(text) == text


class TestNames:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Jean-Pierre DUPONT a appelé.", "<NOM> a appelé."),
            ("Signé : DUPONT Jean, le 3 mars.", "Signé : <NOM>, le 3 mars."),
            ("Merci à Marie de la Fontaine.", "Merci à <NOM>."),
            ("Obrigada\nMaria da Conceição Lopes", "Obrigada\n<NOM>"),
            ("Marie-France Dupuy, voisine", "<NOM>, voisine"),
        ],
    )
    def test_a_given_name_and_its_surname_become_one_nom(self, text: str, expected: str) -> None:
        """A known given name and the surname next to it make a single placeholder."""
        assert pseudonymise(text) == expected

    def test_forms_of_address_survive(self) -> None:
        """Madame la Maire, Monsieur le Maire and their kind name no one."""
        text = (
            "Madame la Maire, Monsieur le Maire, Madame, Monsieur, Madame la Directrice, "
            "Monsieur Le Maire, M. le Sous-Préfet, Madame l'Adjointe"
        )
        assert pseudonymise(text) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Bonjour Madame Girard,", "Bonjour Madame <NOM>,"),
            ("Chère Madame Durand,", "Chère Madame <NOM>,"),
            ("remis à M. Pasquier hier", "remis à M. <NOM> hier"),
            ("Bonjour Pierre,\nmerci", "Bonjour <NOM>,\nmerci"),
            ("Je m'appelle Yasmine Haddad et", "Je m'appelle <NOM> et"),
            ("My name is John Smith.", "My name is <NOM>."),
            ("je suis Marc Petit, voisin", "je suis <NOM>, voisin"),
            ("née Dupuis le 3 mai", "née <NOM> le 3 mai"),
        ],
    )
    def test_titles_greetings_and_introductions_mark_a_name(self, text: str, expected: str) -> None:
        """A title, a greeting or an introduction makes the capitalised words after it a name."""
        assert pseudonymise(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Cordialement,\nJ.-M. Goulard", "Cordialement,\n<NOM>"),
            ("Bien à vous,\n\nClaire et Paul Martin", "Bien à vous,\n\n<NOM> et <NOM>"),
            ("Merci. B. Lemoine", "Merci. <NOM>"),
            ("Best regards,\nPieter van Dijk\nSales", "Best regards,\n<NOM>\nSales"),
            ("Merci de votre aide,\nLe Service Voirie", "Merci de votre aide,\nLe Service Voirie"),
        ],
    )
    def test_signatures_after_a_closing_are_names(self, text: str, expected: str) -> None:
        """A short line of capitalised names after a closing formula is replaced, a service not."""
        assert pseudonymise(text) == expected

    def test_display_name_before_an_address_is_a_name(self) -> None:
        """The name an e-mail client writes before an address goes, a service's name stays."""
        text = "De : Karine Bouvier <k.b@courriel.example>\nÀ : Service Urbanisme <u@ville.example>"
        expected = "De : <NOM> <<EMAIL>>\nÀ : Service Urbanisme <<EMAIL>>"
        assert pseudonymise(text) == expected

    def test_given_names_that_are_words_survive_as_words(self) -> None:
        """Given names that are also words stay at a sentence start and in a place's name."""
        text = (
            "Pierre par pierre, le mur tombe. Grâce à vous tout va mieux. Rose des vents. "
            "Claire et nette, la réponse. Chemin de la Croix Blanche. CHUTE DE PIERRE SUR LA ROUTE"
        )
        assert pseudonymise(text) == text

    def test_places_named_after_people_survive(self) -> None:
        """Streets, schools, churches and cars named after people keep their names."""
        text = (
            "Devant l'école Jules Ferry, rue Victor Hugo, près de l'église Saint-Pierre, "
            "au gymnase Pierre de Coubertin et à Saint-Martin, une Renault Zoé est garée. "
            "Ma fille est en CM2 à Anatole-France."
        )
        assert pseudonymise(text) == text

    def test_a_first_name_in_name_position_is_replaced(self) -> None:
        """A given name that is also a word counts mid-sentence and alone on its line."""
        text = "mes enfants Jules et Rose vont bien.\nPierre"
        assert pseudonymise(text) == "mes enfants <NOM> et <NOM> vont bien.\n<NOM>"


class TestTransform:
    def test_texts_without_identifiers_are_unchanged(self) -> None:
        """Ordinary requests without personal data come back byte for byte."""
        assert [pseudonymise(text) for text in NO_IDENTIFIER_TEXTS] == list(NO_IDENTIFIER_TEXTS)

    def test_realistic_requests_are_idempotent(self) -> None:
        """Transforming a request twice gives what transforming it once gives."""
        once = [pseudonymise(case["text"]) for case in CASES]
        assert [pseudonymise(text) for text in once] == once

    def test_whitespace_and_line_endings_are_kept(self) -> None:
        """Carriage returns, tabs and no-break spaces around replaced spans are kept."""
        text = "Bonjour,\r\n\u00a0Jean Dupont\t06 12 34 56 78\r\n"
        assert pseudonymise(text) == "Bonjour,\r\n\u00a0<NOM>\t<TEL>\r\n"

    def test_empty_text_is_empty(self) -> None:
        """The empty text comes back empty."""
        assert pseudonymise("") == ""

    def test_a_full_length_request_is_fast(self) -> None:
        """A 6,000-character request takes a few milliseconds; the bound leaves room for CI."""
        text = "\n\n".join(case["text"] for case in CASES * 3)[:6000]
        pseudonymise(text)  # loads the given names
        durations = []
        for _ in range(15):
            start = time.perf_counter()
            pseudonymise(text)
            durations.append(time.perf_counter() - start)
        assert statistics.median(durations) < 0.05


class TestFirstNameList:
    def test_list_is_packaged(self) -> None:
        """The list lies in the package and pyproject ships `classifiers/data/*.txt`."""
        pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text("utf-8"))
        assert resources.files("classifiers").joinpath(FIRST_NAMES_RESOURCE).is_file()
        assert "data/*.txt" in pyproject["tool"]["setuptools"]["package-data"]["classifiers"]

    def test_list_states_its_origin_and_holds_one_name_per_line(self) -> None:
        """The header says where the names come from; every other line is one name."""
        text = resources.files("classifiers").joinpath(FIRST_NAMES_RESOURCE).read_text("utf-8")
        lines = text.splitlines()
        names = [line for line in lines if line and not line.startswith("#")]
        assert any("no external list copied" in line for line in lines if line.startswith("#"))
        assert len(names) >= 800
        assert [name for name in names if not re.fullmatch(r"[^\W\d_]+(?:-[^\W\d_]+)*", name)] == []
