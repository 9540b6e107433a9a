"""The generated MODEL_CARD.md of a model directory."""

from __future__ import annotations

from typing import Any

from classifiers.taxonomy import Taxonomy


def _head_table(name: str, scores: dict[str, Any]) -> list[str]:
    lines = [
        f"**{name}**: accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}",
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, row in scores["per_class"].items():
        lines.append(
            f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} "
            f"| {row['support']} |"
        )
    return [*lines, ""]


def render_model_card(metadata: dict[str, Any], taxonomy: Taxonomy) -> str:
    """Markdown describing the model, its data, calibration and validation metrics."""
    data = metadata["training_data"]
    lines = [
        f"# Model card: {metadata['version']}",
        "",
        f"- Kind: `{metadata['kind']}`",
        f"- Created: {metadata['created_at']}",
    ]
    if metadata.get("base_checkpoint"):
        lines.append(f"- Base checkpoint: `{metadata['base_checkpoint']}`")
    if data.get("fingerprint"):
        lines += [
            f"- Training data: {data['examples']} labelled requests from "
            + ", ".join(f"`{folder}`" for folder in data["folders"]),
            f"- Training data fingerprint (SHA-256): `{data['fingerprint']}`",
        ]
    else:  # e.g. heads not trained yet, or trained elsewhere: say so rather than print None
        lines.append("- Training data: none recorded")
    lines += [
        f"- Hyper-parameters: `{metadata['hyperparameters']}`",
        f"- Libraries: `{metadata['library_versions']}`",
        "",
        "## Labels",
        "",
        "Departments: " + ", ".join(f"`{key}`" for key in taxonomy.department_keys),
        "",
        "Urgencies: " + ", ".join(f"`{key}`" for key in taxonomy.urgency_keys),
        "",
        "## Intended use",
        "",
        "Pre-sorting the requests a French commune receives by email and e-form, with a human "
        "review queue for low-confidence predictions. Not for decisions about people. Trained on "
        "requests written for the project, not on real citizens' mail.",
        "",
    ]
    calibration = metadata.get("calibration") or {}
    if calibration:
        lines += ["## Calibration (temperature scaling on validation data)", ""]
        lines += ["| head | temperature | ECE before | ECE after |", "|---|---|---|---|"]
        for head, row in calibration.items():
            lines.append(
                f"| {head} | {row['temperature']:.3f} | {row['ece_before']:.3f} "
                f"| {row['ece_after']:.3f} |"
            )
        lines.append("")
    validation = (metadata.get("metrics") or {}).get("validation")
    if validation:
        lines += [f"## Validation metrics ({data['validation_examples']} requests)", ""]
        lines += _head_table("Department", validation["department"])
        lines += _head_table("Urgency (model)", validation["urgency"])
        lines += _head_table(
            "Urgency (model + safety rules)", validation["urgency_with_safety_rules"]
        )
    else:
        lines += ["No validation data was given; the model is uncalibrated (temperature 1).", ""]
    return "\n".join(lines)
