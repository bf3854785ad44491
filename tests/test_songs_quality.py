"""The stages end to end on the song data set (spotify-songs), real files: the song model's quality floor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recsys import stages
from recsys.config import Params, load_params
from recsys.specs import HYBRID, MODEL_NAMES, RANKER
from tests.helpers import PROJECT_ROOT


@pytest.fixture(scope="module")
def songs_report(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("songs")
    settings = load_params(PROJECT_ROOT / "params.yaml").model_dump()
    settings["dataset"]["name"] = "spotify-songs"
    settings["split"]["cold_items"] = "newest"
    params = Params.model_validate(settings)
    stages.ingest(params, root / "raw", real_data_dir)
    stages.prepare(params, root / "raw", root / "prepared")
    stages.features(params, root / "prepared", root / "features")
    stages.split(params, root / "prepared", root / "split")
    stages.train(params, root / "features", root / "split", root / "models")
    stages.evaluate(
        params, root / "features", root / "split", root / "models", root / "metrics", root / "plots"
    )
    report: dict[str, Any] = json.loads((root / "metrics" / "offline.json").read_text())
    return report


@pytest.mark.slow
@pytest.mark.realdata
def test_the_song_hybrid_beats_every_baseline_and_ranks_new_releases(songs_report: dict[str, Any]) -> None:
    models, cold = songs_report["models"], songs_report["cold_start"]
    assert set(models) == set(MODEL_NAMES)
    hybrid = models[HYBRID]["ndcg@10"]
    # Most tracks sit in one playlist, so a held-out track is usually unseen in training: only content
    # features can rank it (measured: hybrid 0.051, EASE 0.019, ALS 0.001 nDCG@10).
    for name in set(MODEL_NAMES) - {HYBRID, RANKER}:
        assert hybrid > 1.5 * models[name]["ndcg@10"], name
    # New releases (the newest 10 %, never seen in training) ranked from audio, lyrics, genre and tags.
    assert cold[HYBRID]["auc"] > 0.85
    assert all(cold[name]["auc"] < 0.6 for name in set(MODEL_NAMES) - {HYBRID, RANKER, "lightfm_cf"})


@pytest.mark.slow
@pytest.mark.realdata
def test_the_two_stage_ranker_is_not_worse_than_the_song_hybrid(songs_report: dict[str, Any]) -> None:
    # Measured 2026-12-07, tracks nobody played in training no candidates (train.ranker.never_played false;
    # with them it was 0.3315, mostly the protocol: a held-out track in one playlist has no training
    # listens): ranker 0.1107 against the hybrid's 0.0570, its cold start the hybrid's (0.9562). Its niche
    # group is far below the hybrid's (0.0186 vs 0.0904): their test tracks are the never-played ones.
    models, cold = songs_report["models"], songs_report["cold_start"]
    lead = songs_report["uncertainty"]["leads"][RANKER]  # the hybrid's lead over the ranker
    assert models[RANKER]["ndcg@10"] >= models[HYBRID]["ndcg@10"], lead
    assert cold[RANKER]["auc"] > 0.85  # new releases keep the hybrid's order below the candidates
