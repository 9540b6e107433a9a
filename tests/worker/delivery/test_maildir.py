"""Tests of worker/delivery/maildir.py and of `build_deliverers` in worker/delivery/__init__.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from worker.delivery import Delivery, MaildirDeliverer, build_deliverers
from worker.errors import DeliveryError, PermanentError
from worker.routing import RoutingConfig

MESSAGE = b"From: a@x.example\r\nSubject: test\r\n\r\nCorps du message\r\n\x00\xff"


def _files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


class TestMaildirDeliverer:
    """`MaildirDeliverer` writes each request once into a maildir, atomically."""

    def test_creates_the_maildir_folders(self, tmp_path: Path) -> None:
        """The first delivery creates `tmp`, `new` and `cur` under the maildir path."""
        maildir = tmp_path / "a" / "voirie"
        MaildirDeliverer("voirie", maildir).deliver(Delivery("em-1", MESSAGE))
        assert all((maildir / sub).is_dir() for sub in ("tmp", "new", "cur"))

    def test_message_lands_in_new_with_identical_bytes(self, tmp_path: Path) -> None:
        """The message is one file in `new/` holding exactly the given bytes; `tmp/` is empty."""
        maildir = tmp_path / "voirie"
        receipt = MaildirDeliverer("voirie", maildir).deliver(Delivery("em-1", MESSAGE))
        delivered = _files(maildir / "new")
        assert len(delivered) == 1
        assert delivered[0].read_bytes() == MESSAGE
        assert _files(maildir / "tmp") == []
        assert _files(maildir / "cur") == []
        assert receipt.destination == "voirie"
        assert Path(receipt.location) == delivered[0]
        assert receipt.duplicate is False

    def test_same_request_twice_leaves_one_copy(self, tmp_path: Path) -> None:
        """Delivering the same request id again writes nothing and says it was a duplicate."""
        maildir = tmp_path / "voirie"
        deliverer = MaildirDeliverer("voirie", maildir)
        first = deliverer.deliver(Delivery("em-1", MESSAGE))
        second = deliverer.deliver(Delivery("em-1", b"another rendering of the same request"))
        assert len(_files(maildir / "new")) == 1
        assert second.duplicate is True
        assert second.location == first.location
        assert Path(first.location).read_bytes() == MESSAGE

    def test_duplicate_detected_by_a_new_deliverer(self, tmp_path: Path) -> None:
        """A second deliverer on the same maildir (a restarted worker) sees the earlier copy."""
        maildir = tmp_path / "voirie"
        MaildirDeliverer("voirie", maildir).deliver(Delivery("em-1", MESSAGE))
        receipt = MaildirDeliverer("voirie", maildir).deliver(Delivery("em-1", MESSAGE))
        assert receipt.duplicate is True
        assert len(_files(maildir / "new")) == 1

    def test_duplicate_detected_after_mail_client_moved_it_to_cur(self, tmp_path: Path) -> None:
        """A copy moved to `cur/` with `:2,S` flags by a mail client still counts as delivered."""
        maildir = tmp_path / "voirie"
        deliverer = MaildirDeliverer("voirie", maildir)
        first = Path(deliverer.deliver(Delivery("em-1", MESSAGE)).location)
        seen = maildir / "cur" / f"{first.name}:2,S"
        first.rename(seen)
        receipt = deliverer.deliver(Delivery("em-1", MESSAGE))
        assert receipt.duplicate is True
        assert Path(receipt.location) == seen
        assert _files(maildir / "new") == []
        assert _files(maildir / "cur") == [seen]

    def test_different_requests_get_different_files(self, tmp_path: Path) -> None:
        """Two request ids give two files, each with its own content."""
        maildir = tmp_path / "voirie"
        deliverer = MaildirDeliverer("voirie", maildir)
        one = deliverer.deliver(Delivery("em-1", b"one"))
        two = deliverer.deliver(Delivery("em-2", b"two"))
        assert one.location != two.location
        assert two.duplicate is False
        assert sorted(path.read_bytes() for path in _files(maildir / "new")) == [b"one", b"two"]

    def test_unwritable_target_raises_a_permanent_delivery_error(self, tmp_path: Path) -> None:
        """A maildir path that is a regular file fails with a permanent `DeliveryError`."""
        maildir = tmp_path / "voirie"
        maildir.write_bytes(b"not a folder")
        with pytest.raises(DeliveryError) as caught:
            MaildirDeliverer("voirie", maildir).deliver(Delivery("em-1", MESSAGE))
        assert isinstance(caught.value, PermanentError)
        assert caught.value.transient is False
        assert "voirie" in str(caught.value)
        assert maildir.read_bytes() == b"not a folder"

    def test_concurrent_deliveries_of_one_request_leave_one_file(self, tmp_path: Path) -> None:
        """Eight threads delivering the same request id at once leave exactly one file."""
        maildir = tmp_path / "voirie"
        deliverer = MaildirDeliverer("voirie", maildir)
        start = threading.Barrier(8)
        duplicates: list[bool] = []
        errors: list[BaseException] = []

        def deliver() -> None:
            start.wait()
            try:
                duplicates.append(deliverer.deliver(Delivery("em-1", MESSAGE)).duplicate)
            except BaseException as exc:  # collected so the main thread sees it
                errors.append(exc)

        threads = [threading.Thread(target=deliver) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(_files(maildir / "new")) == 1
        assert sorted(duplicates) == [False] + [True] * 7


class TestBuildDeliverers:
    """`build_deliverers` gives one maildir deliverer per declared destination."""

    def test_one_deliverer_per_destination_under_the_root(
        self, routing_config: RoutingConfig, tmp_path: Path
    ) -> None:
        """Relative destination paths are resolved under the maildir root."""
        deliverers = build_deliverers(routing_config, tmp_path)
        assert set(deliverers) == set(routing_config.destinations)
        voirie = deliverers["voirie"]
        assert isinstance(voirie, MaildirDeliverer)
        assert voirie.name == "voirie"
        assert voirie.path == tmp_path / "voirie"

    def test_absolute_path_is_kept(self, routing_config: RoutingConfig, tmp_path: Path) -> None:
        """An absolute destination path is used as is, not under the root."""
        elsewhere = tmp_path / "ailleurs" / "astreinte"
        document = routing_config.model_dump(mode="json")
        document["destinations"]["astreinte"] = {"type": "maildir", "path": str(elsewhere)}
        config = RoutingConfig.model_validate(document)
        deliverers = build_deliverers(config, tmp_path / "root")
        astreinte = deliverers["astreinte"]
        assert isinstance(astreinte, MaildirDeliverer)
        assert astreinte.path == elsewhere
        revue = deliverers["revue"]
        assert isinstance(revue, MaildirDeliverer)
        assert revue.path == tmp_path / "root" / "revue"

    def test_built_deliverer_writes_under_the_root(
        self, routing_config: RoutingConfig, tmp_path: Path
    ) -> None:
        """A delivery through a built deliverer lands in `<root>/<path>/new`."""
        build_deliverers(routing_config, tmp_path)["revue"].deliver(Delivery("em-1", MESSAGE))
        assert [path.read_bytes() for path in _files(tmp_path / "revue" / "new")] == [MESSAGE]
