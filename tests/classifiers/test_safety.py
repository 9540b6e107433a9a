"""Tests of `classifiers/safety.py`: rules that can only raise a request's urgency."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifiers.safety import SafetyRules, load_safety_rules
from tests.conftest import make_prediction
from worker.errors import ConfigError

ORDINARY_TEXTS = (
    "Bonjour, le lampadaire devant le 12 rue des Lilas est éteint depuis hier soir.",
    "Je souhaite inscrire ma fille à la cantine à partir de septembre.",
    "Pouvez-vous me communiquer les horaires de la déchèterie ?",
    "Je voudrais réserver la salle des fêtes pour un anniversaire en novembre.",
    "Merci pour la belle fête de la musique organisée samedi dernier.",
)
NEAR_MISSES = (
    "je suis sans nouvelles de mon dossier de permis",
    "le feu tricolore au carrefour ne passe plus au vert",
    "ma parcelle est-elle en zone inondable selon le PLU ?",
    "je demande une copie de l'acte de décès de mon grand-père décédé en 1998",
    "Le gaz de ville sera-t-il raccordé au nouveau lotissement ?",
    "L'arbre du square mériterait un élagage cet hiver.",
    "Ce matin j'ai trouvé par terre une enveloppe devant la banque.",
    "Ma mère vit seule et aimerait le portage de repas à partir du mois prochain.",
    "Nous cherchons un hébergement pour les enfants du centre de loisirs cet été.",
)


class TestSafetyRules:
    def test_gas_smell_raises_normale_to_critique(self, safety_rules: SafetyRules) -> None:
        """A smell of gas turns a `normale` prediction into `critique`, recording the rule."""
        prediction = make_prediction("voirie", "normale", confidence=0.7)
        raised = safety_rules.apply(
            prediction, "Il y a une forte odeur de gaz dans la cage d'escalier"
        )
        assert raised.urgency.label == "critique"
        assert raised.safety_rules == ("gaz",)
        assert raised.model_urgency == "normale"
        assert raised.urgency.confidence == 1.0
        assert raised.department == prediction.department
        assert raised.request_id == prediction.request_id
        assert raised.model_version == prediction.model_version

    def test_raised_prediction_keeps_model_probabilities(self, safety_rules: SafetyRules) -> None:
        """The model's urgency probabilities stay available after a rule raised the urgency."""
        prediction = make_prediction(urgency="basse")
        raised = safety_rules.apply(prediction, "Ça sent le gaz dans la cuisine")
        assert raised.urgency.probabilities == prediction.urgency.probabilities

    def test_apply_does_not_modify_the_given_prediction(self, safety_rules: SafetyRules) -> None:
        """apply returns a new prediction and leaves the model's one as it was."""
        prediction = make_prediction(urgency="normale")
        safety_rules.apply(prediction, "odeur de gaz")
        assert prediction.urgency.label == "normale"
        assert prediction.safety_rules == ()
        assert prediction.model_urgency is None

    @pytest.mark.parametrize(
        ("text", "rule"),
        [
            ("ODEUR DE GAZ AU 3E ÉTAGE", "gaz"),
            ("l'eau monte dans la cave", "inondation"),
            ("L’EAU MONTE DANS LE GARAGE", "inondation"),
            ("un cable a terre devant l'ecole", "cable_a_terre"),
            ("CÂBLE À TERRE rue Jean Jaurès", "cable_a_terre"),
            ("Un  arbre   est\ttombé sur la route", "arbre_tombe"),
            ("Mon fils n'a pas été récupéré à la sortie de l'école", "enfant_non_recupere"),
            (
                "Pas de lumière chez M. Husson depuis deux soirs. Il a 90 ans et vit seul.",
                "personne_vulnerable",
            ),
            ("ALERTE abonné 58-20417 : levée de doute impossible", "personne_vulnerable"),
            (
                "Une famille sera à la rue ce soir avec ses trois enfants dont un bébé",
                "sans_abri_enfants",
            ),
        ],
    )
    def test_rules_match_without_accents_and_in_capitals(
        self, safety_rules: SafetyRules, text: str, rule: str
    ) -> None:
        """Matching ignores case, accents, typographic apostrophes and runs of white space."""
        raised = safety_rules.apply(make_prediction(urgency="normale"), text)
        assert raised.urgency.label == "critique"
        assert raised.safety_rules == (rule,)

    def test_haute_rule_never_lowers_critique(self, safety_rules: SafetyRules) -> None:
        """A funeral text on a `critique` prediction stays critique and records no rule."""
        prediction = make_prediction("etat_civil", "critique")
        result = safety_rules.apply(prediction, "l'inhumation aura lieu jeudi")
        assert result.urgency.label == "critique"
        assert result.urgency.confidence == prediction.urgency.confidence
        assert result.safety_rules == ()
        assert result.model_urgency is None

    def test_haute_rule_leaves_haute_unchanged(self, safety_rules: SafetyRules) -> None:
        """A `haute` rule on an already `haute` prediction changes nothing."""
        prediction = make_prediction("etat_civil", "haute", urgency_confidence=0.6)
        result = safety_rules.apply(prediction, "l'inhumation aura lieu jeudi")
        assert result == prediction

    def test_haute_rule_raises_basse_to_haute(self, safety_rules: SafetyRules) -> None:
        """A funeral to organise raises a `basse` prediction to `haute`."""
        prediction = make_prediction("etat_civil", "basse")
        raised = safety_rules.apply(
            prediction, "Mon père est décédé hier, l'inhumation aura lieu jeudi."
        )
        assert raised.urgency.label == "haute"
        assert raised.safety_rules == ("deces",)
        assert raised.model_urgency == "basse"
        assert raised.urgency.confidence == 1.0

    def test_highest_matching_rule_wins(self, safety_rules: SafetyRules) -> None:
        """When a haute and a critique rule both match, critique wins and only it is recorded."""
        text = "L'enterrement doit avoir lieu demain mais il y a une fuite de gaz à la maison."
        raised = safety_rules.apply(make_prediction(urgency="basse"), text)
        assert raised.urgency.label == "critique"
        assert raised.safety_rules == ("gaz",)

    @pytest.mark.parametrize("text", ORDINARY_TEXTS + NEAR_MISSES)
    def test_ordinary_texts_fire_no_rule(self, safety_rules: SafetyRules, text: str) -> None:
        """Ordinary requests and near-misses of rule wording leave the prediction as it was."""
        prediction = make_prediction(urgency="basse")
        assert safety_rules.apply(prediction, text) == prediction

    def test_empty_rule_set_changes_nothing(self) -> None:
        """Without rules, even an alarming text keeps the model's urgency."""
        prediction = make_prediction(urgency="basse")
        assert SafetyRules().apply(prediction, "odeur de gaz") == prediction


class TestLoadSafetyRules:
    def test_project_rules_load(self, safety_rules: SafetyRules) -> None:
        """config/safety.yaml validates and holds the gas rule as critique."""
        rules = {rule.name: rule for rule in safety_rules.rules}
        assert rules["gaz"].raise_to == "critique"
        assert rules["deces"].raise_to == "haute"

    def test_invalid_regex_names_the_file(self, tmp_path: Path) -> None:
        """A rule with a pattern that does not compile raises ConfigError naming the file."""
        path = tmp_path / "broken-safety.yaml"
        path.write_text(
            "rules:\n"
            "  - name: gaz\n"
            "    raise_to: critique\n"
            "    patterns:\n"
            "      - 'odeur de (gaz'\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError, match="not a valid regex") as caught:
            load_safety_rules(path)
        assert str(path) in str(caught.value)
        assert caught.value.source == str(path)

    def test_raise_to_basse_is_refused(self, tmp_path: Path) -> None:
        """A rule that would set a request to `basse` is refused at load time."""
        path = tmp_path / "safety.yaml"
        path.write_text(
            "rules:\n  - name: calme\n    raise_to: basse\n    patterns: ['merci']\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError) as caught:
            load_safety_rules(path)
        assert str(path) in str(caught.value)
        assert "raise_to" in caught.value.key

    def test_rule_without_patterns_is_refused(self, tmp_path: Path) -> None:
        """A rule with an empty pattern list is refused: it could never fire."""
        path = tmp_path / "safety.yaml"
        path.write_text(
            "rules:\n  - name: vide\n    raise_to: haute\n    patterns: []\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError, match="patterns"):
            load_safety_rules(path)
