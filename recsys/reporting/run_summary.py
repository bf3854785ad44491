"""What a training run did, for people: where its reports are and one closing paragraph for the log."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.offline.train import HYBRID
from recsys.paths import EDA_REPORT, OFFLINE_METRICS, PLOTS_DIR


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
