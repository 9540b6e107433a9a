"""The `triage feedback` and `triage purge` commands: agents' corrections and their retention.

Labels are checked here against the taxonomy (the store keeps strings): an unknown label given
as an option raises `ConfigError` naming the option and the valid keys, which `triage` reports as
a configuration error; a bad `--since` or `--older-than` stops argument parsing. Per-row problems
of an imported CSV file are reported by line number and skipped. Nothing printed quotes a
request's text.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path

from classifiers.taxonomy import Taxonomy
from worker import exit_codes
from worker.config import parse_age
from worker.errors import ConfigError
from worker.feedback import Correction, FeedbackStore, UnknownRequestError
from worker.runtime import Configuration

CSV_COLUMNS = ("request_id", "department", "urgency", "text")
"""Columns `feedback import` reads; the first two are required, extra columns are ignored."""
_CSV_DELIMITERS = ",;\t"

CsvRow = dict[str, str | None]
"""One CSV row by column name (every name of `CSV_COLUMNS`), blank cells None."""


def _date(value: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {value!r}") from exc


def _age(value: str) -> str:
    try:
        parse_age(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `feedback` (add, import, list, scan-imap) and `purge` to the `triage` sub-commands."""
    feedback = commands.add_parser("feedback", help="record and list agents' corrections")
    feedback_commands = feedback.add_subparsers(dest="feedback_command", required=True)
    add = feedback_commands.add_parser("add", help="correct one remembered request")
    add.add_argument("request_id", metavar="REQUEST_ID")
    add.add_argument("--department", required=True, help="the department it should have gone to")
    add.add_argument("--urgency", help="the right urgency (default: keep the predicted one)")
    load = feedback_commands.add_parser(
        "import", help="record corrections from a CSV file: request_id,department[,urgency][,text]"
    )
    load.add_argument("path", type=Path, metavar="FILE.csv")
    listing = feedback_commands.add_parser("list", help="the stored corrections, oldest first")
    listing.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="made on or after")
    scan = feedback_commands.add_parser(
        "scan-imap", help="record requests agents moved between service folders of a mailbox"
    )
    scan.add_argument(
        "--account", action="append", default=[], dest="accounts", metavar="NAME",
        help="IMAP account to scan (repeatable; default: feedback.scan_accounts, else all in use)",
    )  # fmt: skip

    purge = commands.add_parser("purge", help="delete stored texts older than the retention")
    purge.add_argument(
        "--older-than", type=_age, metavar="AGE", help="e.g. 12m, 90d (default: feedback.retention)"
    )


def _label_problem(
    taxonomy: Taxonomy, department: str, urgency: str | None
) -> tuple[str, str] | None:
    """(field, why) when a label is not in the taxonomy, naming the valid keys; else None."""
    if department not in taxonomy.department_keys:
        valid = ", ".join(taxonomy.department_keys)
        return "department", f"unknown department {department!r} (valid: {valid})"
    if urgency is not None and urgency not in taxonomy.urgency_keys:
        valid = ", ".join(taxonomy.urgency_keys)
        return "urgency", f"unknown urgency {urgency!r} (valid: {valid})"
    return None


def _store(configuration: Configuration) -> closing[FeedbackStore]:
    return closing(FeedbackStore(configuration.settings.feedback_path))


def _add(configuration: Configuration, args: argparse.Namespace) -> int:
    problem = _label_problem(configuration.taxonomy, args.department, args.urgency)
    if problem is not None:
        field, why = problem
        raise ConfigError("command line", f"--{field}", why)
    with _store(configuration) as store:
        try:
            correction = store.correct(
                args.request_id, department=args.department, urgency=args.urgency, source="cli"
            )
        except (UnknownRequestError, ValueError) as exc:
            print(f"triage feedback add: {exc}", file=sys.stderr)
            return exit_codes.SOME_INPUTS_FAILED
    if correction is None:
        print(f"{args.request_id}: the same correction is already recorded")
    else:
        print(f"recorded {_describe(correction)}")
    return exit_codes.OK


def _describe(correction: Correction) -> str:
    department = f"{correction.predicted_department or '?'} -> {correction.department}"
    return f"{correction.request_id}: {department}, {_urgency(correction)}"


def _urgency(correction: Correction) -> str:
    was = correction.predicted_urgency
    if correction.urgency_corrected and was is not None and was != correction.urgency:
        return f"{was} -> {correction.urgency}"
    return correction.urgency


def _delimiter(header_line: str) -> str:
    # Spreadsheets set to French export CSV with ';': take the separator the header uses most.
    return max(_CSV_DELIMITERS, key=header_line.count)


def _read_csv(path: Path) -> list[tuple[int, CsvRow]] | str:
    """The non-blank rows after the header, each with the line it starts on; or why none."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    except UnicodeDecodeError:
        return "not UTF-8 text"
    reader = csv.reader(io.StringIO(content), delimiter=_delimiter(content.partition("\n")[0]))
    header = [name.strip().lower() for name in next(reader, [])]
    missing = [name for name in CSV_COLUMNS[:2] if name not in header]
    if missing:
        return (
            "the header row must name request_id,department[,urgency][,text] "
            f"(missing: {', '.join(missing)})"
        )
    column = {name: header.index(name) for name in CSV_COLUMNS if name in header}
    rows: list[tuple[int, CsvRow]] = []
    end = reader.line_num
    for cells in reader:
        # Report the line a row starts on: a quoted text may span several lines.
        line, end = end + 1, reader.line_num
        if any(cell.strip() for cell in cells):
            values: CsvRow = dict.fromkeys(CSV_COLUMNS)
            for name, index in column.items():
                values[name] = (cells[index].strip() or None) if index < len(cells) else None
            rows.append((line, values))
    return rows


def _import_row(
    store: FeedbackStore, taxonomy: Taxonomy, values: CsvRow
) -> Correction | str | None:
    """Record one CSV row as a `csv` correction: the correction, None if unchanged, or why not."""
    request_id, department = values["request_id"], values["department"]
    if request_id is None or department is None:
        return "request_id and department are required"
    problem = _label_problem(taxonomy, department, values["urgency"])
    if problem is not None:
        return problem[1]
    try:
        return store.correct(
            request_id,
            department=department,
            urgency=values["urgency"],
            source="csv",
            text=values["text"],
        )
    except (UnknownRequestError, ValueError) as exc:
        return str(exc)


def _import(configuration: Configuration, args: argparse.Namespace) -> int:
    path: Path = args.path
    rows = _read_csv(path)
    if isinstance(rows, str):
        print(f"triage feedback import: {path}: {rows}", file=sys.stderr)
        return exit_codes.SOME_INPUTS_FAILED
    recorded = skipped = unchanged = 0
    with _store(configuration) as store:
        for line, values in rows:
            outcome = _import_row(store, configuration.taxonomy, values)
            if isinstance(outcome, str):
                skipped += 1
                request_id = values["request_id"] or "?"
                print(f"line {line}: {request_id}: {outcome}; skipped", file=sys.stderr)
            elif outcome is None:
                unchanged += 1
            else:
                recorded += 1
    summary = f"{recorded} corrections recorded, {skipped} skipped"
    print(summary + (f", {unchanged} already recorded" if unchanged else ""))
    return exit_codes.OK


def _list(configuration: Configuration, args: argparse.Namespace) -> int:
    with _store(configuration) as store:
        corrections = store.corrections(since=args.since)
    if not corrections:
        print("no corrections")
        return exit_codes.OK
    table = [("time (UTC)", "request id", "department", "urgency", "source")]
    table += [
        (
            f"{c.created_at:%Y-%m-%d %H:%M}",
            c.request_id,
            f"{c.predicted_department or '?'} -> {c.department}",
            _urgency(c),
            c.source,
        )
        for c in corrections
    ]
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        )
    return exit_codes.OK


def _scan_imap(configuration: Configuration, args: argparse.Namespace) -> int:
    from worker.feedback_imap import scan_imap

    return scan_imap(configuration, args.accounts)


def _feedback(configuration: Configuration, args: argparse.Namespace) -> int:
    handlers = {"add": _add, "import": _import, "list": _list, "scan-imap": _scan_imap}
    return handlers[args.feedback_command](configuration, args)


def _purge(configuration: Configuration, args: argparse.Namespace) -> int:
    age = args.older_than or configuration.settings.feedback.retention
    with _store(configuration) as store:
        report = store.purge(parse_age(age))
    print(
        f"removed {report.requests} remembered requests and {report.corrections} corrections "
        f"older than {report.cutoff:%Y-%m-%d %H:%M} UTC ({age})"
    )
    return exit_codes.OK


COMMANDS: dict[str, Callable[[Configuration, argparse.Namespace], int]] = {
    "feedback": _feedback,
    "purge": _purge,
}
