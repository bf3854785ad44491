"""The run summary: the closing paragraph of a training run and where its reports are."""

from __future__ import annotations

from pathlib import Path

from recsys.reporting.run_summary import closing_summary, report_paths, reports_markdown


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
