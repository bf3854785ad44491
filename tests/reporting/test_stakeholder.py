"""The stakeholder report: one self-contained HTML file from hand-built run outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from recsys.errors import DataError
from recsys.reporting.formatting import fmt, pct
from recsys.reporting.html_parts import figure_png
from recsys.reporting.stakeholder import load_report_inputs, render_report, write_report
from recsys.specs import HYBRID
from tests.reporting.test_model_card import tiny_bias, tiny_offline

IMG = 'src="data:image/png;base64,'


def _png() -> bytes:
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [0, 1])
    return figure_png(fig)


def _workspace(tmp_path: Path, *, optional: bool) -> Path:
    """A run's outputs: offline.json always; EDA figure, bias.json and drift.json when ``optional``."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "offline.json").write_text(json.dumps(tiny_offline()))
    (tmp_path / "params.yaml").write_text("seed: 3\n")
    if optional:
        (tmp_path / "eda").mkdir()
        (tmp_path / "eda" / "long_tail.png").write_bytes(_png())
        (tmp_path / "metrics" / "bias.json").write_text(json.dumps(tiny_bias()))
        (tmp_path / "monitoring").mkdir()
        drift: dict[str, Any] = {
            "n_events": 321,
            "drift": {"share": 0.75, "n_drifted": 3, "n_columns": 4, "columns": {}},
            "decision": {"triggered": True, "reasons": ["drift share 0.75 >= 0.5"]},
        }
        (tmp_path / "monitoring" / "drift.json").write_text(json.dumps(drift))
    return tmp_path


def _render(root: Path) -> tuple[Path, str]:
    inputs = load_report_inputs(root / "params.yaml", root / "metrics", root / "eda", root / "monitoring")
    out = write_report(inputs, root / "out" / "stakeholder.html")
    return out, out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The report rendered once from a workspace with every optional input."""
    return _render(_workspace(tmp_path_factory.mktemp("run"), optional=True))


def test_report_is_one_self_contained_file_with_numbers_and_images(full_report: tuple[Path, str]) -> None:
    out, page = full_report

    assert [p.name for p in out.parent.iterdir()] == ["stakeholder.html"]
    # comparison chart, group chart, trade-off curve, one EDA figure; nothing fetched from elsewhere
    assert page.count(IMG) == 4
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]+)"', page))
    assert "<link" not in page and "<script" not in page
    hybrid = tiny_offline()["models"]["lightfm_hybrid"]
    assert fmt(hybrid["ndcg@10"]) in page and fmt(hybrid["arp@10"]) in page
    niche = tiny_offline()["groups"]["lightfm_hybrid"]["niche"]["ndcg@10"]
    assert fmt(niche) in page
    assert "Chosen strength 0.1" in page and "long tail" in page
    assert "ALERT" in page and "3 of 4 monitored columns drifted" in page and "drift share 0.75" in page


def test_plain_summary_compares_with_most_popular(full_report: tuple[Path, str]) -> None:
    page = full_report[1]
    models = tiny_offline()["models"]
    ours, popular = models["lightfm_hybrid"], models["most_popular"]

    assert "In plain words" in page
    assert pct(ours["hit_rate@10"]) in page and pct(popular["hit_rate@10"]) in page
    assert f"{ours['ndcg@10'] / popular['ndcg@10']:.1f} times as high" in page
    assert "Listeners with niche taste" in page
    assert "2.2 times as popular" in page  # the unmitigated niche popularity lift of bias.json


def test_report_without_optional_inputs_says_what_has_not_run(tmp_path: Path) -> None:
    out, page = _render(_workspace(tmp_path, optional=False))

    assert out.exists() and page.count(IMG) == 2
    assert "Monitoring has not run yet" in page
    assert "Not measured yet" in page and "not measured yet" in page
    assert "No EDA figures found" in page


def test_report_needs_the_offline_metrics(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"offline\.json"):
        load_report_inputs(tmp_path / "params.yaml", tmp_path / "metrics")


def test_cli_writes_the_report_and_the_card(tmp_path: Path) -> None:
    from recsys.cli.main import app

    root = _workspace(tmp_path, optional=False)
    none = str(root / "none")
    common = ["--params", str(root / "params.yaml"), "--metrics", str(root / "metrics"), "--eda", none]
    report = CliRunner().invoke(app, ["report", *common, "--monitoring", none, "--out", str(root / "r.html")])
    card_args = ["--prepared", none, "--out", str(root / "card.md")]
    card = CliRunner().invoke(app, ["model-card", *common, *card_args])

    assert report.exit_code == 0 and card.exit_code == 0, report.output + card.output
    assert "<html" in (root / "r.html").read_text(encoding="utf-8")
    assert fmt(tiny_offline()["models"]["most_popular"]["ndcg@10"]) in (root / "card.md").read_text()
    missing = CliRunner().invoke(
        app, ["report", "--metrics", str(root / "none"), "--out", str(root / "x.html")]
    )
    assert missing.exit_code == 2 and not (root / "x.html").exists()


def test_render_is_plain_html_with_no_lyrics_section() -> None:
    from recsys.reporting.stakeholder import ReportInputs

    page = render_report(ReportInputs(offline=tiny_offline()))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "lyric" not in page.lower()


def test_the_report_speaks_of_songs_for_a_song_catalogue() -> None:
    from recsys.reporting.stakeholder import ReportInputs, plain_summary

    songs = " ".join(plain_summary(ReportInputs(offline=tiny_offline(), bias=tiny_bias(), items="songs")))
    artists = " ".join(plain_summary(ReportInputs(offline=tiny_offline(), bias=tiny_bias())))
    assert "music songs to each listener" in songs and "artists" not in songs
    assert "music artists to each listener" in artists


def test_the_report_shows_the_listeners_ratings_by_week(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from recsys.cli.main import app
    from recsys.feedback.store import FeedbackStore

    root = _workspace(tmp_path, optional=False)
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    with FeedbackStore(url) as store:
        for day, rating in ((2, 3), (3, 5), (10, 4)):  # Monday 2 and Tuesday 3 March, then the next week
            store.add_rating(
                f"web-{day}", rating, "music_recommender:a", at=datetime(2026, 3, day, tzinfo=UTC)
            )
    none = str(root / "none")
    common = ["--params", str(root / "params.yaml"), "--metrics", str(root / "metrics"), "--eda", none]
    out = root / "r.html"
    answer = CliRunner().invoke(
        app, ["report", *common, "--monitoring", none, "--out", str(out), "--feedback-url", url]
    )
    assert answer.exit_code == 0, answer.output
    page = out.read_text(encoding="utf-8")
    section = page[page.index("What listeners said") :]
    assert "3 ratings, mean 4.00 of 5" in section and "67% rated the list 4 or 5" in section
    cells = re.findall(r"<td>([^<]*)</td>", section)
    assert cells == ["2026-03-02", "2", "4.00", "50%", "2026-03-09", "1", "4.00", "100%"]
    assert "Mean rating by week" in section
    empty = CliRunner().invoke(
        app,
        [
            "report",
            *common,
            "--monitoring",
            none,
            "--out",
            str(out),
            "--feedback-url",
            f"sqlite:///{tmp_path}/no.db",
        ],
    )
    assert empty.exit_code == 0 and "No ratings yet" in out.read_text(encoding="utf-8")


def test_the_report_shows_the_lead_with_its_interval_and_what_the_ranker_leans_on() -> None:
    from recsys.reporting.stakeholder import ReportInputs

    offline = tiny_offline()
    offline["uncertainty"] = {
        "reference": "lightfm_hybrid",
        "metric": "ndcg@10",
        "confidence": 0.95,
        "leads": {"most_popular": {"relative": 2.5, "relative_low": 2.3, "relative_high": 2.8}},
    }
    offline["models"]["ranker"] = offline["models"]["lightfm_hybrid"]
    offline["rankers"] = {
        "ranker": {
            "candidates": 100,
            "recall": {"most_popular": 0.26, "union": 0.65},
            "importance": {"als_rank": 0.1, "lightfm_hybrid_rank": 0.6, "content_z": 0.3},
        }
    }
    html = render_report(ReportInputs(offline=offline))
    assert "leads on ndcg@10 by (95 % interval)" in html and "+250.0 % [+230.0 %, +280.0 %]" in html
    assert "two-stage ranker (LightGBM): what it learned" in html
    # Features by their share of the gain, largest first.
    assert html.index("lightfm_hybrid_rank") < html.index("content_z") < html.index("als_rank")
    assert "<td>60.0 %</td>" in html and "<td>0.6500</td>" in html


def test_the_plain_words_say_how_the_served_model_is_mitigated() -> None:
    from recsys.reporting.stakeholder import ReportInputs, plain_summary

    offline = tiny_offline()
    offline["models"]["ranker"] = offline["models"]["lightfm_hybrid"]
    calibrated = tiny_bias() | {"model": "ranker", "mitigation": {"served": "calibration", "strength": 0.1}}
    words = " ".join(plain_summary(ReportInputs(offline=offline, bias=calibrated, served_model="ranker")))
    assert "keep the genre mix of their own listening (calibrated re-ranking, strength 0.1)" in words
    assert "re-ranked towards less popular" not in words  # the popularity curve's pick is not what is served
    none = calibrated | {"mitigation": {"served": "none", "strength": 0.0}}
    words = " ".join(plain_summary(ReportInputs(offline=offline, bias=none, served_model="ranker")))
    assert "shown as the model ranks them" in words
    # Measured on another model: nothing is claimed about how this one is served.
    other = " ".join(plain_summary(ReportInputs(offline=offline, bias=calibrated, served_model=HYBRID)))
    assert "calibrated re-ranking" not in other and "not measured yet" in other
