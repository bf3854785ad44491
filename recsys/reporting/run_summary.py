"""What a training run did, for people: where its reports are and one closing paragraph for the log."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.paths import EDA_REPORT, OFFLINE_METRICS, PLOTS_DIR
from recsys.specs import DEFAULT_DATASET, HYBRID, RANKER


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
    model = _challenger(summary)
    hybrid: dict[str, Any] = next((row for row in summary["metrics"] if row["model"] == model), {})
    numbers = ", ".join(f"{key}={value}" for key, value in hybrid.items() if key != "model")
    verdict = "promoted" if summary["decision"]["promote"] else "kept the champion"
    return (
        f"training finished in {summary['seconds']} s; "
        f"stages run: {', '.join(ran) or 'none (all up to date)'}; "
        f"{model}: {numbers}; gate {verdict} ({'; '.join(summary['decision']['reasons'])}); "
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
    stages = summary.get("stage_seconds", {})
    ran = ", ".join(
        f"{name} {outcome}" + (f" {stages[name]:.0f} s" if name in stages else "")
        for name, outcome in summary["stages"].items()
    )
    out = [
        "",
        *lines,
        "",
        *verdict_lines(summary),
        f"stages: {ran}",
        f"time: {summary['seconds']:.0f} s",
    ]
    out += [f"{name}: {path}" for name, path in summary.get("reports", {}).items() if name != "plots"]
    return "\n".join(out)


def verdict_lines(summary: Mapping[str, Any]) -> list[str]:
    """The gate's verdict and reasons, every tag this run packaged and what to do with it, and what next.

    A candidate for an online experiment is named as such (the champion is unchanged); the served numbers
    are told apart from the table's unmitigated row when the champion is re-ranked for popularity; a model
    of the run that beat the challenger is pointed out, since the gate compares only the challenger
    (``gate.challenger``) and the champion.
    """
    decision, champion, candidate = summary["decision"], summary["model_tag"], summary.get("candidate")
    against = decision.get("champion_tag") or "no champion"
    if candidate:
        verdict = "packaged the challenger as a candidate for an online experiment; the champion is unchanged"
    elif decision["promote"]:
        verdict = "promoted the challenger"
    else:
        verdict = "kept the champion"
    lines = [
        f"gate: {verdict} ({_challenger(summary)} vs {against})",
        *(f"  - {reason}" for reason in decision["reasons"]),
    ]
    lines += _baseline_note(summary) + _below_chance_note(summary)
    served = decision.get("served") or {}
    numbers = {key: value for key, value in served.items() if key != "strength" and isinstance(value, float)}
    calibrated = served.get("calibration") or {}
    if decision["promote"] and not candidate and calibrated and numbers:
        metric, value = next(iter(numbers.items()))
        lines.append(
            f"served: {_challenger(summary)} calibrated to each listener's genre mix "
            f"(strength {calibrated['strength']:g}) "
            f"({metric} {value:.4f}; the table's row is the model unmitigated: metrics/bias.json mitigation)"
        )
    elif decision["promote"] and not candidate and served.get("strength") and numbers:
        metric, value = next(iter(numbers.items()))
        lines.append(
            f"served: {_challenger(summary)} re-ranked against popularity at strength {served['strength']:g} "
            f"({metric} {value:.4f}; the table's row is the model unmitigated: bias.serve, metrics/bias.json)"
        )
    packaged = (
        [f"{candidate} (candidate)"]
        if candidate
        else [f"{champion} (champion)"]
        if decision["promote"]
        else []
    )
    lines.append(f"packaged: {', '.join(packaged) or 'nothing (the champion stays)'}")
    lines.append(f"champion: {champion or 'none yet'}")
    dataset = summary.get("dataset")
    serve = "make serve" if dataset in (None, DEFAULT_DATASET) else f"RECSYS_DATASET={dataset} make serve"
    if candidate:
        lines += [
            f"next: {serve}, then recsys experiment start --mode interleave --challenger {candidate}",
            "      send traffic, then recsys experiment report; recsys experiment decide promotes or stops",
            "      (README, 'Online experiments')",
        ]
    elif champion:
        lines.append(f"next: {serve} (serves {champion} at http://127.0.0.1:3000)")
        if not decision["promote"] and against != "no champion":
            lines.append("      to let listeners judge this challenger anyway: recsys run --candidate")
    return lines


def _challenger(summary: Mapping[str, Any]) -> str:
    """The run's challenger model (``gate.challenger``; the hybrid in summaries from before the setting)."""
    return str(summary["decision"].get("model") or HYBRID)


def _baseline_note(summary: Mapping[str, Any]) -> list[str]:
    rows = {str(row["model"]): row for row in summary["metrics"]}
    metric = next(iter(summary["decision"].get("comparison") or {}), "ndcg@10")
    challenger = _challenger(summary)
    ours = rows.get(challenger, {}).get(metric)
    if ours is None:
        return []
    better = sorted(
        (
            (row[metric], name)
            for name, row in rows.items()
            if name != challenger and row.get(metric, 0) > ours
        ),
        reverse=True,
    )
    if not better:
        return []
    best, name = better[0]
    offer = f" (-S gate.challenger={name} offers it)" if name == RANKER else ""
    return [
        f"  note: {name} scored higher than {challenger} on {metric} in this run ({best:.4f} vs {ours:.4f});"
        f" the gate compares only the challenger with the champion{offer}"
    ]


def _below_chance_note(summary: Mapping[str, Any]) -> list[str]:
    below = [f"{row['model']} {row['auc']:.2f}" for row in summary["metrics"] if row.get("auc", 0.5) < 0.5]
    if not below:
        return []
    return [
        f"  note: AUC below 0.5 ({', '.join(below)}): these models rank a held-out item below a random one;"
        " their scores follow popularity and this split holds out items less popular than the catalogue's"
        " average (the songs' cold start holds out the newest tracks)"
    ]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)
