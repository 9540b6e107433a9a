"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, with handlers that record or refuse."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from worker.config import SmtpSettings


@dataclass(frozen=True)
class Received:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...]


class RecordingHandler:
    """Accepts every message and keeps it."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.received.append(
            Received(
                str(envelope.mail_from),
                tuple(envelope.rcpt_tos),
                content,
                tuple(envelope.mail_options),
            )
        )
        return "250 OK"


class RefusingHandler(RecordingHandler):
    """Replies `reply` to the first `times` RCPT or DATA commands, then accepts."""

    def __init__(self, stage: Literal["RCPT", "DATA"], reply: str, times: int = 1_000) -> None:
        super().__init__()
        self.stage = stage
        self.reply = reply
        self.times = times
        self.refusals = 0

    def _refuse(self, stage: str) -> bool:
        if stage == self.stage and self.refusals < self.times:
            self.refusals += 1
            return True
        return False

    async def handle_RCPT(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._refuse("RCPT"):
            return self.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self._refuse("DATA"):
            return self.reply
        return await super().handle_DATA(server, session, envelope)


class PasswordCheck:
    """An aiosmtpd authenticator accepting one login and password."""

    def __init__(self, login: str, password: str) -> None:
        self.login = login.encode()
        self.password = password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == self.login
            and data.password == self.password
        )
        return AuthResult(success=ok, handled=False)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_server(handler: RecordingHandler, **server_options: Any) -> Iterator[SmtpSettings]:
    """Run aiosmtpd with `handler` on a free port; yields settings that reach it."""
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **server_options)
    controller.start()
    try:
        yield SmtpSettings(
            host="127.0.0.1", port=controller.port, sender="triage@mairie.example", timeout=5.0
        )
    finally:
        controller.stop()


@contextmanager
def silent_server() -> Iterator[int]:
    """A port whose connections are accepted by the kernel but never greeted (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


@contextmanager
def hanging_up_server() -> Iterator[int]:
    """A port whose server closes every connection at once, before any greeting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
