"""Tests of worker/feedback_imap.py's pure part: which folder means which correction."""

from __future__ import annotations

from classifiers.taxonomy import Taxonomy
from worker.feedback_imap import correction_of, folder_departments
from worker.imap import TriagedMessage
from worker.routing import RoutingConfig

URGENCIES = ("critique", "haute", "normale", "basse")


def _message(
    department: str = "urbanisme",
    urgency: str = "normale",
    *,
    review: bool = False,
    keywords: tuple[str, ...] = ("$Triage_normale",),
) -> TriagedMessage:
    headers = {
        "x-triage-request-id": "em-1",
        "x-triage-department": department,
        "x-triage-urgency": urgency,
        "x-triage-review": "yes" if review else "no",
        "x-triage-model": "m-1",
    }
    return TriagedMessage(uid=7, folder="F", headers=headers, keywords=frozenset(keywords))


class TestCorrectionOf:
    """A message's folder and keywords against the labels it was filed with."""

    def test_where_it_was_filed(self) -> None:
        """A message left where it was routed is no correction."""
        assert correction_of(_message(), "urbanisme", URGENCIES) is None

    def test_moved_to_another_service(self) -> None:
        """A move to another service's folder corrects the department, from the model's."""
        found = correction_of(_message(), "voirie", URGENCIES)
        assert found is not None
        assert (found.department, found.urgency, found.source) == ("voirie", None, "imap-move")
        assert (found.predicted_department, found.model_version) == ("urbanisme", "m-1")

    def test_urgency_keyword_changed(self) -> None:
        """A changed urgency keyword corrects the urgency, even without a move."""
        found = correction_of(_message(keywords=("$Triage_haute",)), "urbanisme", URGENCIES)
        assert found is not None
        assert (found.department, found.urgency) == ("urbanisme", "haute")

    def test_keyword_added_beside_the_old(self) -> None:
        """The one new urgency keyword counts when the old one was left beside it."""
        keywords = ("$Triage_normale", "$Triage_critique", "\\Seen")
        found = correction_of(_message(keywords=keywords), "urbanisme", URGENCIES)
        assert found is not None and found.urgency == "critique"

    def test_two_new_keywords_are_ambiguous(self) -> None:
        """Two new urgency keywords say nothing sure about the urgency."""
        keywords = ("$Triage_haute", "$Triage_critique")
        assert correction_of(_message(keywords=keywords), "urbanisme", URGENCIES) is None

    def test_review_filed_is_a_label(self) -> None:
        """A reviewed request filed where the model guessed still becomes a label."""
        found = correction_of(_message(review=True), "urbanisme", URGENCIES)
        assert found is not None
        assert (found.department, found.source) == ("urbanisme", "review")


class TestFolderDepartments:
    """Which folders of which account stand for one department."""

    def test_imap_routing(self, routing_config: RoutingConfig, taxonomy: Taxonomy) -> None:
        """Folders of one department map to it; a folder two departments share is left out."""
        document = routing_config.model_dump()
        document["destinations"]["voirie"] = {
            "type": "imap_folder",
            "account": "mairie",
            "folder": "INBOX/Voirie",
        }
        document["destinations"]["urbanisme"] = {
            "type": "imap_folder",
            "account": "mairie",
            "folder": "INBOX/Technique",
        }
        document["destinations"]["espaces_verts"] = {
            "type": "imap_folder",
            "account": "mairie",
            "folder": "INBOX/Technique",
        }
        routing = RoutingConfig.model_validate(document)
        assert folder_departments(routing) == {"mairie": {"INBOX/Voirie": "voirie"}}
