"""The `triage retrain` and `triage model list | promote | rollback` commands.

`add_parsers` adds them to the `triage` parser; `COMMANDS` maps each command name to the
function that runs it and returns the exit code.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from classifiers.registry import ModelRegistry, ModelVersion
from worker import exit_codes
from worker.errors import ConfigError
from worker.runtime import Configuration

MANUAL_REASON = "promoted by hand (triage model promote)"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `retrain` and `model` to the subcommands of the `triage` parser."""
    retrain = commands.add_parser(
        "retrain",
        help="train a candidate on the corpus plus agents' corrections, gate it, promote it",
    )
    source = retrain.add_mutually_exclusive_group()
    source.add_argument(
        "--base", metavar="DIR", help="fine-tune a CamemBERT candidate from this base checkpoint"
    )
    source.add_argument(
        "--candidate", type=Path, metavar="DIR", help="gate this trained model directory instead"
    )
    retrain.add_argument("--no-promote", action="store_false", dest="promote", help="evaluate only")
    retrain.add_argument(
        "--data", type=Path, nargs="+", default=[], metavar="FOLDER",
        help="corpus folders (default: config/retraining.yaml)",
    )  # fmt: skip
    retrain.add_argument(
        "--validation", type=Path, nargs="+", default=[], metavar="FOLDER",
        help="calibration / validation folders (default: config/retraining.yaml)",
    )  # fmt: skip
    retrain.add_argument(
        "--test", type=Path, nargs="+", default=[], metavar="FOLDER",
        help="folders the gate scores both models on (default: config/retraining.yaml)",
    )  # fmt: skip

    model = commands.add_parser("model", help="list, promote or roll back model versions")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    model_commands.add_parser("list", help="every version, its status and figures")
    promote = model_commands.add_parser("promote", help="make a version current")
    promote.add_argument("version", metavar="VERSION")
    promote.add_argument("--reason", default=MANUAL_REASON, help="recorded in the history")
    model_commands.add_parser(
        "rollback", help="go back to the version current before the last promotion"
    )


def _retrain(configuration: Configuration, args: argparse.Namespace) -> int:
    from worker.retrain import RetrainOptions, retrain  # the training libraries load on demand

    try:
        options = RetrainOptions(
            base=args.base,
            candidate=args.candidate,
            promote=args.promote,
            data=tuple(args.data),
            validation=tuple(args.validation),
            test=tuple(args.test),
        )
    except ValueError as exc:
        raise ConfigError("command line", "--candidate", str(exc)) from exc
    result = retrain(configuration, options)
    print(result.summary())
    return exit_codes.GATE_REFUSED if result.outcome == "refused" else exit_codes.OK


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def format_versions(versions: list[ModelVersion]) -> str:
    """The `triage model list` table; the current version is marked with `*`."""
    header = ("", "version", "kind", "created", "status", "dept F1", "critique", "figures")
    rows = [
        (
            "*" if v.status == "current" else "",
            v.name,
            v.kind,
            v.created_at[:16].replace("T", " "),
            v.status,
            _figure(v.department_f1),
            _figure(v.critique_recall),
            v.metrics_source or "—",
        )
        for v in versions
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in (header, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines)


def _model(configuration: Configuration, args: argparse.Namespace) -> int:
    settings = configuration.settings
    registry = ModelRegistry(settings.models_root, taxonomy=configuration.taxonomy)
    if args.model_command == "list":
        print(format_versions(registry.versions()))
        if settings.model_dir is not None:
            print(f"note: settings.model_dir pins {settings.model_dir}: workers ignore `current`")
    elif args.model_command == "promote":
        previous = registry.current_version()
        registry.promote(args.version, reason=args.reason)
        print(f"promoted {args.version} (was {previous})")
    else:
        print(f"rolled back to {registry.rollback()}")
    return exit_codes.OK


COMMANDS: dict[str, Callable[[Configuration, argparse.Namespace], int]] = {
    "retrain": _retrain,
    "model": _model,
}
