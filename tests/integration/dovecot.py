"""A real Dovecot IMAP server for tests: configured in a temporary directory, on a loopback port.

Dovecot runs its mail processes as `nobody` (it refuses uid 0), so the server's directory lives
outside pytest's private temporary folders, readable by that user, and is removed on stop.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from imapclient import IMAPClient

from tests.smtp_server import free_port

USER = "mairie"
PASSWORD = "mot-de-passe-de-test"


_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""


class Dovecot:
    """One Dovecot instance with one test user."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="triage-dovecot-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.config = self.root / "dovecot.conf"
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir()
        shutil.chown(self.root / "mail", "nobody", "nogroup")
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:::::\n", encoding="utf-8")
        self.config.write_text(_CONFIG.format(root=self.root, port=self.port), encoding="utf-8")

    def start(self) -> Dovecot:
        # Dovecot daemonises; its children would hold captured pipes open, so no capture here.
        with (self.root / "start.log").open("ab") as log:
            subprocess.run(["dovecot", "-c", str(self.config)], check=True, stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"dovecot did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        # A stopped master leaves logged-in imap processes running here; a restart worth the name
        # drops its clients, so kick them first.
        subprocess.run(
            ["doveadm", "-c", str(self.config), "kick", USER],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(
            ["doveadm", "-c", str(self.config), "stop"], check=False, capture_output=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    time.sleep(0.1)
            except OSError:
                return

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def client(self) -> IMAPClient:
        """A fresh client logged in as the test user (the test's own view of the mailbox)."""
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def append(self, folder: str, message: bytes) -> None:
        client = self.client()
        try:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, message)
        finally:
            client.logout()

    def messages(self, folder: str) -> dict[int, tuple[bytes, tuple[bytes, ...]]]:
        """UID -> (raw bytes, flags) of every message in `folder`."""
        client = self.client()
        try:
            if not client.folder_exists(folder):
                return {}
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            if not uids:
                return {}
            data = client.fetch(uids, ["BODY.PEEK[]", "FLAGS"])
            return {
                uid: (bytes(entry[b"BODY[]"]), tuple(entry[b"FLAGS"]))
                for uid, entry in data.items()
            }
        finally:
            client.logout()
