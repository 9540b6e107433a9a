"""The pure helpers of the service benchmark: percentiles, rates, targets, /proc and log parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.service import latency_ms, percentile, requests_per_s, target
from bench.worker_process import DecisionTimes, parse_vm_hwm

STATUS = """Name:\tpython
State:\tS (sleeping)
VmPeak:\t  812345 kB
VmSize:\t  800000 kB
VmHWM:\t  153600 kB
VmRSS:\t  150000 kB
Threads:\t7
"""


class TestPercentile:
    def test_interpolates_between_ranks(self) -> None:
        """The 95th percentile of 1..20 lies between the 19th and 20th values."""
        assert percentile([float(v) for v in range(20, 0, -1)], 95) == pytest.approx(19.05)

    def test_median_and_extremes(self) -> None:
        """p0, p50 and p100 are the minimum, the median and the maximum."""
        values = [3.0, 1.0, 2.0]
        assert (percentile(values, 0), percentile(values, 50), percentile(values, 100)) == (
            1.0,
            2.0,
            3.0,
        )

    def test_refuses_empty_and_out_of_range(self) -> None:
        """No values, or q outside 0-100, is an error rather than a made-up figure."""
        with pytest.raises(ValueError):
            percentile([], 50)
        with pytest.raises(ValueError):
            percentile([1.0], 101)


class TestLatencyAndRate:
    def test_latency_in_milliseconds(self) -> None:
        """Latency is delivery minus publish time, per request, in milliseconds."""
        published = {"a": 10.0, "b": 10.0}
        delivered = {"a": 10.1, "b": 10.3, "other": 99.0}
        assert latency_ms(published, delivered) == {"p50": 200.0, "p95": 290.0, "p99": 298.0}

    def test_rate_from_first_publish_to_last_delivery(self) -> None:
        """Four requests from 0 s to 2 s run at 2 requests/s."""
        published = {"a": 0.0, "b": 0.5, "c": 0.6, "d": 0.7}
        delivered = {"a": 1.0, "b": 1.5, "c": 2.0, "d": 1.9}
        assert requests_per_s(published, delivered) == pytest.approx(2.0)


class TestTarget:
    def test_at_least(self) -> None:
        """A ratio target passes at or above its limit and falls short below it."""
        assert target("ratio", 0.85, 0.85, at_most=False)["passed"]
        assert not target("ratio", 0.84, 0.85, at_most=False)["passed"]

    def test_at_most(self) -> None:
        """A latency target passes at or below its limit; a missing value falls short."""
        line = target("p95", 900.0, 1000, at_most=True)
        assert line == {
            "name": "p95",
            "value": 900.0,
            "target": 1000,
            "passed": True,
            "direction": "<=",
        }
        assert not target("p95", 1000.1, 1000, at_most=True)["passed"]
        assert not target("p95", None, 1000, at_most=True)["passed"]


class TestVmHwm:
    def test_reads_peak_in_bytes(self) -> None:
        """VmHWM in kB becomes bytes."""
        assert parse_vm_hwm(STATUS) == 153600 * 1024

    def test_missing_line(self) -> None:
        """A status text without VmHWM is an error."""
        with pytest.raises(ValueError, match="VmHWM"):
            parse_vm_hwm("Name:\tpython\nVmRSS:\t 1 kB\n")


class TestDecisionTimes:
    def test_follows_appends_and_waits_for_whole_lines(self, tmp_path: Path) -> None:
        """Records are read as appended; a line not yet ended is read on the next poll."""
        log = tmp_path / "decisions.jsonl"
        first = {"request_id": "a", "time": "2026-03-02T08:00:00+00:00", "urgency": "critique"}
        second = json.dumps({"request_id": "b", "time": "2026-03-02T08:00:01.5+00:00"})
        log.write_text(json.dumps(first) + "\n" + second[:10], encoding="utf-8")
        times = DecisionTimes([log, tmp_path / "absent.jsonl"])
        assert set(times.poll()) == {"a"}
        with log.open("a", encoding="utf-8") as handle:
            handle.write(second[10:] + "\n")
        assert times.poll()["b"] - times.times["a"] == pytest.approx(1.5)
        assert times.urgency == {"a": "critique", "b": None}
        assert times.records == 2

    def test_wait_for_times_out_with_the_count(self, tmp_path: Path) -> None:
        """Waiting for a request never recorded says how many are missing."""
        times = DecisionTimes([tmp_path / "decisions.jsonl"])
        with pytest.raises(TimeoutError, match="1 of 1"):
            times.wait_for(["x"], timeout=0.05)
