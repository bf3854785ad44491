"""The model card: rendered from hand-built metrics, and the committed card kept in step with metrics/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recsys.config import Params
from recsys.errors import DataError
from recsys.reporting.card_sections import (
    fairness_section,
    mitigation_section,
    results_section,
    served_model_section,
)
from recsys.reporting.formatting import fmt, pct
from recsys.reporting.model_card import CardInputs, load_card_inputs, render_model_card, write_model_card
from tests.helpers import PROJECT_ROOT

ROOT = PROJECT_ROOT
GROUPS = ("niche", "medium", "mainstream")


def _metrics(scale: float) -> dict[str, float]:
    # Distinct values per model and metric, so a number found in the card can only come from one cell.
    names = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage", "long_tail_share", "novelty")
    values = {f"{name}@10": round(scale * (i + 1) / 97, 6) for i, name in enumerate(names)}
    return values | {"arp@10": 100 + 37 * scale, "auc": 0.5 + scale / 3, "n_users": 10}


def tiny_offline() -> dict[str, Any]:
    """A hand-built ``metrics/offline.json``: the served hybrid and most-popular, three user groups."""
    models = {"lightfm_hybrid": _metrics(0.9), "most_popular": _metrics(0.3)}
    return {
        "protocol": {
            "seed": 7,
            "ks": [10],
            "head_share": 0.2,
            "candidates": "all items",
            "user_groups": "thirds by mainstreaminess",
            "split": {"test_fraction": 0.2, "valid_fraction": 0.2, "cold_item_fraction": 0.1},
            "sizes": {"n_cold_items": 3, "parts": {"train": {"users": 30, "interactions": 1234}}},
        },
        "models": models,
        "cold_start": {
            name: _metrics(scale) for name, scale in (("lightfm_hybrid", 0.8), ("most_popular", 0.1))
        },
        "groups": {
            name: {g: _metrics(base * (j + 1) / 3) for j, g in enumerate(GROUPS)}
            for name, base in (("lightfm_hybrid", 0.7), ("most_popular", 0.2))
        },
    }


def tiny_bias() -> dict[str, Any]:
    """A hand-built ``metrics/bias.json`` with two strengths, the second chosen."""
    point = {"ndcg@10": 0.2113, "long_tail_share@10": 0.4321, "arp@10": 88.8, "popularity_lift": 1.777}
    other = {"ndcg@10": 0.2049, "long_tail_share@10": 0.5432, "arp@10": 66.6, "popularity_lift": 1.333}
    point |= {"ndcg@10/niche": 0.1111, "popularity_lift/niche": 2.2222}
    other |= {"ndcg@10/niche": 0.0999, "popularity_lift/niche": 1.4444}
    return {
        "k": 10,
        "rule": "a test rule",
        "chosen": {**other, "strength": 0.1, "ndcg_cost": 0.0303},
        "strengths": [
            {**point, "strength": 0.0, "ndcg_cost": 0.0},
            {**other, "strength": 0.1, "ndcg_cost": 0.0303},
        ],
    }


def test_card_shows_every_table_number_and_says_what_is_missing() -> None:
    offline = tiny_offline()
    card = render_model_card(CardInputs(offline=offline, params=Params()))

    for name, values in offline["models"].items():
        for key in ("precision@10", "ndcg@10", "coverage@10", "arp@10", "auc"):
            assert fmt(values[key]) in card, (name, key)
    for name, groups in offline["groups"].items():
        for group in GROUPS:
            assert fmt(groups[group]["ndcg@10"]) in card and fmt(groups[group]["arp@10"]) in card, (
                name,
                group,
            )
    assert fmt(offline["cold_start"]["lightfm_hybrid"]["auc"]) in card
    assert "1,234" in card  # protocol sizes
    assert "Not measured yet" in card and "Join match rates: not available" in card
    assert "Every model shows this gap" in card
    assert "Cantador" in card and "non-commercial" in card and "copyrighted" in card


def test_card_fills_optional_sections_when_their_files_exist() -> None:
    quality = {
        "joins": {"lastfm_artists": 400, "lastfm_artists_with_spotify": 100, "lyrics_rows_matched": 29}
    }
    signals = {
        "top1pct_n_items": 4,
        "top1pct_interaction_share": 0.3165,
        "top1pct_play_share": 0.52,
        "gini_item_popularity": 0.7301,
    }
    inputs = CardInputs(
        offline=tiny_offline(), params=Params(), quality=quality, bias_signals=signals, bias=tiny_bias()
    )
    card = render_model_card(inputs)

    assert "100 of 400 (25.0 %)" in card
    assert pct(0.3165) in card and fmt(0.7301) in card
    assert "Chosen strength: 0.1 " in card and pct(0.0303) in card and fmt(0.5432) in card
    assert "niche: nDCG@10 0.1111 -> 0.0999, popularity lift 2.2222 -> 1.4444" in card
    assert "Not measured yet" not in card


def test_mitigation_at_strength_zero_says_it_is_off() -> None:
    bias = tiny_bias() | {"chosen": {**tiny_bias()["strengths"][0]}}
    assert "served without re-ranking" in mitigation_section(bias)


def test_inputs_from_a_folder_with_only_the_required_files(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "offline.json").write_text(json.dumps(tiny_offline()))
    (tmp_path / "params.yaml").write_text("seed: 3\n")

    inputs = load_card_inputs(tmp_path / "params.yaml", tmp_path / "metrics", tmp_path / "p", tmp_path / "e")
    out = write_model_card(inputs, tmp_path / "docs" / "model_card.md")

    assert (inputs.quality, inputs.bias_signals, inputs.bias) == (None, None, None)
    assert out.read_text(encoding="utf-8") == render_model_card(inputs)
    assert [p.name for p in out.parent.iterdir()] == ["model_card.md"]  # no temporary file left behind


def test_missing_or_malformed_metrics_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("seed: 3\n")
    with pytest.raises(DataError, match=r"offline\.json"):
        load_card_inputs(tmp_path / "params.yaml", tmp_path)
    (tmp_path / "offline.json").write_text('{"models": {}}')
    with pytest.raises(DataError, match="missing key 'groups'"):
        load_card_inputs(tmp_path / "params.yaml", tmp_path)


def test_committed_card_is_up_to_date_with_the_metrics(tmp_path: Path) -> None:
    if not (ROOT / "metrics" / "offline.json").exists():
        pytest.skip("metrics/offline.json is absent: no run has been recorded yet")
    committed = (ROOT / "docs" / "model_card.md").read_text(encoding="utf-8")
    inputs = load_card_inputs(
        ROOT / "params.yaml",
        ROOT / "metrics",
        ROOT / "data" / "prepared",
        ROOT / "reports" / "eda",
    )
    stale = "docs/model_card.md is stale: run `recsys model-card` and commit it"
    k, groups = inputs.params.evaluate.primary_k, inputs.params.evaluate.groups
    # The sections drawn from committed files (metrics/, params.yaml) must always match.
    for section in (
        results_section(inputs.offline, k),
        fairness_section(inputs.offline, k, groups),
        mitigation_section(inputs.bias),
    ):
        assert section in committed, stale
    # The whole card only when the run's untracked outputs are present too (not on a fresh clone).
    if None not in (inputs.quality, inputs.bias_signals):
        assert write_model_card(inputs, tmp_path / "card.md").read_text(encoding="utf-8") == committed, stale


def test_a_song_catalogue_gets_its_own_card_and_file() -> None:
    from recsys.reporting.model_card import card_path

    songs = Params.model_validate({"dataset": {"name": "spotify-songs"}, "split": {"cold_items": "newest"}})
    card = render_model_card(CardInputs(offline=tiny_offline(), params=songs))
    assert card.startswith("# Model card: LightFM hybrid song recommender (spotify-songs)")
    assert "playlist continuation" in card and "new music" in card
    assert "Last.fm HetRec" not in card and " artists" not in card.split("## Ethical")[0].split("## Model")[1]
    # The numbers are the same shared sections as the artist card's.
    assert results_section(tiny_offline(), 10).replace("artist", "track") in card
    assert card_path(songs) == Path("docs/model_card_spotify-songs.md")
    assert card_path(Params()) == Path("docs/model_card.md")


def test_the_fairness_summary_says_which_way_the_gap_goes() -> None:
    offline = tiny_offline()
    hybrid = offline["groups"]["lightfm_hybrid"]
    hybrid["niche"]["ndcg@10"], hybrid["mainstream"]["ndcg@10"] = 0.2, 0.1
    assert "serves niche listeners at least as well: nDCG@10 0.2000 against 0.1000" in fairness_section(
        offline, 10, ("niche", "mainstream")
    )
    hybrid["niche"]["ndcg@10"] = 0.05
    assert "serves niche listeners less well" in fairness_section(offline, 10, ("niche", "mainstream"))


def test_the_card_says_which_model_listeners_get_and_why() -> None:
    offline = tiny_offline()
    offline["models"]["ranker"] = _metrics(1.0)
    offline["groups"]["ranker"] = {g: _metrics(0.9) for g in GROUPS}  # niche = mainstream: ratio 1
    bias = tiny_bias() | {"model": "ranker", "mitigation": {"served": "calibration"}}
    section = served_model_section(offline, bias, "ranker", 10)
    ours, hybrid = offline["models"]["ranker"]["ndcg@10"], offline["models"]["lightfm_hybrid"]["ndcg@10"]
    hybrid_ratio = (
        offline["groups"]["lightfm_hybrid"]["niche"]["ndcg@10"]
        / (offline["groups"]["lightfm_hybrid"]["mainstream"]["ndcg@10"])
    )
    assert f"nDCG@10 {fmt(ours)} against the hybrid's {fmt(hybrid)} ({ours / hybrid - 1:+.1%})" in section
    assert f"niche / mainstream nDCG@10 1.000 against {hybrid_ratio:.3f}" in section
    assert "served with (calibration) was chosen on its own lists" in section
    # A report of another model's lists: the ranker is served unmitigated, and the card says so.
    other = bias | {"model": "lightfm_hybrid"}
    assert "Served unmitigated" in served_model_section(offline, other, "ranker", 10)
    assert "Served unmitigated (`bias.serve: off`)" in served_model_section(
        offline, bias, "ranker", 10, "off"
    )
    # The hybrid served: the fairness section already speaks of it.
    assert served_model_section(offline, bias, "lightfm_hybrid", 10) == ""
    assert "Measured on the two-stage ranker (LightGBM)'s lists." in mitigation_section(bias)


def test_a_run_whose_models_find_nothing_still_gets_its_card_report_and_deck() -> None:
    """Found by the newcomer test: songs trained for seconds score 0 everywhere, and a ratio of two
    zeros ended the training flow with a ZeroDivisionError."""
    from recsys.reporting.slides import render_slides
    from recsys.reporting.stakeholder import ReportInputs, render_report

    def zeroed(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: zeroed(inner) for key, inner in value.items()}
        is_metric = isinstance(value, float) and not isinstance(value, bool)
        return 0.0 if is_metric else value

    offline = tiny_offline()
    offline["models"] = zeroed(offline["models"])
    offline["groups"] = zeroed(offline["groups"])
    assert "finds no held-out item for mainstream listeners" in fairness_section(
        offline, 10, ("niche", "mainstream")
    )
    bias = tiny_bias()
    for point in bias["strengths"]:
        point["ndcg@10"], point["ndcg_cost"] = 0.0, None  # no relative cost of an nDCG of 0 (bias.json: null)
    assert "| - |" in mitigation_section(bias).replace("  ", " ")
    inputs = ReportInputs(offline=offline, bias=bias)
    assert "Who it serves less well" not in render_report(inputs)
    assert "<section" in render_slides(inputs)


def test_the_card_gives_every_lead_with_its_interval_and_names_the_closest() -> None:
    offline = tiny_offline()
    offline["models"]["als"] = _metrics(0.85)
    offline["uncertainty"] = {
        "reference": "lightfm_hybrid",
        "metric": "ndcg@10",
        "resamples": 2000,
        "confidence": 0.95,
        "seed": 7,
        "leads": {
            "als": {"new": 0.25, "old": 0.24, "delta": 0.01, "delta_low": -0.001, "delta_high": 0.02}
            | {"relative": 0.0417, "relative_low": -0.0042, "relative_high": 0.0833, "n_users": 1876},
            "most_popular": {"new": 0.25, "old": 0.07, "delta": 0.18, "delta_low": 0.16, "delta_high": 0.2}
            | {"relative": 2.571, "relative_low": 2.366, "relative_high": 2.799, "n_users": 1876},
        },
    }
    section = results_section(offline, 10)
    assert "LightFM hybrid leads on ndcg@10 by (95 % interval)" in section
    assert "| reference |" in section
    assert "+4.2 % [-0.4 %, +8.3 %]" in section and "+257.1 % [+236.6 %, +279.9 %]" in section
    # The closest competitor in words, and whether its interval excludes zero.
    assert "leads implicit ALS by +4.2 % [-0.4 %, +8.3 %]" in section
    assert "the interval includes zero: not a sure lead" in section and "1,876 test listeners" in section
    # A run without intervals (an older offline.json) keeps the table it had.
    assert "interval" not in results_section(tiny_offline(), 10)


def test_the_card_shows_what_the_ranker_could_reach_and_what_it_leans_on() -> None:
    offline = tiny_offline()
    offline["models"]["ranker"] = _metrics(0.95)
    offline["rankers"] = {
        "ranker": {
            "rounds": 123,
            "candidates": 100,
            "listeners": 1876,
            "mean_candidates": 231.4,
            "recall": {"lightfm_hybrid": 0.5512, "als": 0.5141, "union": 0.6277},
            "importance": {"lightfm_hybrid_rank": 0.5336, "als_rank": 0.0901, "cosine_tags": 0.0088},
        }
    }
    card = render_model_card(CardInputs(offline=offline, params=Params()))
    assert "## two-stage ranker (LightGBM)" in card and "123 rounds" in card and "231.4 per listener" in card
    assert "| **union** | 0.6277 |" in card and "| implicit ALS | 0.5141 |" in card
    assert "| lightfm_hybrid_rank | 53.4 % |" in card
    ratio = offline["models"]["ranker"]["ndcg@10"] / offline["models"]["lightfm_hybrid"]["ndcg@10"]
    assert f"({ratio:.3f} times the hybrid's)" in card
    # No ranker in the run: no section.
    assert "two-stage ranker" not in render_model_card(CardInputs(offline=tiny_offline(), params=Params()))


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"session_candidates": 0}, "gets its order with session features"),
        ({"session_candidates": 25}, "the 25 artists most listened with the session's likes join"),
        ({"session_share": 0.0}, "keeps its order within a session"),
        ({"enabled": False}, None),
    ],
)
def test_the_card_says_what_the_ranker_does_within_a_session(
    settings: dict[str, Any], says: str | None
) -> None:
    from recsys.reporting.model_card import _session_section

    on = {"session": {"ranker_features": True}}
    text = _session_section(Params.model_validate({"train": {"ranker": settings}} | on), ranker=True)
    if says is None:
        assert "two-stage ranker" not in text
    else:
        assert says in text
        # A run without a ranker says nothing of it.
        assert "two-stage ranker" not in _session_section(
            Params.model_validate({"train": {"ranker": settings}} | on)
        )
    # Served without its session features (the default): it keeps its order, and the card says why.
    default = _session_section(Params.model_validate({"train": {"ranker": settings}}), ranker=True)
    if settings.get("enabled", True):
        assert "keeps its order within a session" in default
