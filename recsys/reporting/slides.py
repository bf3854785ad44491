"""``recsys report --slides``: the latest run as a self-contained HTML slide deck for stakeholders.

One slide a topic (goal, data, method, results against the baselines, who is served less well, the bias
trade-off, what listeners said, the catalogue map, ethics and privacy, next steps), every number and figure
made by the same code as the stakeholder report (:mod:`recsys.reporting.stakeholder`) from the same run's
files, so the deck and ``metrics/`` agree. Arrow keys, Page Up/Down or Space move between slides; the deck
also reads as one page (and prints one slide a sheet). Nothing is fetched: images are inline.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from recsys.io import write_text
from recsys.reporting.formatting import CHALLENGER, POPULAR, fmt, label, pct
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

_CSS = """
html { scroll-snap-type: y mandatory; }
body { margin: 0; font-family: system-ui, sans-serif; color: #1d1d1d; background: #e9ecef; }
.slide { scroll-snap-align: start; box-sizing: border-box; min-height: 100vh; max-width: 1280px;
  margin: 0 auto; padding: 3rem 4rem; background: #fff; border-bottom: 1px solid #ccc; }
.slide h2 { font-size: 2rem; margin-top: 0; color: #24476e; }
.slide p, .slide li { font-size: 1.2rem; line-height: 1.5; }
.slide img { max-width: 100%; max-height: 62vh; }
.slide table { border-collapse: collapse; font-size: 1rem; } .slide td, .slide th { border: 1px solid #ccc;
  padding: 4px 8px; text-align: right; } .slide td:first-child, .slide th:first-child { text-align: left; }
.title { display: flex; flex-direction: column; justify-content: center; }
.title h1 { font-size: 3rem; color: #24476e; } .muted { color: #666; }
.big { font-size: 2.4rem; font-weight: 700; }
.footer { font-size: .9rem; color: #666; }
@media print { .slide { page-break-after: always; min-height: auto; } }
"""
_KEYS = """
document.addEventListener("keydown", (event) => {
  const slides = [...document.querySelectorAll(".slide")];
  const here = slides.findIndex((s) => s.getBoundingClientRect().top >= -10);
  const moves = { ArrowRight: 1, ArrowDown: 1, PageDown: 1, " ": 1, ArrowLeft: -1, ArrowUp: -1, PageUp: -1 };
  const step = moves[event.key];
  if (!step) return;
  event.preventDefault();
  const next = slides[Math.min(slides.length - 1, Math.max(0, here + step))];
  if (next) next.scrollIntoView({ behavior: "instant" });
});
"""


def render_slides(inputs: ReportInputs, when: datetime | None = None) -> str:
    """The deck as one HTML string."""
    k, models, items = inputs.k, inputs.offline["models"], inputs.items
    ours, popular = models[CHALLENGER], models.get(POPULAR)
    sizes = inputs.offline.get("protocol", {}).get("sizes", {})
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%d")
    slides = [
        _slide(
            "",
            f"<h1>Music recommendations for every listener</h1><p class='big'>Results of the latest run</p>"
            f"<p class='muted'>{html.escape(stamp)} · {items} · model: LightFM hybrid</p>",
            css="title",
        ),
        _slide(
            "The goal",
            "<ul><li>Suggest " + items + " each listener will like, including ones few people know.</li>"
            '<li>Learn from what listeners do (plays, likes, skips, "not for me") and retrain on it.</li>'
            "<li>Watch for drift and popularity bias; let listeners decide between models.</li>"
            "<li>Respect privacy: anonymous ids, erasure on request, nothing personal in logs.</li></ul>",
        ),
        _slide("In plain words", "".join(f"<p>{p}</p>" for p in plain_summary(inputs))),
        _slide("The data", _data_text(sizes, items)),
        _slide(
            "How it works",
            "<ul><li>A hybrid model (LightFM): each listener and each of the "
            + items
            + " get an embedding; an item's embedding adds those of its tags, sound and genre, so new "
            + items
            + " can be suggested from their description alone.</li>"
            "<li>Tested on held-out listening of each listener (the test split), against six other "
            'approaches, from "most popular" to ALS and EASE.</li>'
            "<li>A gate promotes a new model only if it is better and no listener group or the popularity "
            "of suggestions gets worse; online experiments (A/B, interleaving) let listeners "
            "decide.</li></ul>",
        ),
        _slide("Results against the baselines", _results_html(inputs)),
        _slide(
            "Who is served less well",
            figure_html(
                figure_png(group_figure(inputs.offline.get("groups", {}), k, inputs.groups)),
                "nDCG per listener group",
            )
            if inputs.offline.get("groups")
            else "<p class='muted'>No per-group metrics in this run.</p>",
        ),
        _slide("Popularity bias: the trade-off", _body(bias_section(inputs.bias))),
        _slide(
            "Monitoring and what listeners said",
            _body(drift_section(inputs.drift)) + _body(ratings_section(inputs.ratings)),
        ),
        _slide(
            "A map of the catalogue", _body(map_section(inputs.catalogue_map, one=True, items=inputs.items))
        ),
        _slide(
            "Ethics and privacy",
            "<ul><li>Listeners of the page are anonymous (a random id kept in their browser); they can see "
            "and erase what is stored about them, and erasure also reaches the next retraining.</li>"
            "<li>Logs and audit records hold pseudonyms, never raw ids; ratings are optional.</li>"
            "<li>Popular "
            + items
            + " are favoured by the data itself: we measure it, re-rank against it, and "
            "refuse a model that makes it worse.</li>"
            "<li>Niche listeners get lower quality (slide 7): reported openly, watched per group by the "
            "gate.</li><li>Offline numbers come from past listening: they favour the model that chose "
            "what was shown; online experiments check them with listeners.</li></ul>",
        ),
        _slide(
            "Next steps",
            "<ul><li>Run the usability protocol (docs/usability.md) with 5-8 listeners and act on it.</li>"
            "<li>Interleave the next challenger on a share of traffic; promote on the listeners' "
            "verdict.</li><li>Raise quality for niche listeners (the largest gap) without raising "
            "popularity bias.</li><li>Songs and playlists as listeners: the same pipeline, its own "
            "champion.</li></ul>",
        ),
    ]
    best = "" if popular is None else f" vs. most popular {fmt(popular[f'ndcg@{k}'])}"
    footer = f"<p class='footer'>Hybrid nDCG@{k} {fmt(ours[f'ndcg@{k}'])}{best} (metrics/offline.json).</p>"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Music recommender: results</title><style>{_CSS}</style></head><body>"
        + "\n".join(slides)
        + footer
        + f"<script>{_KEYS}</script></body></html>\n"
    )


def write_slides(inputs: ReportInputs, out: Path) -> Path:
    """Render and write the deck atomically; returns ``out``."""
    write_text(out, render_slides(inputs))
    return out


def _body(section: str) -> str:
    """A report section without its ``<h2>`` heading: the slide has its own title."""
    return section.split("</h2>", 1)[-1]


def _slide(title: str, body: str, css: str = "") -> str:
    heading = f"<h2>{html.escape(title)}</h2>" if title else ""
    return f"<section class='slide {css}'>{heading}{body}</section>"


def _data_text(sizes: dict[str, object], items: str) -> str:
    if not sizes:
        return "<p class='muted'>The run's sizes are not in metrics/offline.json.</p>"
    rows = "".join(
        f"<li>{html.escape(str(key).replace('_', ' '))}: {fmt(value)}</li>" for key, value in sizes.items()
    )
    return f"<p>Listening histories of real listeners and descriptions of the {items}:</p><ul>{rows}</ul>"


def _results_html(inputs: ReportInputs) -> str:
    k, models = inputs.k, inputs.offline["models"]
    ours = models[CHALLENGER]
    lines = [
        f"<p>{label(CHALLENGER)}: nDCG@{k} {fmt(ours[f'ndcg@{k}'])}, "
        f"hit rate@{k} {pct(ours[f'hit_rate@{k}'])}.</p>"
    ]
    chosen = (inputs.bias or {}).get("chosen") or {}
    if inputs.served_strength and f"ndcg@{k}" in chosen:
        lines.append(
            f"<p>These are the models as trained. Listeners get the hybrid re-ranked against popularity "
            f"(strength {inputs.served_strength:g}): nDCG@{k} {fmt(chosen[f'ndcg@{k}'])}, a small cost "
            "for more little-known music (next slides).</p>"
        )
    return "".join(lines) + figure_html(
        figure_png(comparison_figure(models, k)), "Model comparison on the test split"
    )
