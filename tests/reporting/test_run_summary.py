"""The run summary: the closing paragraph of a training run and where its reports are."""

from __future__ import annotations

from pathlib import Path

from recsys.reporting.run_summary import closing_summary, report_paths, reports_markdown, summary_table


def test_closing_summary_names_the_verdict_and_what_ran() -> None:
    summary = {
        "seconds": 1.5,
        "stages": {"train": "ran", "evaluate": "skipped"},
        "metrics": [{"model": "lightfm_hybrid", "ndcg@10": 0.3}],
        "decision": {"promote": False, "reasons": ["ndcg@10 does not improve"]},
        "model_tag": "music_recommender:abc",
    }
    text = closing_summary(summary)
    assert "stages run: train" in text and "ndcg@10=0.3" in text
    assert "kept the champion" in text and "music_recommender:abc" in text


def test_report_paths_lists_existing_reports_only_and_the_markdown_links_them(tmp_path: Path) -> None:
    assert report_paths(tmp_path) == {}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "offline.json").write_text("{}", encoding="utf-8")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "ndcg_by_k.csv").write_text("k\n", encoding="utf-8")
    paths = report_paths(tmp_path)
    assert set(paths) == {"metrics", "plots"}  # no EDA report was written
    assert paths["plots"] == [str(tmp_path / "plots" / "ndcg_by_k.csv")]
    text = reports_markdown(paths)
    assert (tmp_path / "metrics" / "offline.json").as_uri() in text and "EDA" not in text
    assert "Model card" not in text
    card = tmp_path / "docs" / "model_card.md"
    assert f"- Model card: [{card}]({card.as_uri()})" in reports_markdown(paths | {"model_card": str(card)})


def test_the_summary_table_shows_each_model_the_verdict_and_the_stage_times() -> None:
    summary = {
        "metrics": [
            {"model": "lightfm_hybrid", "ndcg@10": 0.2288, "coverage@10": 0.1256, "arp@10": 117.85},
            {"model": "most_popular", "ndcg@10": 0.07},
        ],
        "decision": {"promote": True, "reasons": ["ndcg@10 improves"], "champion_tag": None},
        "model_tag": "music_recommender:new",
        "stages": {"prepare": "skipped", "train": "ran"},
        "stage_seconds": {"prepare": 1.2, "train": 55.4},
        "seconds": 98.7,
        "reports": {"metrics": "metrics/offline.json", "plots": ["plots/a.csv"]},
    }
    text = summary_table(summary)
    rows = {
        line.split()[0]: line.split()[1:]
        for line in text.splitlines()
        if line.startswith(("lightfm", "most"))
    }
    assert rows["lightfm_hybrid"] == ["0.2288", "0.1256", "117.8"] and rows["most_popular"] == [
        "0.0700",
        "-",
        "-",
    ]
    assert (
        "gate: promoted the challenger (lightfm_hybrid vs no champion)" in text
        and "  - ndcg@10 improves" in text
    )
    assert "stages: prepare skipped 1 s, train ran 55 s" in text and "time: 99 s" in text
    assert "metrics: metrics/offline.json" in text and "plots" not in text


def a_run(promote: bool, candidate: str | None = None, champion_before: str | None = "m:old") -> dict:  # type: ignore[type-arg]
    return {
        "dataset": "spotify-songs",
        "metrics": [{"model": "lightfm_hybrid", "ndcg@10": 0.25}, {"model": "most_popular", "ndcg@10": 0.26}],
        "decision": {
            "promote": promote,
            "reasons": ["ndcg@10 ..."],
            "champion_tag": champion_before,
            "comparison": {"ndcg@10": {}},
            "served": {"strength": 0.3, "ndcg@10": 0.2463},
        },
        "model_tag": "m:new" if promote and not candidate else champion_before,
        "candidate": candidate,
        "stages": {},
        "seconds": 1.0,
    }


def test_a_candidate_is_named_with_what_to_do_and_the_champion_is_said_unchanged() -> None:
    text = summary_table(a_run(promote=True, candidate="m:cand"))
    assert "promoted the challenger" not in text
    assert (
        "gate: packaged the challenger as a candidate for an online experiment; the champion is unchanged"
        in text
    )
    assert "packaged: m:cand (candidate)" in text and "champion: m:old" in text
    assert "next: RECSYS_DATASET=spotify-songs make serve, then recsys experiment start" in text
    assert "--challenger m:cand" in text and "served:" not in text  # nothing new is served


def test_a_promotion_says_what_is_served_and_a_stronger_baseline_is_pointed_out() -> None:
    text = summary_table(a_run(promote=True, champion_before=None))
    assert "packaged: m:new (champion)" in text and "champion: m:new" in text
    assert "served: lightfm_hybrid re-ranked against popularity at strength 0.3 (ndcg@10 0.2463" in text
    assert (
        "note: most_popular scored higher than lightfm_hybrid on ndcg@10 in this run (0.2600 vs 0.2500)"
        in text
    )
    assert "next: RECSYS_DATASET=spotify-songs make serve (serves m:new" in text
    assert "AUC" not in text
    below = a_run(promote=True) | {"metrics": [{"model": "ease", "ndcg@10": 0.2, "auc": 0.24}]}
    assert "note: AUC below 0.5 (ease 0.24): these models rank a held-out item below a random one" in (
        summary_table(below)
    )
    # The served line names the model served: a ranker champion calibrated (found in a real run's summary).
    ranker = a_run(promote=True)
    ranker["decision"] |= {"model": "ranker", "served": {"strength": 0.0, "ndcg@10": 0.2615}}
    ranker["decision"]["served"]["calibration"] = {"strength": 0.1}
    assert "served: ranker calibrated to each listener's genre mix (strength 0.1) (ndcg@10 0.2615" in (
        summary_table(ranker)
    )


def test_a_kept_champion_packages_nothing_and_says_how_to_test_the_challenger_anyway() -> None:
    text = summary_table(a_run(promote=False))
    assert "gate: kept the champion" in text and "packaged: nothing (the champion stays)" in text
    assert "recsys run --candidate" in text


def test_a_served_number_that_was_not_measured_is_left_out_not_a_crash() -> None:
    run = a_run(promote=True, champion_before=None)
    run["decision"]["served"] = {"strength": 0.1, "ndcg@10": None}
    text = summary_table(run)
    assert "packaged: m:new (champion)" in text and "served:" not in text


def test_the_ranker_as_challenger_is_named_and_a_stronger_ranker_is_offered() -> None:
    run = a_run(promote=False)
    run["metrics"] = [{"model": "lightfm_hybrid", "ndcg@10": 0.25}, {"model": "ranker", "ndcg@10": 0.2627}]
    text = summary_table(run)
    assert "gate: kept the champion (lightfm_hybrid vs m:old)" in text
    assert "note: ranker scored higher than lightfm_hybrid on ndcg@10" in text
    assert "(-S gate.challenger=ranker offers it)" in text
    run["decision"] = run["decision"] | {"model": "ranker"}
    text = summary_table(run)
    assert "gate: kept the champion (ranker vs m:old)" in text and "scored higher" not in text
    assert closing_summary(run | {"model_tag": "m:old"}).count("ranker: ndcg@10=0.2627") == 1
