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
