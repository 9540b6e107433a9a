"""The promotion gate: whether a candidate model may replace the current one.

Both models are scored on the same held-out requests. The candidate passes when its department
macro-F1 is at least the current model's minus a tolerance, and its `critique` recall (model +
safety rules, what agents actually receive) is not lower. A held-out set without any `critique`
request cannot measure that recall: the verdict says so and does not block on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifiers.evaluation import Evaluation, HeadReport, format_head

GATE_FILE = "gate.json"
GATE_REPORT_DIR = "gate-report"
REPORT_MARKDOWN = "report.md"
REPORT_JSON = "report.json"
CRITIQUE = "critique"
DEFAULT_TOLERANCE = 0.005
# Both scores come from the same requests: a difference below this is float noise, not a loss.
_EPSILON = 1e-9


def summary(evaluation: Evaluation) -> dict[str, Any]:
    """The figures the gate and `triage model list` show for one evaluated model."""
    rules = evaluation.urgency_with_rules.per_class.get(CRITIQUE)
    model = evaluation.urgency.per_class.get(CRITIQUE)
    support = rules.support if rules else 0
    return {
        "version": evaluation.model_version,
        "examples": evaluation.examples,
        "department_macro_f1": evaluation.department.macro_f1,
        "department_accuracy": evaluation.department.accuracy,
        "urgency_macro_f1": evaluation.urgency_with_rules.macro_f1,
        "critique_support": support,
        "critique_recall": rules.recall if rules and support else None,
        "critique_recall_model_only": model.recall if model and support else None,
    }


@dataclass(frozen=True)
class GateVerdict:
    """Whether to promote, why (English sentences with the figures), and both models' figures."""

    promote: bool
    reasons: tuple[str, ...]
    candidate: dict[str, Any]
    current: dict[str, Any]
    tolerance: float = DEFAULT_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reasons": list(self.reasons),
            "tolerance": self.tolerance,
            "candidate": self.candidate,
            "current": self.current,
        }

    def to_json(self) -> str:
        """The content of a version's `gate.json`."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"


def decide(
    candidate: Evaluation, current: Evaluation, *, tolerance: float = DEFAULT_TOLERANCE
) -> GateVerdict:
    """The verdict on `candidate` against `current`, both scored on the same requests.

    Raises `ValueError` for a tolerance outside [0, 1) or evaluations of different sizes (the
    gate compares like with like, or nothing).
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    if candidate.examples != current.examples:
        raise ValueError(
            f"the evaluations differ in size ({candidate.examples} and {current.examples} "
            "requests): the gate needs both models scored on the same held-out data"
        )
    ours, theirs = summary(candidate), summary(current)
    reasons: list[str] = []
    passed = True

    f1, f1_current = ours["department_macro_f1"], theirs["department_macro_f1"]
    figures = f"{f1:.3f} {{}} {f1_current:.3f} − {tolerance:.3f}"
    if f1 >= f1_current - tolerance - _EPSILON:
        reasons.append("department macro-F1 " + figures.format("≥"))
    else:
        passed = False
        reasons.append("department macro-F1 " + figures.format("<"))

    recall, recall_current = ours["critique_recall"], theirs["critique_recall"]
    if recall is None or recall_current is None:
        reasons.append("no critique request in the held-out data: critique recall not checked")
    elif recall >= recall_current - _EPSILON:
        reasons.append(
            f"critique recall (model + safety rules) {recall:.3f} ≥ {recall_current:.3f}"
        )
    else:
        passed = False
        reasons.append(
            f"critique recall (model + safety rules) {recall:.3f} < {recall_current:.3f}"
        )
    return GateVerdict(passed, tuple(reasons), ours, theirs, tolerance)


def _cell(value: object) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _comparison(verdict: GateVerdict) -> list[str]:
    rows = [
        ("department macro-F1", "department_macro_f1"),
        ("department accuracy", "department_accuracy"),
        ("urgency macro-F1 (+ safety rules)", "urgency_macro_f1"),
        ("critique recall (+ safety rules)", "critique_recall"),
        ("critique recall (model alone)", "critique_recall_model_only"),
    ]
    lines = ["| metric | candidate | current |", "|---|---|---|"]
    for name, key in rows:
        lines.append(
            f"| {name} | {_cell(verdict.candidate[key])} | {_cell(verdict.current[key])} |"
        )
    return lines


def _heads(evaluation: Evaluation) -> list[str]:
    heads: Sequence[HeadReport] = (evaluation.department, evaluation.urgency_with_rules)
    return ["```", *(format_head(head) + "\n" for head in heads), "```"]


def render_gate_report(
    verdict: GateVerdict, candidate: Evaluation, current: Evaluation, data: Sequence[str]
) -> str:
    """The Markdown of `gate-report/report.md`: labels, counts and scores only, never text.

    `data` describes the held-out requests, one line each (folders, corrections held out).
    """
    lines = [
        "# Promotion gate",
        "",
        f"- candidate: `{candidate.model_version}`",
        f"- current: `{current.model_version}`",
        f"- held-out data: {candidate.examples} labelled requests",
        *(f"  - {line}" for line in data),
        f"- verdict: **{'promote' if verdict.promote else 'refuse'}**",
        *(f"  - {reason}" for reason in verdict.reasons),
        "",
        "## Both models on the same requests",
        "",
        *_comparison(verdict),
        "",
        "## Candidate per class",
        "",
        *_heads(candidate),
        "",
        "## Current model per class",
        "",
        *_heads(current),
        "",
    ]
    return "\n".join(lines)


def write_gate_files(
    directory: Path,
    verdict: GateVerdict,
    candidate: Evaluation,
    current: Evaluation,
    data: Sequence[str],
) -> None:
    """Write `gate.json` and `gate-report/` (report.md, report.json) into a version directory."""
    (directory / GATE_FILE).write_text(verdict.to_json(), encoding="utf-8")
    report = directory / GATE_REPORT_DIR
    report.mkdir(exist_ok=True)
    markdown = render_gate_report(verdict, candidate, current, data)
    (report / REPORT_MARKDOWN).write_text(markdown, encoding="utf-8")
    document = {
        "data": list(data),
        "verdict": verdict.to_dict(),
        "candidate": candidate.to_dict(),
        "current": current.to_dict(),
    }
    (report / REPORT_JSON).write_text(
        json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
