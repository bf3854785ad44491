"""What a training run did, for people: where its reports are and one closing paragraph for the log."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.paths import EDA_REPORT, HYBRID, OFFLINE_METRICS, PLOTS_DIR


def report_paths(project_dir: Path) -> dict[str, Any]:
    """Where the run's reports are: EDA HTML, offline metrics, plot tables (existing files only)."""
    plots = sorted(str(path) for path in (project_dir / PLOTS_DIR).glob("*.csv"))
    paths: dict[str, Any] = {
        "eda": str(project_dir / EDA_REPORT),
        "metrics": str(project_dir / OFFLINE_METRICS),
        "plots": plots,
    }
    return {key: value for key, value in paths.items() if value and (key == "plots" or Path(value).exists())}


def reports_markdown(paths: Mapping[str, Any]) -> str:
    """The report files of a run as a markdown list (the Prefect artifact)."""
    lines = ["## Reports of this run", ""]
    if "eda" in paths:
        lines.append(f"- EDA: [{paths['eda']}]({Path(paths['eda']).as_uri()})")
    if "metrics" in paths:
        lines.append(f"- Offline metrics: [{paths['metrics']}]({Path(paths['metrics']).as_uri()})")
    if "model_card" in paths:
        lines.append(f"- Model card: [{paths['model_card']}]({Path(paths['model_card']).as_uri()})")
    if paths.get("plots"):
        lines += ["- Plot tables (`dvc plots show` renders them):", *(f"  - {p}" for p in paths["plots"])]
    return "\n".join(lines) + "\n"


def closing_summary(summary: Mapping[str, Any]) -> str:
    """One paragraph for the log: what ran, the challenger's numbers, the verdict and the model tag."""
    ran = [name for name, outcome in summary["stages"].items() if outcome == "ran"]
    hybrid: dict[str, Any] = next((row for row in summary["metrics"] if row["model"] == HYBRID), {})
    numbers = ", ".join(f"{key}={value}" for key, value in hybrid.items() if key != "model")
    verdict = "promoted" if summary["decision"]["promote"] else "kept the champion"
    return (
        f"training finished in {summary['seconds']} s; "
        f"stages run: {', '.join(ran) or 'none (all up to date)'}; "
        f"{HYBRID}: {numbers}; gate {verdict} ({'; '.join(summary['decision']['reasons'])}); "
        f"champion: {summary['model_tag']}"
    )


TABLE_KEYS = ("ndcg@10", "precision@10", "recall@10", "coverage@10", "arp@10", "auc", "cold_start_auc")


def summary_table(summary: Mapping[str, Any]) -> str:
    """The end of ``make run`` for a person: each model's metrics, the gate's verdict and reasons, the
    champion's tag, each stage's outcome and time, and where the reports are."""
    rows = list(summary["metrics"])
    keys = [key for key in TABLE_KEYS if any(key in row for row in rows)]
    table = [["model", *keys]] + [[str(row["model"]), *(_cell(row.get(key)) for key in keys)] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    decision = summary["decision"]
    verdict = "promoted the challenger" if decision["promote"] else "kept the champion"
    stages = summary.get("stage_seconds", {})
    ran = ", ".join(
        f"{name} {outcome}" + (f" {stages[name]:.0f} s" if name in stages else "")
        for name, outcome in summary["stages"].items()
    )
    out = [
        "",
        *lines,
        "",
        f"gate: {verdict} ({HYBRID} vs {decision.get('champion_tag') or 'no champion'})",
        *(f"  - {reason}" for reason in decision["reasons"]),
        f"champion: {summary['model_tag']}",
        f"stages: {ran}",
        f"time: {summary['seconds']:.0f} s",
    ]
    out += [f"{name}: {path}" for name, path in summary.get("reports", {}).items() if name != "plots"]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)
