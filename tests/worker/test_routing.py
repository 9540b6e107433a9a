"""Tests of worker/routing.py: the routing rules of `route` and the validation of routing files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from classifiers import Taxonomy
from tests.conftest import CONFIG_DIR, make_prediction
from worker.errors import ConfigError
from worker.routing import RoutingConfig, load_routing, route


def _shipped_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (CONFIG_DIR / "routing.yaml").read_text(encoding="utf-8")
    )
    return document


def _config(document: dict[str, Any]) -> RoutingConfig:
    return RoutingConfig.model_validate(document)


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


class TestRoute:
    """`route` sends a prediction to destinations and says why."""

    def test_confident_prediction_goes_to_department(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """A confidence above the global threshold sends the request to its department only."""
        decision = route(
            make_prediction("voirie", confidence=0.9, taxonomy=taxonomy), routing_config
        )
        assert decision.destinations == ("voirie",)
        assert decision.primary == "voirie"
        assert decision.needs_review is False
        assert decision.escalated is False
        assert decision.threshold == pytest.approx(0.45)
        assert "voirie" in decision.reasons[0]

    def test_unsure_prediction_goes_to_review(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """A confidence below the global threshold sends the request to review, not the service."""
        decision = route(
            make_prediction("voirie", confidence=0.40, taxonomy=taxonomy), routing_config
        )
        assert decision.destinations == ("revue",)
        assert decision.needs_review is True
        assert decision.threshold == pytest.approx(0.45)
        assert "review_threshold" in decision.reasons[0]
        assert "departments." not in decision.reasons[0]

    def test_confidence_equal_to_threshold_is_not_reviewed(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """A confidence exactly at the threshold is enough to go to the department."""
        decision = route(
            make_prediction("voirie", confidence=0.45, taxonomy=taxonomy), routing_config
        )
        assert decision.destinations == ("voirie",)
        assert decision.needs_review is False

    def test_department_threshold_overrides_global_one(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """Social's own 0.30 threshold lets through a 0.35 prediction the global 0.45 stops."""
        decision = route(
            make_prediction("social", confidence=0.35, taxonomy=taxonomy), routing_config
        )
        assert decision.destinations == ("social",)
        assert decision.needs_review is False
        assert decision.threshold == pytest.approx(0.30)

    def test_department_threshold_names_its_key_when_it_sends_to_review(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """Below social's own threshold the request is reviewed and the reason names that key."""
        decision = route(
            make_prediction("social", confidence=0.25, taxonomy=taxonomy), routing_config
        )
        assert decision.destinations == ("revue",)
        assert decision.needs_review is True
        assert decision.threshold == pytest.approx(0.30)
        assert "departments.social.review_threshold" in decision.reasons[0]

    def test_department_threshold_does_not_apply_to_other_departments(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """A 0.35 confidence on a department without an override still goes to review."""
        decision = route(
            make_prediction("urbanisme", confidence=0.35, taxonomy=taxonomy), routing_config
        )
        assert decision.destinations == ("revue",)
        assert decision.threshold == pytest.approx(0.45)

    def test_department_with_two_destinations_gets_both(self, taxonomy: Taxonomy) -> None:
        """A department routed to two destinations sends the request to both, in order."""
        document = _shipped_document()
        document["departments"]["voirie"] = {"destinations": ["voirie", "accueil"]}
        decision = route(make_prediction("voirie", taxonomy=taxonomy), _config(document))
        assert decision.destinations == ("voirie", "accueil")
        assert decision.primary == "voirie"

    def test_critique_is_escalated_on_top_of_department(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """A confident critique request goes to its department and to the on-call inbox."""
        prediction = make_prediction("voirie", "critique", confidence=0.9, taxonomy=taxonomy)
        decision = route(prediction, routing_config)
        assert decision.destinations == ("voirie", "astreinte")
        assert decision.escalated is True
        assert decision.needs_review is False
        assert any("astreinte" in reason for reason in decision.reasons)

    def test_critique_is_escalated_on_top_of_review(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """An unsure critique request goes to review and still to the on-call inbox."""
        prediction = make_prediction("voirie", "critique", confidence=0.2, taxonomy=taxonomy)
        decision = route(prediction, routing_config)
        assert decision.destinations == ("revue", "astreinte")
        assert decision.escalated is True
        assert decision.needs_review is True

    @pytest.mark.parametrize("urgency", ["basse", "normale", "haute"])
    def test_non_critique_is_not_escalated(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy, urgency: str
    ) -> None:
        """An urgency outside `escalate_urgencies` never reaches the on-call inbox."""
        decision = route(make_prediction("voirie", urgency, taxonomy=taxonomy), routing_config)
        assert decision.escalated is False
        assert "astreinte" not in decision.destinations
        assert len(decision.reasons) == 1

    def test_escalation_is_not_duplicated(self, taxonomy: Taxonomy) -> None:
        """When the department already delivers to the on-call inbox it is listed once."""
        document = _shipped_document()
        document["departments"]["police_municipale"] = {"destinations": ["astreinte"]}
        prediction = make_prediction("police_municipale", "critique", taxonomy=taxonomy)
        decision = route(prediction, _config(document))
        assert decision.destinations == ("astreinte",)
        assert decision.escalated is True

    def test_safety_rule_is_named_in_the_reason(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """An urgency raised by a safety rule is escalated with a reason naming the rule."""
        prediction = make_prediction("voirie", "critique", taxonomy=taxonomy)
        prediction = prediction.model_copy(update={"safety_rules": ("gaz",)})
        decision = route(prediction, routing_config)
        assert decision.escalated is True
        escalation = [reason for reason in decision.reasons if "astreinte" in reason]
        assert len(escalation) == 1
        assert "safety rule gaz" in escalation[0]

    def test_route_is_pure(self, routing_config: RoutingConfig, taxonomy: Taxonomy) -> None:
        """The same prediction and configuration always give an equal decision."""
        prediction = make_prediction("social", "critique", confidence=0.31, taxonomy=taxonomy)
        before = routing_config.model_dump()
        first = route(prediction, routing_config)
        second = route(prediction, routing_config)
        assert first == second
        assert routing_config.model_dump() == before


class TestRoutingConfig:
    """`load_routing` validates a routing file and ties it to the taxonomy."""

    def test_shipped_file_routes_every_department(
        self, routing_config: RoutingConfig, taxonomy: Taxonomy
    ) -> None:
        """The shipped routing file has a route for every department of the taxonomy."""
        assert set(routing_config.departments) == set(taxonomy.department_keys)
        assert routing_config.review_threshold == pytest.approx(0.45)
        assert routing_config.departments["social"].review_threshold == pytest.approx(0.30)

    def test_shipped_file_round_trips_through_yaml(
        self, tmp_path: Path, taxonomy: Taxonomy
    ) -> None:
        """The test helper's rewrite of the shipped file loads, so the failures below are real."""
        config = load_routing(_write(tmp_path, _shipped_document()), taxonomy)
        assert config.review_destination == "revue"

    @pytest.mark.parametrize(
        ("key", "edit"),
        [
            (
                "departments.voirie.destinations",
                lambda d: d["departments"].update(voirie={"destinations": ["nulle_part"]}),
            ),
            ("review_destination", lambda d: d.update(review_destination="nulle_part")),
            ("escalation_destination", lambda d: d.update(escalation_destination="nulle_part")),
            ("dead_letter_destination", lambda d: d.update(dead_letter_destination="nulle_part")),
        ],
    )
    def test_undeclared_destination_is_refused(
        self, tmp_path: Path, taxonomy: Taxonomy, key: str, edit: Any
    ) -> None:
        """A destination name that is not declared is an error naming the file and the key."""
        document = _shipped_document()
        edit(document)
        path = _write(tmp_path, document)
        with pytest.raises(ConfigError) as caught:
            load_routing(path, taxonomy)
        assert str(path) in str(caught.value)
        assert key in str(caught.value)
        assert "nulle_part" in str(caught.value)

    def test_department_without_route_is_refused(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        """A taxonomy department missing from `departments` is an error naming it."""
        document = _shipped_document()
        del document["departments"]["finances"]
        path = _write(tmp_path, document)
        with pytest.raises(ConfigError) as caught:
            load_routing(path, taxonomy)
        assert str(path) in str(caught.value)
        assert "departments.finances" in str(caught.value)

    def test_unknown_department_is_refused(self, tmp_path: Path, taxonomy: Taxonomy) -> None:
        """A route for a department the taxonomy does not know is an error naming it."""
        document = _shipped_document()
        document["departments"]["piscine"] = {"destinations": ["accueil"]}
        path = _write(tmp_path, document)
        with pytest.raises(ConfigError) as caught:
            load_routing(path, taxonomy)
        assert str(path) in str(caught.value)
        assert "departments.piscine" in str(caught.value)

    @pytest.mark.parametrize(
        ("key", "edit"),
        [
            ("review_threshold", lambda d: d.update(review_threshold=1.5)),
            ("review_threshold", lambda d: d.update(review_threshold=-0.1)),
            (
                "departments.social.review_threshold",
                lambda d: d["departments"]["social"].update(review_threshold=1.01),
            ),
        ],
    )
    def test_threshold_out_of_range_is_refused(
        self, tmp_path: Path, taxonomy: Taxonomy, key: str, edit: Any
    ) -> None:
        """A threshold outside [0, 1] is an error naming the file and the threshold's key."""
        document = _shipped_document()
        edit(document)
        path = _write(tmp_path, document)
        with pytest.raises(ConfigError) as caught:
            load_routing(path, taxonomy)
        assert str(path) in str(caught.value)
        assert key in str(caught.value)

    @pytest.mark.parametrize(
        ("key", "edit"),
        [
            ("colour", lambda d: d.update(colour="bleu")),
            (
                "departments.voirie.priority",
                lambda d: d["departments"]["voirie"].update(priority=1),
            ),
            ("destinations.voirie.host", lambda d: d["destinations"]["voirie"].update(host="x")),
        ],
    )
    def test_unknown_key_is_refused(
        self, tmp_path: Path, taxonomy: Taxonomy, key: str, edit: Any
    ) -> None:
        """A key the routing file does not define is an error naming the file and the key."""
        document = _shipped_document()
        edit(document)
        path = _write(tmp_path, document)
        with pytest.raises(ConfigError) as caught:
            load_routing(path, taxonomy)
        assert str(path) in str(caught.value)
        assert key in str(caught.value)

    def test_unknown_escalation_urgency_is_refused(
        self, tmp_path: Path, taxonomy: Taxonomy
    ) -> None:
        """An urgency in `escalate_urgencies` that the taxonomy lacks is an error naming the key."""
        document = _shipped_document()
        document["escalate_urgencies"] = ["critique", "apocalyptique"]
        path = _write(tmp_path, document)
        with pytest.raises(ConfigError) as caught:
            load_routing(path, taxonomy)
        assert str(path) in str(caught.value)
        assert "escalate_urgencies" in str(caught.value)
        assert "apocalyptique" in str(caught.value)
