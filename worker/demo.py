"""`triage demo`: the bundled samples through parse → classify → route → deliver, as a table."""

from __future__ import annotations

from pathlib import Path

from classifiers.dataset import request_files
from worker import exit_codes
from worker.errors import ParseError
from worker.parsing import read_raw
from worker.pipeline import Outcome, Status
from worker.request import RawRequest
from worker.runtime import Configuration, build_pipeline

_HEADERS = ("request", "department", "urgency", "confidence", "destination", "status")


def _row(outcome: Outcome) -> tuple[str, ...]:
    name = Path(outcome.origin).name
    if outcome.prediction is None or outcome.decision is None:
        destinations = ", ".join(r.destination for r in outcome.receipts) or "-"
        return (name, "-", "-", "-", destinations, f"{outcome.status.value}: {outcome.error}")
    prediction = outcome.prediction
    urgency = prediction.urgency.label
    if prediction.safety_rules:
        urgency += f" (rule: {', '.join(prediction.safety_rules)})"
    status = outcome.status.value
    if outcome.receipts and all(r.duplicate for r in outcome.receipts):
        status += " (already there)"
    return (
        name,
        prediction.department.label,
        urgency,
        f"{prediction.department.confidence:.2f}",
        " + ".join(outcome.decision.destinations),
        status,
    )


def format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [_HEADERS, *rows]) for i in range(len(_HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [_HEADERS, *rows]]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_demo(configuration: Configuration, samples: Path) -> int:
    """Process every sample in one batch with the embedded pipeline and print the results."""
    pipeline = build_pipeline(configuration)
    raws: list[RawRequest] = []
    unreadable: list[Outcome] = []
    for path in request_files([samples]):
        try:
            raws.append(read_raw(path, configuration.settings.limits))
        except ParseError as exc:  # not even bytes to dead-letter: the file stays where it is
            unreadable.append(Outcome("-", str(path), Status.FAILED, error=str(exc)))
    outcomes = pipeline.process(raws) + unreadable
    print(format_table([_row(outcome) for outcome in outcomes]))
    settings = configuration.settings
    counts = {status: sum(o.status is status for o in outcomes) for status in Status}
    print(
        f"\n{len(outcomes)} requests: {counts[Status.DELIVERED]} delivered, "
        f"{counts[Status.REVIEW]} sent to review, {counts[Status.DEAD_LETTER]} dead-lettered, "
        f"{counts[Status.FAILED]} failed."
    )
    print(f"Maildirs: {settings.maildir_path}/<destination>/new/")
    print(f"Decision log: {settings.decision_log_path}")
    return exit_codes.OK if counts[Status.FAILED] == 0 else exit_codes.SOME_INPUTS_FAILED
