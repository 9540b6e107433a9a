"""`make bench`: the benchmarks of the performance issue, in one run, against this machine.

Every figure is a ratio measured in the same run (model throughput against the matrix-multiply
bound measured minutes before, the worker against the model alone on the same requests...), so
the marks hold on any machine. Results go to `bench/results/latest.json` and `latest.md`, with
the machine's description; the README quotes the latest.

    python -m bench.run [--quick] [--only model|service] [--out bench/results] [--cache var/bench]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import hardware

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("model", "service")


def _mark(passed: bool | None) -> str:
    return {True: "pass", False: "**short**", None: "n/a"}[passed]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return "–" if value is None else str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    """The Markdown report: every target with its mark first, then the measurements."""
    machine = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"`{results['command']}` on {results['generated_at']}, {results['wall_seconds']:.0f} s.",
        "",
        "Machine: " + ", ".join(f"{key} {_cell(value)}" for key, value in machine.items()),
        "",
        "## Targets",
        "",
    ]
    targets = [t for part in PARTS for t in results.get(part, {}).get("targets", [])]
    lines += _table(
        [{**t, "mark": _mark(t.get("passed"))} for t in targets],
        ["name", "value", "target", "mark"],
    )
    model = results.get("model")
    if model:
        lines += ["## Model throughput", ""]
        lines += _table(
            model["rows"],
            [
                "model",
                "variant",
                "batch",
                "sequences_per_s",
                "real_tokens_per_s",
                "bound_sequences_per_s",
                "ratio_to_bound",
            ],
        )
        lines += ["Optimisations (before → after):", ""]
        lines += _table(
            model.get("optimisations", []),
            ["name", "before", "after", "unit", "kept", "accuracy_note"],
        )
    service = results.get("service")
    if service:
        lines += ["## Worker", "", "```json", json.dumps(service, indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=Path("var/bench"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    results: dict[str, Any] = {
        "command": "make bench" if not args.quick else "python -m bench.run --quick",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": hardware.machine(),
    }
    parts = args.only or list(PARTS)
    if "model" in parts:
        from bench import model_speed

        results["model"] = model_speed.run(args.cache, quick=args.quick)
    if "service" in parts:
        from bench import service

        results["service"] = service.run(args.cache, quick=args.quick)
    results["wall_seconds"] = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    report = render(results)
    (args.out / "latest.md").write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
