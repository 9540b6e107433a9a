"""A `triage worker` subprocess for the service benchmarks, and what can be read of it.

Each worker gets its own state directory (maildir, decision log, stores) and the topology prefix
of its scenario; it runs as deployed (`triage worker`, no `-v`), optionally pinned to one core.
Its peak resident set comes from `/proc/<pid>/status` (VmHWM), and the time each request was
delivered from its decision log, whose record is written once every destination has the request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path

from worker.config import PROJECT_ROOT

__all__ = ["DecisionTimes", "WorkerProcess", "WorkerStartError", "parse_vm_hwm"]

DECISIONS_FILE = "decisions.jsonl"
LOG_FILE = "worker.log"
_KIB = 1024


class WorkerStartError(RuntimeError):
    """A worker process exited or never became healthy."""


def parse_vm_hwm(status: str) -> int:
    """The peak resident set size in bytes, from the text of `/proc/<pid>/status`."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "VmHWM":
            fields = value.split()
            if len(fields) != 2 or fields[1] != "kB" or not fields[0].isdigit():
                raise ValueError(f"unexpected VmHWM line: {line!r}")
            return int(fields[0]) * _KIB
    raise ValueError("no VmHWM line in the status text")


def free_port() -> int:
    """A TCP port nobody listens on now (for the worker's health endpoint)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WorkerProcess:
    """`python -m worker.cli worker` with its own state directory, prefix and model."""

    def __init__(
        self, state: Path, prefix: str, model_dir: Path, *, core: int | None = None
    ) -> None:
        self.state = state
        self.core = core
        self.port = free_port()
        self.env = {
            **os.environ,
            "TRIAGE_STATE_DIR": str(state),
            "TRIAGE_DECISION_LOG": str(state / DECISIONS_FILE),
            "TRIAGE_MAILDIR_ROOT": str(state / "maildir"),
            "TRIAGE_BROKER__PREFIX": prefix,
            "TRIAGE_MODEL_DIR": str(model_dir),
            "TRIAGE_WORKER__METRICS_PORT": str(self.port),
            "TRIAGE_LOG_FORMAT": "json",
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def decision_log(self) -> Path:
        return self.state / DECISIONS_FILE

    @property
    def pid(self) -> int:
        if self.process is None:
            raise WorkerStartError("the worker was not started")
        return self.process.pid

    def start(self) -> float:
        """Start the process; returns the wall-clock time just before it was spawned."""
        self.state.mkdir(parents=True, exist_ok=True)
        core = self.core

        def pin() -> None:  # in the child, before exec: every thread it starts inherits this
            if core is not None:
                os.sched_setaffinity(0, {core})

        with (self.state / LOG_FILE).open("ab") as log:
            began = time.time()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "worker"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pin if core is not None else None,
            )
        return began

    def log_tail(self, lines: int = 15) -> str:
        path = self.state / LOG_FILE
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise WorkerStartError(
                f"worker exited with code {self.process.returncode}:\n{self.log_tail()}"
            )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Block until `/healthz` answers 200 (broker connected, model loaded), then settle.

        The health server starts just before the consumers do, hence the short settling wait.
        """
        url = f"http://127.0.0.1:{self.port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running()
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        time.sleep(0.3)
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise WorkerStartError(f"worker not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def peak_rss(self) -> int:
        """VmHWM of the running process, in bytes."""
        self._check_running()
        return parse_vm_hwm(Path(f"/proc/{self.pid}/status").read_text(encoding="ascii"))

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for a clean exit; kill it past `timeout`. Returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class DecisionTimes:
    """Follows decision logs: when each request id was recorded, and with which urgency."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._offsets = dict.fromkeys(self.paths, 0)
        self.times: dict[str, float] = {}
        self.urgency: dict[str, str | None] = {}
        self.records = 0

    def poll(self) -> dict[str, float]:
        """Read what was appended since the last poll; returns request id -> epoch seconds."""
        for path in self.paths:
            try:
                with path.open("rb") as handle:
                    handle.seek(self._offsets[path])
                    chunk = handle.read()
            except FileNotFoundError:
                continue
            complete = chunk.rfind(b"\n") + 1  # a line still being written waits for next time
            self._offsets[path] += complete
            for line in chunk[:complete].splitlines():
                if line.strip():
                    self._add(json.loads(line))
        return self.times

    def _add(self, record: dict[str, object]) -> None:
        request_id = str(record["request_id"])
        self.records += 1
        self.times.setdefault(request_id, datetime.fromisoformat(str(record["time"])).timestamp())
        urgency = record.get("urgency")
        self.urgency.setdefault(request_id, None if urgency is None else str(urgency))

    def wait_for(
        self, ids: Collection[str], timeout: float, interval: float = 0.01
    ) -> dict[str, float]:
        """Times of `ids`, once all are recorded; `TimeoutError` saying how many are missing."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.poll()
            missing = [i for i in ids if i not in seen]
            if not missing:
                return {i: seen[i] for i in ids}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} of {len(ids)} requests not delivered")
            time.sleep(interval)

    def wait_records(self, count: int, timeout: float, interval: float = 0.05) -> None:
        """Block until at least `count` records were written (duplicates included)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if self.records >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.records} of {count} decisions recorded")
            time.sleep(interval)
