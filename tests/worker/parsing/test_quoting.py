"""Tests of worker/parsing/quoting.py: reply and forward separation, signature trimming."""

from __future__ import annotations

from worker.parsing.quoting import classifier_view, points_to_history, split_history, trim_signature


class TestSplitHistory:
    """split_history cuts at the first history marker."""

    def test_attribution_line(self) -> None:
        """A 'Le … a écrit :' line and what follows are history."""
        text = (
            "Merci, c'est noté.\n\n"
            "Le 3 juin 2025 à 10:12, Mairie <m@x.example> a écrit :\n> Bonjour"
        )
        split = split_history(text)
        assert split.new_text == "Merci, c'est noté."
        assert split.history.startswith("Le 3 juin 2025")

    def test_attribution_wrapped_over_lines(self) -> None:
        """An attribution wrapped over three lines is still recognised."""
        text = (
            "Oui.\nLe lun. 2 juin 2025 à 09:00, Jean\nDupont <jean@x.example>\na écrit :\n> texte"
        )
        assert split_history(text).new_text == "Oui."

    def test_english_attribution(self) -> None:
        """'On … wrote:' is an attribution too."""
        text = "Thanks.\nOn Tue, Jun 3, 2025 at 10:12 AM Jane <j@x.example> wrote:\n> hi"
        assert split_history(text).new_text == "Thanks."

    def test_plain_sentence_starting_with_le_is_not_history(self) -> None:
        """A sentence that merely starts with 'Le' and says 'a écrit' without a date is kept."""
        text = "Le maire a écrit :\nque la salle serait libre."
        assert split_history(text).new_text == text

    def test_outlook_block(self) -> None:
        """An Outlook 'De : / Envoyé :' block starts the history."""
        text = (
            "Voici ma réponse.\n\nDe : Mairie\nEnvoyé : lundi 2 juin 2025 10:00\n"
            "À : moi\nObjet : x\n\nancien"
        )
        split = split_history(text)
        assert split.new_text == "Voici ma réponse."
        assert "ancien" in split.history

    def test_separators(self) -> None:
        """Original-message and forward separators start the history."""
        for marker in (
            "-----Message d'origine-----",
            "---------- Message transféré ---------",
            "-------- Original Message --------",
            "Début du message réexpédié :",
        ):
            assert split_history(f"Texte.\n{marker}\nVieux").new_text == "Texte.", marker

    def test_bottom_posted_quotes(self) -> None:
        """Quoted lines mixed with new text go to history; the rest stays new."""
        split = split_history("> question ?\nMa réponse.\n> autre\nFin.")
        assert split.new_text == "Ma réponse.\nFin."
        assert split.history == "> question ?\n> autre"


class TestTrimSignature:
    """trim_signature drops footers but never the only content."""

    def test_dash_dash_signature(self) -> None:
        """Everything from a '-- ' line on is dropped."""
        assert trim_signature("Bonjour.\n-- \nJean\n06 00 00 00 00") == "Bonjour."

    def test_mobile_footer(self) -> None:
        """'Envoyé de mon iPhone' is dropped."""
        assert trim_signature("Le bac est cassé.\n\nEnvoyé de mon iPhone") == "Le bac est cassé."

    def test_disclaimer(self) -> None:
        """A legal disclaimer is dropped."""
        text = "Facture jointe.\nCe message et toutes les pièces jointes sont confidentiels."
        assert trim_signature(text) == "Facture jointe."

    def test_footer_alone_is_kept(self) -> None:
        """A message that is only a footer is not emptied."""
        assert trim_signature("Envoyé de mon iPhone") == "Envoyé de mon iPhone"


class TestPointsToHistory:
    """points_to_history tells a pointer from a substantive note."""

    def test_pointers(self) -> None:
        """Empty text, 'pour info' and 'voir ci-dessous' point to the history."""
        for text in ("", "Pour info", "Bonjour, voir ci-dessous. Merci\nClaire", "FYI, see below"):
            assert points_to_history(text), text

    def test_substantive_note(self) -> None:
        """A note with its own request does not."""
        note = "Merci de prévoir un enlèvement cette semaine, le riverain a appelé trois fois."
        assert not points_to_history(note)


class TestClassifierView:
    """classifier_view chooses what the classifier reads."""

    def test_forward_with_pointer_reads_forward(self) -> None:
        """Under 'Pour info', the forwarded request and its subject are read, addresses dropped."""
        text = (
            "Pour info\n\n---------- Message transféré ---------\nDe : Jean <jean@x.example>\n"
            "Date: lun. 2 juin 2025\nSubject: Lampadaire\nTo: <c@x.example>\n\n"
            "Le lampadaire du 12 rue des Lilas est éteint.\n-- \nJean"
        )
        view = classifier_view(text)
        assert "Lampadaire" in view and "est éteint" in view
        assert "jean@x.example" not in view and "-- " not in view

    def test_reply_reads_new_text_only(self) -> None:
        """A substantive reply is read without the quoted history."""
        new = "Le dossier est complet maintenant, merci de le transmettre."
        assert classifier_view(f"{new}\n\n> Il manque une pièce.") == new
