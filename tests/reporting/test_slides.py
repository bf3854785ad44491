"""The slide deck and the catalogue map: self-contained, every slide there, numbers equal to the run's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys.columns import Col
from recsys.config import load_params
from recsys.reporting.catalogue_map import UNKNOWN, catalogue_map, load_map, map_figure, one_map_figure
from recsys.reporting.formatting import fmt
from recsys.reporting.html_parts import figure_png
from recsys.reporting.slides import render_slides
from recsys.reporting.stakeholder import ReportInputs
from recsys.specs import HYBRID, challenger_model
from recsys.stages import training_inputs
from tests.helpers import build_project
from tests.reporting.test_model_card import tiny_bias, tiny_offline

TITLES = [
    "The goal",
    "In plain words",
    "The data",
    "How it works",
    "Results against the baselines",
    "Who is served less well",
    "Popularity bias: the trade-off",
    "Monitoring and what listeners said",
    "A map of the catalogue",
    "Ethics and privacy",
    "Next steps",
]


def _items(n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` items in two genres (a third unknown), audio for two thirds; embeddings that separate genres."""
    rng = np.random.default_rng(0)
    genre = np.array(["rock", "pop", None], dtype=object)[np.arange(n) % 3]
    items = pd.DataFrame({Col.ITEM: [f"i{i}" for i in range(n)], Col.GENRE: genre})
    for column in ("danceability", "energy", "valence"):
        items[column] = np.where(np.arange(n) % 3 == 2, np.nan, rng.random(n))
    centre = np.where(genre == "rock", 5.0, np.where(genre == "pop", -5.0, 0.0))
    embeddings = rng.normal(size=(n, 8)) + centre[:, None]
    return items, embeddings


def test_the_map_places_every_item_and_keeps_the_learned_genre_groups_apart() -> None:
    items, embeddings = _items(300)
    found = catalogue_map(embeddings, items, np.arange(300, dtype=float), seed=1)
    points = found.points
    assert found.n_items == 300 and found.n_audio == 200
    assert points[["emb_pca_x", "emb_pca_y", "emb_tsne_x", "emb_tsne_y"]].notna().all().all()
    assert points["audio_pca_x"].notna().sum() == 200 and (points["genre"] == UNKNOWN).sum() == 100
    # The genres' centres lie far apart on the first axis, as in the embeddings.
    centres = points.groupby("genre")["emb_pca_x"].mean()
    assert abs(centres["rock"] - centres["pop"]) > 5
    assert 0 < found.explained["embeddings"] <= 1 and 0 < found.explained["audio"] <= 1
    assert figure_png(map_figure(found)).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="299 embeddings, 300 items"):
        catalogue_map(embeddings[:-1], items, np.ones(300))


def test_the_map_of_a_trained_hybrid(tmp_path: Path) -> None:
    project = build_project(tmp_path / "run")
    split, features = training_inputs(project.features, project.split)
    found = load_map(project.models / "lightfm_hybrid.npz", split, features, project.prepared)
    assert found.n_items == len(pd.read_parquet(project.prepared / "items.parquet"))
    assert found.points["emb_tsne_x"].notna().sum() == found.n_items  # a small catalogue: every item


def test_the_deck_has_every_slide_and_the_runs_numbers() -> None:
    offline, bias = tiny_offline(), tiny_bias()
    items, embeddings = _items(60)
    png = figure_png(map_figure(catalogue_map(embeddings, items, np.ones(60))))
    page = render_slides(ReportInputs(offline=offline, bias=bias, catalogue_map=png))
    titles = re.findall(r"<section class='slide[^']*'><h2>([^<]+)</h2>", page)
    assert [t.replace("&#x27;", "'") for t in titles] == TITLES
    assert page.count("<section class='slide") == len(TITLES) + 1  # and the title slide
    hybrid, popular = offline["models"]["lightfm_hybrid"], offline["models"]["most_popular"]
    assert f"nDCG@10 {fmt(hybrid['ndcg@10'])}" in page and fmt(popular["ndcg@10"]) in page
    assert f"strength {bias['chosen']['strength']:g}" in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page  # self-contained
    assert page.count('src="data:image/png;base64,') == 4  # results, groups, trade-off, map


def test_the_decks_map_is_one_large_plot_with_a_sentence_and_the_served_number_is_told_apart() -> None:
    offline, bias = tiny_offline(), tiny_bias()
    items, embeddings = _items(60)
    figure = one_map_figure(catalogue_map(embeddings, items, np.arange(60)), "songs")
    plots = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(plots) == 1 and figure.get_size_inches()[0] >= 10  # one plot, slide-wide
    colour_bar = next(ax for ax in figure.axes if ax.get_label() == "<colorbar>")
    assert [t.get_text() for t in colour_bar.get_yticklabels()] == ["few listeners", "many listeners"]
    inputs = ReportInputs(offline=offline, bias=bias, catalogue_map=figure_png(figure), items="songs")
    page = render_slides(inputs)
    assert "Each dot is one of the songs" in page and "Look for the dark areas" in page
    assert "re-ranked against popularity" not in page  # nothing is re-ranked: nothing to tell apart
    served = render_slides(
        ReportInputs(offline=offline, bias=bias, served_strength=bias["chosen"]["strength"])
    )
    chosen = bias["chosen"]
    assert (
        f"Listeners get the LightFM hybrid re-ranked against popularity (strength {chosen['strength']:g}): "
        f"nDCG@10 {fmt(chosen['ndcg@10'])}"
    ) in served
    # A ranker served calibrated: the deck names it, and its own numbers, not the hybrid's.
    offline["models"]["ranker"] = offline["models"]["lightfm_hybrid"] | {"ndcg@10": 0.4321}
    calibrated = bias | {
        "model": "ranker",
        "mitigation": {
            "served": "calibration",
            "strength": 0.1,
            "served_metrics": {"metrics": {"ndcg@10": 0.4}},
        },
    }
    deck = render_slides(ReportInputs(offline=offline, bias=calibrated, served_model="ranker"))
    assert "model: two-stage ranker (LightGBM)" in deck
    # A report of the hybrid's lists says nothing of how the ranker is served.
    other = render_slides(
        ReportInputs(offline=offline, bias=calibrated | {"model": HYBRID}, served_model="ranker")
    )
    assert "lists calibrated" not in other
    assert "two-stage ranker (LightGBM): nDCG@10 0.4321" in deck
    assert "Listeners get the two-stage ranker (LightGBM)&#x27;s lists calibrated" in deck or (
        "Listeners get the two-stage ranker (LightGBM)'s lists calibrated" in deck
    )


def test_recsys_report_slides_writes_the_deck_from_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys.cli.main import app

    project = build_project(tmp_path / "run")
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "models").symlink_to(project.models)
    for name in ("features", "split", "prepared"):
        (root / "data" / name).symlink_to(getattr(project, name))
    (root / "metrics").mkdir()
    (root / "metrics" / "offline.json").write_text(json.dumps(tiny_offline()))
    monkeypatch.chdir(root)
    answer = CliRunner().invoke(
        app, ["report", "--slides", "--feedback-url", f"sqlite:///{tmp_path}/none.db"]
    )
    assert answer.exit_code == 0, answer.output
    page = (root / "reports" / "slides.html").read_text(encoding="utf-8")
    assert "The catalogue in two dimensions" in page and "No trained hybrid found" not in page
    no_map = CliRunner().invoke(app, ["report", "--no-map", "--out", "r.html"])
    assert no_map.exit_code == 0 and "No trained hybrid found" in (root / "r.html").read_text(
        encoding="utf-8"
    )


def test_the_deck_of_the_committed_run_quotes_metrics_as_they_are() -> None:
    """The deck rendered from this repository's own ``metrics/`` (the latest `make run`)."""
    from recsys.reporting.stakeholder import load_report_inputs
    from tests.helpers import PROJECT_ROOT

    inputs = load_report_inputs(
        PROJECT_ROOT / "params.yaml", PROJECT_ROOT / "metrics", PROJECT_ROOT / "none", PROJECT_ROOT / "none"
    )
    page = render_slides(inputs)
    offline = json.loads((PROJECT_ROOT / "metrics" / "offline.json").read_text(encoding="utf-8"))
    bias = json.loads((PROJECT_ROOT / "metrics" / "bias.json").read_text(encoding="utf-8"))
    # The deck speaks of the model listeners get: the run's challenger (the ranker on artists).
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert inputs.served_model == challenger_model(params) == bias["model"]
    served, popular = offline["models"][inputs.served_model], offline["models"]["most_popular"]
    assert f"nDCG@10 {fmt(served['ndcg@10'])}" in page and fmt(popular["ndcg@10"]) in page
    assert f"strength {bias['chosen']['strength']:g}" in page
    for name, value in offline["protocol"]["sizes"].items():
        assert f"{name.replace('_', ' ')}: {fmt(value)}" in page
