"""`triage feedback scan-imap`: corrections read from where agents left triaged messages.

When requests are delivered to folders of a shared mailbox, an agent who moves one from
`Urbanisme` to `Voirie` has corrected it, and one who files a request out of the review folder has
labelled it. The scan lists the messages carrying our `X-Triage-Request-Id` in every folder that
routing maps to exactly one department, compares that department (and the urgency keyword the
agent may have changed) with the `X-Triage-*` headers written at delivery, and records the
difference. Folders of no department (the on-call copy, an archive, the review folder itself) are
not corrections. Re-running the scan records nothing twice.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass

import structlog

from classifiers.text import classifier_input
from worker import exit_codes
from worker.errors import ConfigError, ParseError, TransientError
from worker.feedback import CorrectionSource, FeedbackStore
from worker.imap import ImapSession, TriagedMessage, account_password, urgency_keyword
from worker.parsing import ParseLimits, parse_email
from worker.routing import ImapFolderDestination, RoutingConfig
from worker.runtime import Configuration

log = structlog.get_logger("worker.feedback_imap")


def folder_departments(routing: RoutingConfig) -> dict[str, dict[str, str]]:
    """Account -> folder -> the one department routed there (folders shared by two are left out)."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for department, rule in routing.departments.items():
        for name in rule.destinations:
            destination = routing.destinations[name]
            if isinstance(destination, ImapFolderDestination):
                seen[(destination.account, destination.folder)].add(department)
    mapping: dict[str, dict[str, str]] = defaultdict(dict)
    for (account, folder), departments in seen.items():
        if len(departments) == 1:
            mapping[account][folder] = next(iter(departments))
    return dict(mapping)


@dataclass(frozen=True)
class FoundCorrection:
    """What one message's place says about its labels."""

    request_id: str
    department: str
    urgency: str | None
    source: CorrectionSource
    predicted_department: str | None
    predicted_urgency: str | None
    model_version: str | None


def correction_of(
    message: TriagedMessage, department: str, urgencies: tuple[str, ...]
) -> FoundCorrection | None:
    """The correction a message in `department`'s folder stands for, or None if it agrees."""
    headers = message.headers
    request_id = headers.get("x-triage-request-id", "")
    routed = headers.get("x-triage-department") or None
    predicted_urgency = headers.get("x-triage-urgency") or None
    reviewed = headers.get("x-triage-review", "").lower() == "yes"
    if not request_id:
        return None
    chosen = [u for u in urgencies if urgency_keyword(u) in message.keywords]
    changed = [u for u in chosen if u != predicted_urgency]
    urgency = changed[0] if len(changed) == 1 else None  # two new keywords: ambiguous, ignored
    if department == routed and urgency is None and not reviewed:
        return None
    return FoundCorrection(
        request_id=request_id,
        department=department,
        urgency=urgency,
        source="review" if reviewed else "imap-move",
        predicted_department=routed,
        predicted_urgency=predicted_urgency,
        model_version=headers.get("x-triage-model") or None,
    )


@dataclass
class ScanReport:
    folders: int = 0
    messages: int = 0
    recorded: int = 0
    unchanged: int = 0
    skipped: int = 0


def scan_account(
    session: ImapSession,
    folders: Mapping[str, str],
    store: FeedbackStore,
    urgencies: tuple[str, ...],
    limits: ParseLimits | None = None,
) -> ScanReport:
    """Record the corrections found in one account's department folders."""
    report = ScanReport()
    existing = set(session.folders())
    for folder, department in sorted(folders.items()):
        if folder not in existing:
            continue
        report.folders += 1
        for message in session.triaged(folder):
            report.messages += 1
            found = correction_of(message, department, urgencies)
            if found is None:
                continue
            text = None
            if store.remembered(found.request_id) is None:  # purged or never kept: read it back
                text = _text_of(session, message, limits)
                if text is None:
                    report.skipped += 1
                    continue
            recorded = store.correct(
                found.request_id,
                department=found.department,
                urgency=found.urgency,
                source=found.source,
                text=text,
                predicted_department=found.predicted_department,
                predicted_urgency=found.predicted_urgency,
                model_version=found.model_version,
            )
            if recorded is None:
                report.unchanged += 1
            else:
                report.recorded += 1
    log.info(
        "feedback.imap_scanned",
        folders=report.folders,
        messages=report.messages,
        recorded=report.recorded,
        unchanged=report.unchanged,
        skipped=report.skipped,
    )
    return report


def _text_of(
    session: ImapSession, message: TriagedMessage, limits: ParseLimits | None
) -> str | None:
    payload = session.fetch_from(message.folder, message.uid)
    if payload is None:
        return None
    try:
        return classifier_input(parse_email(payload, limits))
    except ParseError:
        return None


def scan_imap(configuration: Configuration, accounts: Sequence[str] = ()) -> int:
    """Scan the accounts' department folders once and print what was recorded; an exit code."""
    settings = configuration.settings
    mapping = folder_departments(configuration.routing)
    names = list(accounts or settings.feedback.scan_accounts or sorted(mapping))
    for name in names:
        if name not in settings.imap:
            raise ConfigError("command line", "--account", f"unknown IMAP account {name!r}")
        if name not in mapping:
            problem = f"no department is routed to a folder of IMAP account {name!r}"
            raise ConfigError(str(settings.routing_file), "destinations", problem)
    if not names:
        print("no IMAP folder destination in the routing: nothing to scan")
        return exit_codes.OK
    urgencies = configuration.taxonomy.urgency_keys
    failed = False
    with closing(FeedbackStore(settings.feedback_path)) as store:
        for name in names:
            account = settings.imap[name]
            session = ImapSession(account, account_password(name, account))
            try:
                report = scan_account(session, mapping[name], store, urgencies, settings.limits)
            except TransientError as exc:
                print(f"{name}: cannot scan ({exc})", file=sys.stderr)
                failed = True
                continue
            finally:
                session.close(quiet=True)
            print(
                f"{name}: {report.messages} triaged messages in {report.folders} folders; "
                f"{report.recorded} corrections recorded, {report.unchanged} already known, "
                f"{report.skipped} unreadable"
            )
    return exit_codes.SOME_INPUTS_FAILED if failed else exit_codes.OK
