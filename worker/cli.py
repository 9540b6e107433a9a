"""The `triage` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from worker import cli_feedback, cli_models, exit_codes
from worker.broker import BrokerError
from worker.config import PROJECT_ROOT, Settings, load_settings
from worker.errors import ConfigError, ModelError, ParseError
from worker.logs import configure_logging
from worker.runtime import Configuration, active_model_dir, build_pipeline, load_configuration

DEFAULT_SAMPLES = PROJECT_ROOT / "data" / "samples"
DEFAULT_SHARED = PROJECT_ROOT.parent / "shared" / "data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triage", description="Sort a mairie's requests by department and urgency."
    )
    parser.add_argument(
        "--config", type=Path, help="settings file (YAML); TRIAGE_* env overrides it"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show info-level log events")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the bundled sample requests end to end")
    demo.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    demo.add_argument("--out", type=Path, help="where to deliver (default: <state_dir>/demo)")

    classify = commands.add_parser("classify", help="classify files, print one JSON line each")
    classify.add_argument("--model", type=Path, help="model directory (default: settings)")
    classify.add_argument(
        "--explain", action="store_true", help="add the words that weighed most to each line"
    )
    classify.add_argument("paths", nargs="+", type=Path, metavar="PATH")

    train = commands.add_parser(
        "train",
        help="train a model directory: CamemBERT fine-tuned from --base, else the TF-IDF baseline",
    )
    train.add_argument("--data", type=Path, nargs="+", required=True, metavar="FOLDER")
    train.add_argument("--validation", type=Path, nargs="*", default=[], metavar="FOLDER")
    train.add_argument("--out", type=Path, required=True, metavar="DIR")
    train.add_argument(
        "--base", metavar="DIR", help="CamemBERT checkpoint (a directory, or a hub id) to fine-tune"
    )
    train.add_argument(
        "--training-config", type=Path, metavar="FILE", help="default: config/training.yaml"
    )
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a key of the training configuration (repeatable)",
    )  # fmt: skip
    train.add_argument("--checkpoint", type=Path, metavar="DIR", help="default: <out>.checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    train.add_argument("--seed", type=int, default=0, help="baseline only (else: --set seed=N)")
    train.add_argument("--regularisation", type=float, default=10.0, help="baseline: inverse C")

    pretrain = commands.add_parser(
        "pretrain", help="train a tokenizer and a small CamemBERT base model on French text"
    )
    pretrain.add_argument("--out", type=Path, required=True, metavar="DIR")
    pretrain.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, metavar="DIR",
        help="holds service-public-vdd/ and an-debats-sentences/ (default: ../shared/data)",
    )  # fmt: skip
    pretrain.add_argument(
        "--data", type=Path, nargs="*", default=[], metavar="FOLDER",
        help="labelled folders whose text (not labels) joins the pretraining text",
    )  # fmt: skip
    pretrain.add_argument(
        "--pretraining-config", type=Path, metavar="FILE", help="default: config/pretraining.yaml"
    )
    pretrain.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a key of the pretraining configuration (repeatable)",
    )  # fmt: skip
    pretrain.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser("evaluate", help="score a model on labelled folders")
    evaluate.add_argument("--model", type=Path, help="model directory (default: settings)")
    evaluate.add_argument("--json", type=Path, help="also write the scores as JSON here")
    evaluate.add_argument(
        "--report", type=Path, metavar="DIR", help="write report.md, report.json and PNGs here"
    )
    evaluate.add_argument(
        "--baseline", type=Path, metavar="DIR", help="a baseline model to compare side by side"
    )
    evaluate.add_argument(
        "--compare", type=Path, action="append", default=[], metavar="DIR",
        help="another model directory for the report's comparison table (repeatable)",
    )  # fmt: skip
    evaluate.add_argument("folders", nargs="+", type=Path, metavar="FOLDER")
    worker = commands.add_parser("worker", help="consume RabbitMQ: classify, route, deliver")
    worker.add_argument("--workers", type=int, help="delivery threads (default: settings)")

    submit = commands.add_parser("submit", help="publish request files to the intake queue")
    submit.add_argument("paths", nargs="+", type=Path, metavar="PATH")

    intake = commands.add_parser("intake", help="take requests in from mailboxes or forms")
    intake_commands = intake.add_subparsers(dest="intake_command", required=True)
    for name, help_text in (
        ("imap", "watch the IMAP mailboxes of intake.imap_accounts"),
        ("http", "serve POST /forms for e-form submissions"),
    ):
        source = intake_commands.add_parser(name, help=help_text)
        source.add_argument(
            "--embedded",
            action="store_true",
            help="process requests in this process instead of publishing them to RabbitMQ",
        )

    commands.add_parser("status", help="queue depths and recent outcomes")

    dlq = commands.add_parser("dlq", help="inspect, replay or purge dead-lettered requests")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_commands.add_parser("list", help="reason, attempts and request id of each")
    replay = dlq_commands.add_parser("replay", help="publish them back to the intake queue")
    replay.add_argument("--request-id", action="append", default=[], dest="request_ids")
    purge = dlq_commands.add_parser("purge", help="delete them for good")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    cli_feedback.add_parsers(commands)
    cli_models.add_parsers(commands)
    return parser


def _worker(configuration: Configuration, args: argparse.Namespace) -> int:
    from worker.daemon import run_worker

    if args.workers is not None and args.workers < 1:
        raise ConfigError("command line", "--workers", "must be at least 1")
    return run_worker(configuration, workers=args.workers)


def _intake(configuration: Configuration, args: argparse.Namespace) -> int:
    if args.intake_command == "imap":
        from worker.intake_imap import run_imap_intake

        return run_imap_intake(configuration, embedded=args.embedded)
    from worker.intake_http import run_http_intake

    return run_http_intake(configuration, embedded=args.embedded)


def _submit(configuration: Configuration, args: argparse.Namespace) -> int:
    from worker.operations import submit

    return submit(configuration, args.paths)


def _status(configuration: Configuration, args: argparse.Namespace) -> int:
    from worker.operations import status

    return status(configuration)


def _dlq(configuration: Configuration, args: argparse.Namespace) -> int:
    from worker import operations

    if args.dlq_command == "list":
        return operations.dlq_list(configuration)
    if args.dlq_command == "replay":
        return operations.dlq_replay(configuration, args.request_ids)
    return operations.dlq_purge(configuration, args.yes)


def _classify(configuration: Configuration, args: argparse.Namespace) -> int:
    from classifiers.dataset import request_files
    from worker.parsing import read_raw

    pipeline = build_pipeline(configuration, model_dir=args.model, explanations=args.explain)
    settings = configuration.settings
    files = request_files(args.paths)
    failures = 0
    for start in range(0, len(files), settings.batch_size):
        batch = files[start : start + settings.batch_size]
        parsed = []
        lines: dict[Path, dict[str, object]] = {}
        for path in batch:
            try:
                parsed.append((path, pipeline.parse(read_raw(path, settings.limits))))
            except ParseError as exc:
                lines[path] = {"path": str(path), "error": str(exc)}
        classified = pipeline.classify([request for _, request in parsed]) if parsed else []
        for (path, _), item in zip(parsed, classified, strict=True):
            lines[path] = {
                "path": str(path),
                "request_id": item.request.id,
                "department": item.prediction.department.label,
                "urgency": item.prediction.urgency.label,
                "confidence": {
                    "department": round(item.prediction.department.confidence, 4),
                    "urgency": round(item.prediction.urgency.confidence, 4),
                },
                "needs_review": item.decision.needs_review,
                "destination": item.decision.primary,
            }
            if args.explain:
                lines[path]["evidence"] = {
                    head: [
                        {"text": e.text, "weight": e.weight}
                        for e in item.prediction.evidence
                        if e.head == head
                    ]
                    for head in ("department", "urgency")
                }
        for path in batch:
            failures += "error" in lines[path]
            print(json.dumps(lines[path], ensure_ascii=False), flush=True)
    return exit_codes.SOME_INPUTS_FAILED if failures else exit_codes.OK


def _overrides(items: Sequence[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise ConfigError("command line", "--set", f"expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value
    return overrides


def _pretrain(configuration: Configuration, args: argparse.Namespace) -> int:
    from classifiers.arguments import load_arguments
    from classifiers.pretrain import PretrainArguments, pretrain
    from classifiers.pretrain_corpus import load_pretraining_text

    path = args.pretraining_config or configuration.settings.config_dir / "pretraining.yaml"
    arguments = load_arguments(PretrainArguments, path, _overrides(args.overrides))
    try:
        documents, sources = load_pretraining_text(
            args.shared, args.data, configuration.taxonomy, arguments.request_repeats
        )
    except FileNotFoundError as exc:
        print(f"triage pretrain: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    for source in sources:
        print(f"{source.name}: {source.documents:,} documents, {source.characters:,} characters")
    result = pretrain(documents, sources, args.out, arguments, progress=not args.quiet)
    print(result.summary())
    return exit_codes.OK


def _finetune(configuration: Configuration, args: argparse.Namespace) -> int:
    from classifiers.finetune import finetune, load_training_arguments

    overrides = _overrides(args.overrides)
    path = args.training_config or configuration.settings.config_dir / "training.yaml"
    result = finetune(
        args.base,
        args.data,
        args.out,
        configuration.taxonomy,
        configuration.safety,
        validation=args.validation,
        args=load_training_arguments(path, overrides),
        checkpoint_dir=args.checkpoint,
        progress=not args.quiet,
    )
    print(f"trained {result.version} -> {result.directory}")
    return exit_codes.OK


def _train(configuration: Configuration, args: argparse.Namespace) -> int:
    from classifiers.evaluation import format_evaluation
    from classifiers.training import BaselineOptions, train_baseline

    if args.base is not None:
        return _finetune(configuration, args)

    try:
        options = BaselineOptions(regularisation=args.regularisation, seed=args.seed)
    except ValueError as exc:
        raise ConfigError("command line", "--regularisation", str(exc)) from exc
    result = train_baseline(
        args.data,
        args.out,
        configuration.taxonomy,
        configuration.safety,
        validation=args.validation,
        options=options,
        limits=configuration.settings.limits,
    )
    print(f"trained {result.version} on {result.examples} requests -> {result.directory}")
    if result.validation is not None:
        print(format_evaluation(result.validation))
    return exit_codes.OK


def _evaluate(configuration: Configuration, args: argparse.Namespace) -> int:
    from classifiers import load_classifier
    from classifiers.dataset import load_labelled
    from classifiers.evaluation import evaluate, format_evaluation

    settings = configuration.settings
    classifier = load_classifier(
        args.model or active_model_dir(settings), configuration.taxonomy, settings.inference
    )
    examples = load_labelled(args.folders, configuration.taxonomy, settings.limits)
    scores = evaluate(classifier, examples, configuration.taxonomy, configuration.safety)
    print(format_evaluation(scores))
    if args.json:
        args.json.write_text(json.dumps(scores.to_dict(), indent=1), encoding="utf-8")
    if args.report:
        from classifiers.report import build_report, write_report

        report = build_report(
            args.model or active_model_dir(settings),
            args.folders,
            configuration.taxonomy,
            configuration.safety,
            baseline_dir=args.baseline,
            compare=args.compare,
            routing=configuration.routing,
            limits=settings.limits,
        )
        for path in write_report(report, args.report):
            print(f"wrote {path}")
    return exit_codes.OK


def _demo(configuration: Configuration, args: argparse.Namespace) -> int:
    from worker.demo import run_demo

    out = args.out or configuration.settings.state_dir / "demo"
    settings = configuration.settings.model_copy(
        update={"maildir_root": out / "maildir", "decision_log": out / "decisions.jsonl"}
    )
    return run_demo(dataclasses.replace(configuration, settings=settings), args.samples)


_COMMANDS = {
    "classify": _classify,
    "train": _train,
    "pretrain": _pretrain,
    "evaluate": _evaluate,
    "demo": _demo,
    "worker": _worker,
    "submit": _submit,
    "intake": _intake,
    "status": _status,
    "dlq": _dlq,
    **cli_feedback.COMMANDS,
    **cli_models.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings: Settings = load_settings(args.config)
        level = settings.log_level if args.verbose else "WARNING"
        configure_logging(level, settings.log_format)
        configuration = load_configuration(settings)
        return _COMMANDS[args.command](configuration, args)
    except ConfigError as exc:
        print(f"triage: configuration error: {exc}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    except ModelError as exc:
        print(f"triage: model error: {exc}", file=sys.stderr)
        return exit_codes.MODEL_ERROR
    except BrokerError as exc:
        print(f"triage: broker error: {exc}", file=sys.stderr)
        return exit_codes.CANNOT_CONNECT
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
