"""Tests of worker/idempotency.py: the SQLite store of delivered (request, destination) pairs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.idempotency import DeliveryStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeliveryStore]:
    opened = DeliveryStore(tmp_path / "state" / "deliveries.sqlite")
    yield opened
    opened.close()


class TestDeliveryStore:
    """`DeliveryStore` remembers where each request was delivered, across restarts and processes."""

    def test_recorded_pair_returns_its_location(self, store: DeliveryStore) -> None:
        """After recording a delivery, `delivered` returns the location it was recorded with."""
        store.record("em-1", "voirie", "/srv/maildir/voirie/new/1.T1.host")
        assert store.delivered("em-1", "voirie") == "/srv/maildir/voirie/new/1.T1.host"

    def test_unknown_pair_is_none(self, store: DeliveryStore) -> None:
        """A request or destination never recorded, even half of a recorded pair, gives None."""
        store.record("em-1", "voirie", "loc-1")
        assert store.delivered("em-2", "voirie") is None
        assert store.delivered("em-1", "astreinte") is None

    def test_recording_twice_keeps_the_first_location(self, store: DeliveryStore) -> None:
        """A second record of the same pair neither replaces the location nor adds a row."""
        store.record("em-1", "voirie", "first")
        store.record("em-1", "voirie", "second")
        assert store.delivered("em-1", "voirie") == "first"
        assert store.count() == 1

    def test_survives_close_and_reopen(self, tmp_path: Path) -> None:
        """Records made before a close are found by a store reopened on the same file."""
        path = tmp_path / "deliveries.sqlite"
        first = DeliveryStore(path)
        first.record("em-1", "voirie", "loc-1")
        first.close()
        reopened = DeliveryStore(path)
        try:
            assert reopened.delivered("em-1", "voirie") == "loc-1"
            assert reopened.count() == 1
        finally:
            reopened.close()

    def test_two_stores_on_one_file_share_records(self, tmp_path: Path) -> None:
        """Two stores open on one file, as two worker processes would, see each other's records."""
        path = tmp_path / "deliveries.sqlite"
        one, two = DeliveryStore(path), DeliveryStore(path)
        try:
            one.record("em-1", "voirie", "by-one")
            assert two.delivered("em-1", "voirie") == "by-one"
            two.record("em-1", "voirie", "by-two")
            two.record("em-2", "astreinte", "by-two")
            assert one.delivered("em-1", "voirie") == "by-one"
            assert one.delivered("em-2", "astreinte") == "by-two"
            assert one.count() == two.count() == 2
        finally:
            one.close()
            two.close()

    def test_count_counts_distinct_pairs(self, store: DeliveryStore) -> None:
        """`count` is 0 for a new store, then the number of distinct pairs recorded."""
        assert store.count() == 0
        store.record("em-1", "voirie", "a")
        store.record("em-1", "astreinte", "b")
        store.record("em-2", "voirie", "c")
        store.record("em-2", "voirie", "d")
        assert store.count() == 3

    def test_creates_missing_parent_folders(self, tmp_path: Path) -> None:
        """Opening a store under folders that do not exist yet creates them and the file."""
        path = tmp_path / "var" / "state" / "deliveries.sqlite"
        opened = DeliveryStore(path)
        try:
            assert path.is_file()
        finally:
            opened.close()
