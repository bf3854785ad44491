"""The stakeholder report: ONE self-contained HTML page about the latest run, for non-technical readers too.

``recsys report`` reads the run's outputs and writes ``reports/stakeholder.html`` with every image
embedded as base64, so the file can be mailed or attached as it is. Required: ``metrics/offline.json``.
Optional, each adding a section or saying it is not available: ``reports/eda/*.png`` (EDA figures),
``metrics/bias.json`` (the popularity re-ranking trade-off), ``reports/monitoring/drift.json`` (drift).

The page holds metrics, settings and figures only: no lyrics, no listener ids.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from recsys.config import Params, item_kind, load_params
from recsys.io import read_json, write_text
from recsys.offline.bias import measured_model, served_strength
from recsys.paths import EDA_DIR, METRICS_DIR, MONITORING_DIR, PARAMS_FILE
from recsys.reporting.formatting import fmt, label, lead_cell, lead_header, load_offline, ordered_models, pct
from recsys.reporting.html_parts import figure_html, figure_png, html_table
from recsys.reporting.ratings import ratings_section
from recsys.specs import HYBRID, MOST_POPULAR, challenger_model

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.summary { background: #f3f6fa; border-left: 4px solid #3b6ea5; padding: 0.5em 1.2em; }
.muted { color: #666; }
figure { margin: 1em 0; } img { max-width: 100%; }
"""
ONE_MAP_SENTENCE = (
    "Each dot is one of the {items}, placed by what the model learned: {items} it ranks alike sit together. "
    "Yellow dots have many listeners, dark ones few. Look for the dark areas: the long tail forms "
    "neighbourhoods of its own, which is how the model can recommend little-known {items} next to each other."
)
"""What a stakeholder should see in the one-panel map (the deck's)."""
SUMMARY_METRICS = ("precision", "recall", "ndcg", "hit_rate", "coverage", "arp", "long_tail_share")


@dataclass(frozen=True)
class ReportInputs:
    """What the report is built from; optional parts are empty or ``None`` when their file is absent."""

    offline: Mapping[str, Any]
    k: int = 10
    groups: Sequence[str] = ("niche", "medium", "mainstream")
    eda_images: Mapping[str, bytes] = field(default_factory=dict)
    bias: Mapping[str, Any] | None = None
    drift: Mapping[str, Any] | None = None
    # What the catalogue holds, in plain words: "artists" or "songs".
    items: str = "artists"
    # Listeners' 1-5 ratings from the page (timestamp, rating, model_version); None: no store to read.
    ratings: pd.DataFrame | None = None
    # The catalogue map (:mod:`recsys.reporting.catalogue_map`) as a PNG; None: no trained hybrid.
    catalogue_map: bytes | None = None
    # The popularity re-ranking strength the champion is served with (bias.serve; 0: unmitigated).
    served_strength: float = 0.0
    # The model known listeners get (gate.challenger when the run trained it, else the hybrid).
    served_model: str = HYBRID

    @property
    def served_bias(self) -> Mapping[str, Any] | None:
        """``bias`` when it measured the served model (its mitigation is the one served), else None."""
        return self.bias if self.bias and measured_model(self.bias) == self.served_model else None


def load_report_inputs(
    params_path: Path = PARAMS_FILE,
    metrics_dir: Path = METRICS_DIR,
    eda_dir: Path = EDA_DIR,
    monitoring_dir: Path = MONITORING_DIR,
    ratings: pd.DataFrame | None = None,
) -> ReportInputs:
    """Read the report's inputs from a workspace; only ``metrics/offline.json`` is required. ``ratings``
    (:meth:`recsys.feedback.store.FeedbackStore.ratings_frame`) come from the caller, who knows the store."""
    offline = load_offline(metrics_dir)
    params = load_params(params_path) if params_path.exists() else None
    images = {path.stem: path.read_bytes() for path in sorted(eda_dir.glob("*.png"))}
    bias = read_json(metrics_dir / "bias.json")
    serve = params.bias.serve if params else "chosen"
    inputs = ReportInputs(
        offline=offline,
        k=params.evaluate.primary_k if params else 10,
        groups=params.evaluate.groups if params else ("niche", "medium", "mainstream"),
        eda_images=images,
        bias=bias,
        served_model=_served_model(params, offline),
        drift=read_json(monitoring_dir / "drift.json"),
        items="songs" if params is not None and item_kind(params.model_dump()) == "track" else "artists",
        ratings=ratings,
    )
    served = inputs.served_bias
    return replace(inputs, served_strength=served_strength(served, serve) if served else 0.0)


def _served_model(params: Params | None, offline: Mapping[str, Any]) -> str:
    """The run's challenger (:func:`recsys.specs.challenger_model`) when the report measured it, else the
    hybrid."""
    name = challenger_model(params) if params is not None else HYBRID
    return name if name in offline.get("models", {}) else HYBRID


def comparison_figure(models: Mapping[str, Mapping[str, float]], k: int, served: str = HYBRID) -> Figure:
    """Bars of nDCG@k and hit rate@k per model, the ``served`` model highlighted."""
    names = ordered_models(models)
    fig = Figure(figsize=(8, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), (f"ndcg@{k}", f"hit_rate@{k}"), strict=True):
        values = [float(models[name].get(metric, 0.0)) for name in names]
        colours = ["#3b6ea5" if name == served else "#b0b7c0" for name in names]
        ax.barh([label(name) for name in names], values, color=colours)
        ax.invert_yaxis()
        ax.set_title(metric)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:.3f}", va="center", fontsize=8)
        ax.set_xlim(0, max([*values, 1e-9]) * 1.25)
    return fig


def group_figure(
    groups: Mapping[str, Mapping[str, Mapping[str, float]]], k: int, order: Sequence[str]
) -> Figure:
    """Grouped bars: nDCG@k of each model for each listener group."""
    names = ordered_models(groups)
    present = [g for g in order if any(g in groups[name] for name in names)]
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        values = [float(groups[name].get(g, {}).get(f"ndcg@{k}", 0.0)) for g in present]
        ax.bar([x + i * width for x in range(len(present))], values, width, label=label(name))
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(present))], present)
    ax.set_ylabel(f"ndcg@{k}")
    ax.set_title("Quality for each listener group")
    ax.legend(fontsize=8)
    return fig


def tradeoff_figure(bias: Mapping[str, Any]) -> Figure:
    """nDCG@k against long-tail share@k over the re-ranking strengths, the chosen one marked."""
    k = bias.get("k", 10)
    points = bias.get("strengths", [])
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    xs = [p[f"long_tail_share@{k}"] for p in points]
    ys = [p[f"ndcg@{k}"] for p in points]
    ax.plot(xs, ys, marker="o", color="#3b6ea5")
    chosen = bias["chosen"]
    last_x = -1.0
    for p, x, y in zip(points, xs, ys, strict=True):
        # Neighbouring small strengths sit on top of each other; label only those apart or chosen.
        is_chosen = p["strength"] == chosen["strength"]
        near_chosen = abs(x - chosen[f"long_tail_share@{k}"]) < 0.03
        if is_chosen or (x - last_x > 0.03 and not near_chosen):
            ax.annotate(f"{p['strength']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            last_x = x
    ax.scatter(
        [chosen[f"long_tail_share@{k}"]], [chosen[f"ndcg@{k}"]], s=120, facecolors="none", edgecolors="red"
    )
    ax.set_xlabel(f"long-tail share@{k} (less popular artists)")
    ax.set_ylabel(f"ndcg@{k} (accuracy)")
    ax.set_title("Accuracy vs. variety: popularity re-ranking strengths")
    return fig


def plain_summary(inputs: ReportInputs) -> list[str]:
    """Short paragraphs for non-technical readers: what, how good, who is served less well, what we do."""
    k, models, items = inputs.k, inputs.offline["models"], inputs.items
    ours, popular = models[inputs.served_model], models.get(MOST_POPULAR)
    paragraphs = [
        f"<b>What it does.</b> The system suggests music {items} to each listener, from what they and "
        f"similar listeners play and from descriptions of the {items} (tags, sound, genre). It can also "
        f"suggest {items} nobody has played yet, from those descriptions alone.",
    ]
    good = (
        f"<b>How good it is.</b> When we hide some of each listener's {items} and ask for {k} suggestions, "
        f"on average {ours[f'precision@{k}'] * k:.1f} of the {k} are {items} the listener really plays, and "
        f"{pct(ours[f'hit_rate@{k}'])} of listeners get at least one."
    )
    if popular:
        good += (
            f" Just recommending what is popular gets {popular[f'precision@{k}'] * k:.1f} of {k} and "
            f"{pct(popular[f'hit_rate@{k}'])}"
        )
        if popular[f"ndcg@{k}"] > 0:
            times = ours[f"ndcg@{k}"] / popular[f"ndcg@{k}"]
            good += f"; our ranking quality (nDCG) is {times:.1f} times as high"
        good += "."
    paragraphs.append(good)
    served_groups = inputs.offline.get("groups", {}).get(inputs.served_model, {})
    if (
        "niche" in served_groups
        and "mainstream" in served_groups
        and served_groups["mainstream"][f"ndcg@{k}"] > 0
    ):
        niche, main = served_groups["niche"][f"ndcg@{k}"], served_groups["mainstream"][f"ndcg@{k}"]
        paragraphs.append(
            "<b>Who it serves less well.</b> Listeners with niche taste: their ranking quality is "
            f"{niche / main:.0%} of that of listeners with mainstream taste."
            + _niche_lift(inputs.bias, items)
        )
    paragraphs.append("<b>What we do about it.</b> " + _mitigation_sentence(inputs.served_bias, items))
    return paragraphs


def _niche_lift(bias: Mapping[str, Any] | None, items: str = "artists") -> str:
    unmitigated = [p for p in (bias or {}).get("strengths", []) if p.get("strength") == 0]
    lift = unmitigated[0].get("popularity_lift/niche") if unmitigated else None
    if lift is None:
        return ""
    return f" Their suggestions are {lift:.1f} times as popular as the {items} they usually play."


def _mitigation_sentence(bias: Mapping[str, Any] | None, items: str = "artists") -> str:
    base = (
        "A new model replaces the current one only if no listener group loses quality beyond a small "
        "tolerance and suggestions do not get more popular; monitoring watches how popular the served "
        "suggestions are."
    )
    if not bias:
        return base + f" The effect of re-ranking towards less popular {items} is not measured yet."
    chosen, served = bias["chosen"], (bias.get("mitigation") or {}).get("served")
    if served == "calibration":
        return base + (
            f" Each listener's suggestions keep the genre mix of their own listening (calibrated re-ranking, "
            f"strength {bias['mitigation']['strength']:g}): chosen because it serves listeners with niche "
            "taste better for a small cost in accuracy."
        )
    if served == "none":
        return base + (
            f" We measured re-ranking towards less popular {items} and towards each listener's genre mix: "
            "neither served listeners with niche taste better within the accuracy we allow, so suggestions "
            "are shown as the model ranks them."
        )
    if chosen["strength"] == 0:
        return base + (
            f" We measured re-ranking towards less popular {items} (chart below): every strength cost more "
            f"accuracy than the {pct(bias.get('max_ndcg_cost', 0.0))} we allow, so it is not switched on yet."
        )
    return base + (
        f" Suggestions are re-ranked towards less popular {items} (strength {chosen['strength']:g}), "
        f"costing {pct(chosen.get('ndcg_cost', 0.0))} of accuracy."
    )


def models_section(inputs: ReportInputs) -> str:
    k, models = inputs.k, inputs.offline["models"]
    lead_column = lead_header(inputs.offline)
    header = ["model", *(f"{m}@{k}" for m in SUMMARY_METRICS), "AUC", *([lead_column] if lead_column else [])]
    rows = [
        [
            label(n),
            *(fmt(models[n].get(f"{m}@{k}", "-")) for m in SUMMARY_METRICS),
            fmt(models[n].get("auc", "-")),
            *([lead_cell(inputs.offline, n)] if lead_column else []),
        ]
        for n in ordered_models(models)
    ]
    chart = figure_html(
        figure_png(comparison_figure(models, k, inputs.served_model)), "Model comparison on the test split"
    )
    return "<h2>Models compared</h2>" + html_table(header, rows) + chart


def ranker_importance_section(inputs: ReportInputs, top: int = 8) -> str:
    """What the two-stage ranker leans on: its features' share of the gain, and its candidates' recall."""
    rankers = inputs.offline.get("rankers") or {}
    if not rankers:
        return ""
    parts = []
    for name, info in rankers.items():
        ordered = sorted(info["importance"].items(), key=lambda item: -item[1])[:top]
        gains = [[html.escape(feature), pct(share)] for feature, share in ordered]
        recall = [[label(g) if g != "union" else "union", fmt(v)] for g, v in info.get("recall", {}).items()]
        parts.append(
            f"<h2>{html.escape(label(name))}: what it learned</h2>"
            "<p>Features by share of the ranker's gain, and the share of a listener's test items among the "
            f"candidates of each generator (top {info.get('candidates')}) and of their union.</p>"
            + html_table(["feature", "share of gain"], gains)
            + html_table(["generator", f"recall@{info.get('candidates')}"], recall)
        )
    return "".join(parts)


def groups_section(inputs: ReportInputs) -> str:
    k, groups = inputs.k, inputs.offline.get("groups", {})
    if not groups:
        return "<h2>Listener groups</h2><p class='muted'>No per-group metrics in this run.</p>"
    present = [g for g in inputs.groups if any(g in groups[n] for n in groups)]
    header = ["model", *(f"ndcg@{k} {g}" for g in present), *(f"arp@{k} {g}" for g in present)]
    rows = [
        [label(n)]
        + [fmt(groups[n].get(g, {}).get(f"ndcg@{k}", "-")) for g in present]
        + [fmt(groups[n].get(g, {}).get(f"arp@{k}", "-")) for g in present]
        for n in ordered_models(groups)
    ]
    chart = figure_html(figure_png(group_figure(groups, k, inputs.groups)), "nDCG per listener group")
    return "<h2>Listener groups (niche to mainstream taste)</h2>" + html_table(header, rows) + chart


def bias_section(bias: Mapping[str, Any] | None) -> str:
    if not bias:
        return (
            "<h2>Popularity bias trade-off</h2><p class='muted'>Not measured yet (no metrics/bias.json).</p>"
        )
    chosen, k = bias["chosen"], bias.get("k", 10)
    text = (
        f"<p>Chosen strength {chosen['strength']:g}: nDCG@{k} {fmt(chosen[f'ndcg@{k}'])}, "
        f"cost {pct(chosen.get('ndcg_cost', 0.0))}. Rule: {html.escape(str(bias.get('rule', '-')))}.</p>"
    )
    chart = figure_html(
        figure_png(tradeoff_figure(bias)), "Accuracy vs. long-tail share over re-ranking strengths"
    )
    return "<h2>Popularity bias trade-off</h2>" + text + chart


def drift_section(drift: Mapping[str, Any] | None) -> str:
    title = "<h2>Monitoring: data drift</h2>"
    if not drift:
        return title + "<p class='muted'>Monitoring has not run yet (no reports/monitoring/drift.json).</p>"
    decision = drift.get("decision", {})
    summary = drift.get("drift")
    status = "ALERT" if decision.get("triggered") else "OK"
    parts = [
        f"<p>Status: <b>{status}</b>; {fmt(drift.get('n_events', 0))} feedback events in the window.</p>"
    ]
    if summary:
        parts.append(
            f"<p>{summary['n_drifted']} of {summary['n_columns']} monitored columns drifted "
            f"(share {fmt(summary['share'])}).</p>"
        )
    else:
        parts.append("<p class='muted'>Not enough events in the window to test drift.</p>")
    reasons = decision.get("reasons") or []
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{html.escape(str(r))}</li>" for r in reasons) + "</ul>")
    return title + "".join(parts)


MAP_CAPTION = (
    "The catalogue in two dimensions: the model's learned embeddings and the audio features, by genre "
    "and by popularity"
)


def map_section(png: bytes | None, one: bool = False, items: str = "artists") -> str:
    """The catalogue map, or a note that it needs a trained model; ``one``: the deck's single panel and the
    sentence that says what to see in it."""
    title = "<h2>A map of the catalogue</h2>"
    if png is None:
        return title + "<p class='muted'>No trained hybrid found (models/lightfm_hybrid.npz): no map.</p>"
    if one:
        return (
            title
            + f"<p>{html.escape(ONE_MAP_SENTENCE.format(items=items))}</p>"
            + figure_html(png, MAP_CAPTION)
        )
    text = (
        "<p>Each dot is an item. Top: what the model learned (items it ranks alike sit together); bottom: "
        "how the items sound. Colours show genre where Spotify knows it, or how many listeners an item "
        "has: the long tail (dark) forms its own neighbourhoods in what the model learned.</p>"
    )
    return title + text + figure_html(png, MAP_CAPTION)


def eda_section(images: Mapping[str, bytes]) -> str:
    title = "<h2>The data</h2>"
    if not images:
        return title + "<p class='muted'>No EDA figures found (run <code>recsys eda</code>).</p>"
    return title + "".join(figure_html(png, name.replace("_", " ")) for name, png in images.items())


def render_report(inputs: ReportInputs) -> str:
    """The whole report as one HTML string; every image is inline, nothing is fetched."""
    summary = "".join(f"<p>{p}</p>" for p in plain_summary(inputs))
    body = [
        "<h1>Music recommender: results of the latest run</h1>",
        f"<div class='summary'><h2>In plain words</h2>{summary}</div>",
        models_section(inputs),
        ranker_importance_section(inputs),
        groups_section(inputs),
        bias_section(inputs.bias),
        drift_section(inputs.drift),
        ratings_section(inputs.ratings),
        map_section(inputs.catalogue_map),
        eda_section(inputs.eda_images),
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Music recommender report</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def write_report(inputs: ReportInputs, out: Path) -> Path:
    """Render and write the report atomically; returns ``out``."""
    write_text(out, render_report(inputs))
    return out
