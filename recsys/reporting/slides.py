"""``recsys report --slides``: the latest run as a self-contained HTML slide deck for stakeholders.

One slide a topic (goal, data, method, results against the baselines, who is served less well, the bias
trade-off, what listeners said, the catalogue map, ethics and privacy, next steps), every number and figure
made by the same code as the stakeholder report (:mod:`recsys.reporting.stakeholder`) from the same run's
files, so the deck and ``metrics/`` agree. Arrow keys, Page Up/Down or Space move between slides; the deck
also reads as one page (and prints one slide a sheet). Nothing is fetched: images are inline.
"""

from __future__ import annotations

import html
import string
from datetime import UTC, datetime
from pathlib import Path

from recsys.io import write_text
from recsys.reporting.formatting import fmt, label, pct
from recsys.reporting.html_parts import figure_html, figure_png
from recsys.reporting.ratings import ratings_section
from recsys.reporting.stakeholder import (
    ReportInputs,
    bias_section,
    comparison_figure,
    drift_section,
    group_figure,
    map_section,
    plain_summary,
)
from recsys.specs import MOST_POPULAR

TEMPLATE = Path(__file__).parent / "templates" / "slides.html"
"""The deck's page: every slide's fixed words, the style and the keys; ``${name}`` marks what a run fills."""


def render_slides(inputs: ReportInputs, when: datetime | None = None) -> str:
    """The deck as one HTML string: :data:`TEMPLATE` filled with the run's numbers, figures and sections."""
    k, models, items = inputs.k, inputs.offline["models"], inputs.items
    ours, popular = models[inputs.served_model], models.get(MOST_POPULAR)
    sizes = inputs.offline.get("protocol", {}).get("sizes", {})
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%d")
    groups = (
        figure_html(
            figure_png(group_figure(inputs.offline.get("groups", {}), k, inputs.groups)),
            "nDCG per listener group",
        )
        if inputs.offline.get("groups")
        else "<p class='muted'>No per-group metrics in this run.</p>"
    )
    best = "" if popular is None else f" vs. most popular {fmt(popular[f'ndcg@{k}'])}"
    served = html.escape(label(inputs.served_model))
    footer = f"<p class='footer'>{served} nDCG@{k} {fmt(ours[f'ndcg@{k}'])}{best} (metrics/offline.json).</p>"
    return string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        stamp=html.escape(stamp),
        items=html.escape(items),
        model=html.escape(label(inputs.served_model)),
        plain_words="".join(f"<p>{p}</p>" for p in plain_summary(inputs)),
        data=_data_text(sizes, items),
        results=_results_html(inputs),
        groups=groups,
        bias=_body(bias_section(inputs.bias)),
        monitoring=_body(drift_section(inputs.drift)) + _body(ratings_section(inputs.ratings)),
        catalogue_map=_body(map_section(inputs.catalogue_map, one=True, items=inputs.items)),
        footer=footer,
    )


def write_slides(inputs: ReportInputs, out: Path) -> Path:
    """Render and write the deck atomically; returns ``out``."""
    write_text(out, render_slides(inputs))
    return out


def _body(section: str) -> str:
    """A report section without its ``<h2>`` heading: the slide has its own title."""
    return section.split("</h2>", 1)[-1]


def _data_text(sizes: dict[str, object], items: str) -> str:
    if not sizes:
        return "<p class='muted'>The run's sizes are not in metrics/offline.json.</p>"
    rows = "".join(
        f"<li>{html.escape(str(key).replace('_', ' '))}: {fmt(value)}</li>" for key, value in sizes.items()
    )
    return f"<p>Listening histories of real listeners and descriptions of the {items}:</p><ul>{rows}</ul>"


def _results_html(inputs: ReportInputs) -> str:
    k, models = inputs.k, inputs.offline["models"]
    ours = models[inputs.served_model]
    served = html.escape(label(inputs.served_model))
    lines = [
        f"<p>{served}: nDCG@{k} {fmt(ours[f'ndcg@{k}'])}, hit rate@{k} {pct(ours[f'hit_rate@{k}'])}.</p>"
    ]
    chosen = (inputs.bias or {}).get("chosen") or {}
    mitigation = (inputs.bias or {}).get("mitigation") or {}
    calibrated = (mitigation.get("served_metrics") or {}).get("metrics", {})
    if inputs.served_strength and f"ndcg@{k}" in chosen:
        lines.append(
            f"<p>These are the models as trained. Listeners get the {served} re-ranked against popularity "
            f"(strength {inputs.served_strength:g}): nDCG@{k} {fmt(chosen[f'ndcg@{k}'])}, a small cost "
            "for more little-known music (next slides).</p>"
        )
    elif inputs.served_bias and mitigation.get("served") == "calibration" and f"ndcg@{k}" in calibrated:
        lines.append(
            f"<p>These are the models as trained. Listeners get the {served}'s lists calibrated to each "
            f"listener's own genre mix (strength {mitigation['strength']:g}): nDCG@{k} "
            f"{fmt(calibrated[f'ndcg@{k}'])}, and niche listeners served better than without it.</p>"
        )
    return "".join(lines) + figure_html(
        figure_png(comparison_figure(models, k, inputs.served_model)), "Model comparison on the test split"
    )
