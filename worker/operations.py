"""The operator commands around the RabbitMQ worker: submit, status and the dead-letter queue."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from classifiers.dataset import request_files
from worker import exit_codes
from worker.errors import ParseError
from worker.parsing import parse_raw, read_raw
from worker.rabbitmq import RabbitAdmin
from worker.routing import MaildirDestination, queue_departments
from worker.runtime import Configuration, topology_of


def _admin(configuration: Configuration) -> RabbitAdmin:
    return RabbitAdmin(configuration.settings.broker, topology_of(configuration.settings))


def submit(configuration: Configuration, paths: list[Path]) -> int:
    """Validate request files, publish the valid ones with confirms, report the counts."""
    settings = configuration.settings
    valid: list[tuple[bytes, str, str, str]] = []
    refused = 0
    for path in request_files(paths):
        try:
            raw = read_raw(path, settings.limits)
            request = parse_raw(raw, settings.limits)
        except ParseError as exc:
            refused += 1
            print(f"refused {path}: {exc}", file=sys.stderr)
            continue
        valid.append((raw.payload, raw.content_type, request.id, raw.channel.value))
    confirmed = _admin(configuration).submit(valid, queue_departments(configuration.routing))
    print(f"{confirmed} confirmed, {refused} refused")
    return exit_codes.SOME_INPUTS_FAILED if refused else exit_codes.OK


def _review_backlog(configuration: Configuration) -> int | None:
    review = configuration.routing.destinations[configuration.routing.review_destination]
    if not isinstance(review, MaildirDestination):
        return None
    path = review.path
    folder = (path if path.is_absolute() else configuration.settings.maildir_path / path) / "new"
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


def _recent_outcomes(log_path: Path, since: datetime) -> Counter[str]:
    counts: Counter[str] = Counter()
    if not log_path.exists():
        return counts
    with log_path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                if datetime.fromisoformat(record["time"]) >= since:
                    counts[record["outcome"]] += 1
            except (ValueError, KeyError, TypeError):
                continue
    return counts


def status(configuration: Configuration) -> int:
    """Queue depths, the review backlog and the last hour's outcomes."""
    topology = topology_of(configuration.settings)
    names = [
        topology.intake,
        topology.deliver,
        *(n for n, _ in topology.retry_queues()),
        topology.dead,
    ]
    depths = _admin(configuration).depths(names)
    print("queue                          messages")
    for name, depth in depths.items():
        print(f"{name:<30} {'missing' if depth is None else depth:>8}")
    backlog = _review_backlog(configuration)
    if backlog is not None:
        print(f"{'review (maildir new/)':<30} {backlog:>8}")
    since = datetime.now(UTC) - timedelta(hours=1)
    counts = _recent_outcomes(configuration.settings.decision_log_path, since)
    summary = ", ".join(f"{outcome} {count}" for outcome, count in sorted(counts.items()))
    print(f"\nlast hour: {summary or 'nothing recorded'}")
    return exit_codes.OK


def dlq_list(configuration: Configuration) -> int:
    letters = _admin(configuration).dead_letters()
    print(f"{len(letters)} dead-lettered requests")
    for letter in letters:
        print(
            f"{letter.request_id}  stage={letter.stage}  attempts={letter.attempts}  "
            f"{letter.error_class}: {letter.reason}"
        )
    return exit_codes.OK


def dlq_replay(configuration: Configuration, request_ids: list[str]) -> int:
    replayed = _admin(configuration).replay(set(request_ids) if request_ids else None)
    print(f"{replayed} replayed into {topology_of(configuration.settings).intake}")
    return exit_codes.OK


def dlq_purge(configuration: Configuration, yes: bool) -> int:
    if not yes:
        if not sys.stdin.isatty():
            print("refusing to purge without --yes", file=sys.stderr)
            return exit_codes.USAGE
        answer = input("Delete every dead-lettered request for good? Type 'purge': ")
        if answer.strip() != "purge":
            print("nothing purged")
            return exit_codes.OK
    purged = _admin(configuration).purge_dead()
    print(f"{purged} purged")
    return exit_codes.OK
