"""Tests of worker/feedback.py: the SQLite store of remembered requests and agents' corrections."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import LogEntries
from worker.errors import TriageError
from worker.feedback import FeedbackStore, UnknownRequestError

T0 = datetime(2025, 6, 3, 10, 12, tzinfo=UTC)
EMAIL = "jeanne.dupont@example.fr"
PHONE = "06 12 34 56 78"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    opened = FeedbackStore(tmp_path / "state" / "feedback.sqlite")
    yield opened
    opened.close()


def _remember(
    store: FeedbackStore,
    request_id: str = "em-1",
    text: str = "Le lampadaire de la rue est éteint.",
    *,
    at: datetime = T0,
) -> None:
    store.remember(
        request_id,
        text,
        department="voirie",
        urgency="normale",
        model_version="baseline-1",
        channel="email",
        destinations=["voirie"],
        review=False,
        at=at,
    )


def _texts(path: Path) -> list[str]:
    """Every text column as written in the file, read without the store."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT text FROM requests UNION ALL SELECT text FROM corrections")
        return [str(row[0]) for row in rows]


class TestRemember:
    """`remember` keeps a request's pseudonymised text and prediction under its id."""

    def test_remembered_request_reads_back(self, store: FeedbackStore) -> None:
        """A remembered request comes back with its fields and the time it was seen."""
        _remember(store)
        remembered = store.remembered("em-1")
        assert remembered is not None
        assert remembered.text == "Le lampadaire de la rue est éteint."
        assert (remembered.department, remembered.urgency) == ("voirie", "normale")
        assert (remembered.model_version, remembered.channel) == ("baseline-1", "email")
        assert remembered.destinations == ("voirie",)
        assert remembered.review is False
        assert remembered.seen_at == T0

    def test_unknown_id_is_none(self, store: FeedbackStore) -> None:
        """An id never remembered gives None."""
        _remember(store)
        assert store.remembered("em-2") is None

    def test_remembering_again_replaces(self, store: FeedbackStore) -> None:
        """A second `remember` of one id replaces the first instead of adding a row."""
        _remember(store, text="premier texte")
        _remember(store, text="second texte", at=T0 + timedelta(hours=1))
        remembered = store.remembered("em-1")
        assert remembered is not None
        assert remembered.text == "second texte"
        assert remembered.seen_at == T0 + timedelta(hours=1)
        assert store.counts() == {"requests": 1, "corrections": 0}

    def test_text_is_pseudonymised_on_write(self, store: FeedbackStore) -> None:
        """An email address and a phone number in the text never reach the file."""
        _remember(store, text=f"Lampadaire éteint, écrivez à {EMAIL} ou appelez le {PHONE}.")
        [written] = _texts(store.path)
        assert EMAIL not in written
        assert PHONE not in written
        assert "Lampadaire éteint" in written

    def test_naive_time_is_refused(self, store: FeedbackStore) -> None:
        """A datetime without a time zone is refused rather than guessed."""
        with pytest.raises(ValueError, match="timezone-aware"):
            _remember(store, at=datetime(2025, 6, 3, 10, 12))

    def test_creates_missing_parent_folders(self, tmp_path: Path) -> None:
        """Opening a store under folders that do not exist yet creates them and the file."""
        path = tmp_path / "var" / "state" / "feedback.sqlite"
        opened = FeedbackStore(path)
        try:
            assert path.is_file()
        finally:
            opened.close()

    def test_concurrent_remembers_are_all_kept(self, store: FeedbackStore) -> None:
        """Four threads remembering fifty requests each leave all two hundred in the store."""

        def remember_many(thread: int) -> None:
            for index in range(50):
                _remember(store, f"em-{thread}-{index}")

        threads = [threading.Thread(target=remember_many, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.counts()["requests"] == 200
        assert all(
            store.remembered(f"em-{thread}-{index}") is not None
            for thread in range(4)
            for index in range(50)
        )


class TestCorrect:
    """`correct` records one agent decision per request id, defaulting to what was remembered."""

    def test_uses_the_remembered_text_and_prediction(self, store: FeedbackStore) -> None:
        """A correction by id takes the remembered text, predictions and model version."""
        _remember(store)
        correction = store.correct("em-1", department="espaces_verts", source="cli", at=T0)
        assert correction is not None
        assert correction.text == "Le lampadaire de la rue est éteint."
        assert (correction.predicted_department, correction.predicted_urgency) == (
            "voirie",
            "normale",
        )
        assert correction.model_version == "baseline-1"
        assert (correction.department, correction.source) == ("espaces_verts", "cli")
        assert correction.created_at == T0
        assert store.corrections() == [correction]

    def test_without_urgency_keeps_the_predicted_one(self, store: FeedbackStore) -> None:
        """No urgency given: the predicted urgency is kept and marked as not corrected."""
        _remember(store)
        correction = store.correct("em-1", department="espaces_verts", source="imap-move")
        assert correction is not None
        assert (correction.urgency, correction.urgency_corrected) == ("normale", False)

    def test_an_urgency_given_is_corrected(self, store: FeedbackStore) -> None:
        """An urgency given is the agent's and is marked as corrected."""
        _remember(store)
        correction = store.correct("em-1", department="voirie", urgency="haute", source="review")
        assert correction is not None
        assert (correction.urgency, correction.urgency_corrected) == ("haute", True)

    def test_a_later_correction_replaces_the_earlier(self, store: FeedbackStore) -> None:
        """A second correction of one request replaces the first: the latest decision wins."""
        _remember(store)
        store.correct("em-1", department="espaces_verts", source="imap-move", at=T0)
        later = store.correct(
            "em-1", department="proprete_dechets", source="cli", at=T0 + timedelta(minutes=5)
        )
        assert store.corrections() == [later]
        assert store.counts() == {"requests": 1, "corrections": 1}

    def test_identical_correction_returns_none(self, store: FeedbackStore) -> None:
        """The same labels from the same source again return None and leave the row as it was."""
        _remember(store)
        first = store.correct("em-1", department="espaces_verts", source="imap-move", at=T0)
        again = store.correct(
            "em-1", department="espaces_verts", source="imap-move", at=T0 + timedelta(hours=1)
        )
        assert again is None
        assert store.corrections() == [first]

    def test_same_labels_from_another_source_replace(self, store: FeedbackStore) -> None:
        """Equal labels from a different source are a new decision and are recorded."""
        _remember(store)
        store.correct("em-1", department="espaces_verts", source="imap-move", at=T0)
        second = store.correct("em-1", department="espaces_verts", source="review", at=T0)
        assert second is not None
        assert [c.source for c in store.corrections()] == ["review"]

    def test_unknown_id_without_text_raises(self, store: FeedbackStore) -> None:
        """A correction of a request never remembered, given without text, is a permanent error."""
        with pytest.raises(UnknownRequestError, match="em-404") as raised:
            store.correct("em-404", department="voirie", urgency="haute", source="csv")
        assert isinstance(raised.value, TriageError)
        assert store.counts() == {"requests": 0, "corrections": 0}

    def test_unknown_id_with_text_is_recorded(self, store: FeedbackStore) -> None:
        """A correction bringing its own text needs no remembered request."""
        correction = store.correct(
            "em-9", department="voirie", urgency="haute", source="csv", text="Nid de poule."
        )
        assert correction is not None
        assert (correction.text, correction.predicted_department) == ("Nid de poule.", None)

    def test_no_urgency_anywhere_raises(self, store: FeedbackStore) -> None:
        """Neither an urgency given nor a predicted one to keep is a `ValueError`."""
        with pytest.raises(ValueError, match="urgency"):
            store.correct("em-9", department="voirie", source="csv", text="Nid de poule.")

    def test_given_text_is_pseudonymised_on_write(self, store: FeedbackStore) -> None:
        """A text passed with a correction is pseudonymised before it is written."""
        text = f"Contactez {EMAIL} au {PHONE} pour le nid de poule."
        store.correct("em-9", department="voirie", urgency="haute", source="csv", text=text)
        [written] = _texts(store.path)
        assert EMAIL not in written
        assert PHONE not in written

    def test_recorded_event_has_no_text(self, store: FeedbackStore, logs: LogEntries) -> None:
        """`feedback.recorded` names the request, source and labels, never the text."""
        _remember(store, text="Le lampadaire clignote.")
        logs.clear()
        store.correct("em-1", department="espaces_verts", source="cli")
        store.correct("em-1", department="espaces_verts", source="cli")
        assert logs == [
            {
                "event": "feedback.recorded",
                "log_level": "info",
                "request_id": "em-1",
                "source": "cli",
                "department": "espaces_verts",
                "urgency_corrected": False,
            }
        ]


class TestCorrections:
    """`corrections` lists the stored corrections oldest first, optionally since a time."""

    def test_ordered_and_filtered_by_time(self, store: FeedbackStore) -> None:
        """Corrections come oldest first; `since` keeps those made at or after it."""
        for index, hours in enumerate((5, 1, 3)):
            store.correct(
                f"em-{index}",
                department="voirie",
                urgency="basse",
                source="csv",
                text="texte",
                at=T0 + timedelta(hours=hours),
            )
        assert [c.request_id for c in store.corrections()] == ["em-1", "em-2", "em-0"]
        since = store.corrections(since=T0 + timedelta(hours=3))
        assert [c.request_id for c in since] == ["em-2", "em-0"]


class TestPurge:
    """`purge` deletes what is older than the cutoff, and nothing else."""

    def test_deletes_exactly_what_is_older_than_the_cutoff(self, store: FeedbackStore) -> None:
        """Rows a second before the cutoff go; rows a second after it stay."""
        now = T0 + timedelta(days=400)
        cutoff = now - timedelta(days=30)
        before, after = cutoff - timedelta(seconds=1), cutoff + timedelta(seconds=1)
        _remember(store, "em-old", at=before)
        _remember(store, "em-new", at=after)
        for request_id, at in (("em-old", before), ("em-new", after)):
            store.correct(request_id, department="social", source="review", at=at)
        store.correct(
            "em-late", department="social", urgency="basse", source="cli", text="texte", at=now
        )
        report = store.purge(30, now=now)
        assert (report.requests, report.corrections, report.cutoff) == (1, 1, cutoff)
        assert store.remembered("em-old") is None
        assert store.remembered("em-new") is not None
        assert [c.request_id for c in store.corrections()] == ["em-new", "em-late"]

    def test_purged_text_leaves_the_files(self, store: FeedbackStore, tmp_path: Path) -> None:
        """After a purge the deleted text is in neither the database file nor its WAL."""
        _remember(store, "em-old", text="Texte témoin xylophoneabsent.", at=T0)
        store.purge(1, now=T0 + timedelta(days=2))
        files = [p for p in store.path.parent.iterdir() if p.name.startswith(store.path.name)]
        assert files
        assert all(b"xylophoneabsent" not in path.read_bytes() for path in files)

    def test_purged_event_has_counts(self, store: FeedbackStore, logs: LogEntries) -> None:
        """`feedback.purged` reports how many rows went."""
        _remember(store, at=T0)
        logs.clear()
        store.purge(1, now=T0 + timedelta(days=2))
        [entry] = logs
        assert entry["event"] == "feedback.purged"
        assert (entry["requests"], entry["corrections"]) == (1, 0)

    def test_less_than_a_day_is_refused(self, store: FeedbackStore) -> None:
        """An age under one day is a `ValueError` and deletes nothing."""
        _remember(store, at=T0)
        with pytest.raises(ValueError, match="at least 1"):
            store.purge(0, now=T0 + timedelta(days=2))
        assert store.counts()["requests"] == 1
