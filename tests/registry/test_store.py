"""The model registry against a real BentoML store in a temporary BENTOML_HOME.

The project folder (prepared tables, features, split, a trained hybrid, a dvc.lock) is built once from small
synthetic data with the project's own functions.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from filelock import FileLock

from recsys import registry
from recsys.columns import Col
from recsys.models import load_recommender
from recsys.offline.split import PARTS, load_split
from recsys.registry import (
    CANDIDATE,
    CHAMPION,
    MODEL_NAME,
    RETIRED,
    ROLLED_BACK,
    NoChampionError,
    NothingToRollBackError,
    RegistryError,
    artifact,
    store,
)
from tests.helpers import LYRICS_MARKER, Project, RandomCatalogue

N_USERS, N_ITEMS = RandomCatalogue.n_users, RandomCatalogue.n_items


def test_saved_candidate_has_labels_and_metadata(project: Project, home: Path) -> None:
    tag = project.save(0.25, home)
    assert re.fullmatch(rf"{MODEL_NAME}:[a-z0-9]+", tag)
    (info,) = registry.list_models()
    assert info.tag == tag
    assert info.stage == CANDIDATE
    assert info.path.parent.parent == home / "models"
    metadata = info.metadata
    assert metadata["dvc_lock_hash"] == hashlib.sha256(project.dvc_lock.read_bytes()).hexdigest()
    assert metadata["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert metadata["metrics"]["ndcg@10"] == pytest.approx(0.25)
    assert metadata["group_metrics"]["niche"]["ndcg@10"] == pytest.approx(0.125)
    assert metadata["params"]["evaluate"]["ks"] == [5, 10]
    assert re.fullmatch(r"[0-9a-f]{64}", metadata["data_version"])
    assert metadata["data_version"] == registry.data_version(project.split, project.features)
    created = pd.Timestamp(metadata["created_at"])
    assert created.tzinfo is not None and created.utcoffset() == pd.Timedelta(0)
    assert (metadata["n_users"], metadata["n_items"]) == (N_USERS, N_ITEMS)
    assert info.candidate["metrics"]["ndcg@10"] == pytest.approx(0.25)
    assert metadata["bias_strength"] == info.candidate["bias_strength"] == 0.0  # metrics did not say
    assert registry.champion() is None


def test_a_candidate_carries_the_reranking_strength_its_metrics_were_measured_at(
    project: Project, home: Path
) -> None:
    tag = project.save(0.25, home, bias_strength=0.1)
    (info,) = registry.list_models()
    assert info.metadata["bias_strength"] == info.candidate["bias_strength"] == 0.1
    assert registry.load_artifact(tag, home=home).bias_strength == 0.1
    with pytest.raises(registry.RegistryError, match="bias_strength must be a finite number >= 0"):
        project.save(0.25, home, bias_strength=-0.5)
    assert len(registry.list_models()) == 1  # nothing half-saved


def test_artifact_holds_names_and_top_tags_but_never_lyrics(project: Project, home: Path) -> None:
    info = registry.get_model(project.save(0.25, home))
    catalogue = pd.read_parquet(info.path / artifact.CATALOGUE_FILE)
    assert catalogue.columns.tolist() == [Col.ITEM, Col.NAME]
    for file in info.path.rglob("*"):
        if file.is_file():
            assert LYRICS_MARKER.encode() not in file.read_bytes(), file
    tags = pd.read_parquet(info.path / artifact.TAGS_FILE)
    source = pd.read_parquet(project.prepared / "item_tags.parquet")
    assert tags.groupby(Col.ITEM).size().max() == 2
    for item_id, kept in tags.groupby(Col.ITEM):
        counts = source.loc[source[Col.ITEM] == item_id, Col.COUNT].sort_values(ascending=False)
        assert kept[Col.COUNT].tolist() == counts.head(2).tolist()


def test_promote_retires_the_old_champion_and_rollback_restores_it(project: Project, home: Path) -> None:
    first, second = project.save(0.20, home), project.save(0.30, home)
    created = {info.tag: info.created_at for info in registry.list_models()}
    assert registry.promote(first).stage == CHAMPION
    assert registry.promote(second).tag == second
    stages = {info.tag: info.stage for info in registry.list_models()}
    assert stages == {first: RETIRED, second: CHAMPION}
    champion = registry.champion()
    assert champion is not None and champion.tag == second
    assert champion.metadata["metrics"]["ndcg@10"] == pytest.approx(0.30)

    restored = registry.rollback()
    assert restored.tag == first
    stages = {info.tag: info.stage for info in registry.list_models()}
    assert stages == {first: CHAMPION, second: ROLLED_BACK}
    # Relabelling keeps BentoML's descriptor intact: same creation times, readable by BentoML.
    assert {info.tag: info.created_at for info in registry.list_models()} == created
    with pytest.raises(NothingToRollBackError, match=rf"nothing to roll back to.*champion is {first}"):
        registry.rollback()


def test_deleting_versions_for_an_erasure_spares_the_champion_and_every_data_set_is_listed(
    project: Project, home: Path
) -> None:
    first, second, third = (project.save(score, home) for score in (0.20, 0.30, 0.25))
    songs = project.save(0.4, home, params_dict={"seed": 0, "dataset": {"name": "spotify-songs"}})
    registry.promote(first)
    registry.promote(second)  # first is retired: a rollback target
    assert [info.tag for info in registry.all_versions()] == [first, second, third, songs]

    with pytest.raises(RegistryError, match="champion of its data set"):
        registry.delete_versions([first, second])
    assert len(registry.all_versions()) == 4  # nothing deleted

    assert registry.delete_versions([first, songs, "music_recommender:gone"]) == [first, songs]
    assert registry.delete_versions([first]) == []  # a rerun finds nothing left to do
    assert [info.tag for info in registry.all_versions()] == [second, third]
    with pytest.raises(NothingToRollBackError):
        registry.rollback()
    with pytest.raises(RegistryError, match="no model"):
        registry.load_artifact(first)
    assert registry.load_artifact("champion").tag == second


def test_rollback_with_nothing_retired_is_a_clear_error(project: Project, home: Path) -> None:
    with pytest.raises(NothingToRollBackError, match="there is no champion"):
        registry.rollback()
    registry.promote(project.save(0.2, home))
    with pytest.raises(NothingToRollBackError, match="no retired music_recommender model"):
        registry.rollback()


def test_promoting_the_champion_again_changes_nothing(project: Project, home: Path) -> None:
    tag = project.save(0.2, home)
    first = registry.promote(tag)
    again = registry.promote(tag.split(":")[1][:8])
    assert (again.tag, again.stage, again.stage_since) == (first.tag, CHAMPION, first.stage_since)


def test_load_artifact_scores_like_the_saved_model(project: Project, home: Path) -> None:
    registry.promote(project.save(0.2, home))
    artifact = registry.load_artifact()
    saved = load_recommender(project.models / "lightfm_hybrid.npz")
    users = np.arange(N_USERS)
    np.testing.assert_array_equal(artifact.model.score(users), saved.score(users))
    split_users = pd.read_parquet(project.split / "users.parquet")[Col.USER].tolist()
    assert artifact.user_ids == split_users
    assert artifact.item_ids == [f"a{item:02d}" for item in range(N_ITEMS)]
    assert artifact.names[3] == "Artist 3"
    assert all(len(tags) == 2 for tags in artifact.tags)
    assert artifact.item_features.matrix.shape[0] == N_ITEMS
    assert (artifact.item_features.matrix != artifact.model.item_features).nnz == 0
    assert artifact.known.shape == (N_USERS, N_ITEMS)
    split = load_split(project.split)
    assert artifact.known.nnz == sum(split.part(part).nnz for part in PARTS)
    assert artifact.user_index[split_users[4]] == 4
    assert artifact.metadata["metrics"]["ndcg@10"] == pytest.approx(0.2)


def test_load_artifact_detects_a_corrupt_file(project: Project, home: Path) -> None:
    info = registry.get_model(project.save(0.2, home))
    with open(info.path / artifact.MODEL_FILE, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00corrupt\x00")
    with pytest.raises(RegistryError, match=r"model\.npz is missing or corrupt"):
        registry.load_artifact(info.tag)


def test_unknown_tags_and_missing_champion_are_clear_errors(project: Project, home: Path) -> None:
    with pytest.raises(NoChampionError, match="promote one first"):
        registry.load_artifact()
    with pytest.raises(RegistryError, match=rf"no model {MODEL_NAME}:nosuchversion in the store"):
        registry.promote("nosuchversion")


def test_saving_a_model_without_features_is_refused(project: Project, home: Path) -> None:
    with pytest.raises(RegistryError, match="without item features, not the hybrid"):
        project.save(0.2, home, source_model="lightfm_cf")
    with pytest.raises(RegistryError, match="cannot package"):
        project.save(0.2, home, source_model="missing")
    assert registry.list_models() == []


def test_home_is_resolved_at_each_call(
    project: Project, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other-home"
    tag = project.save(0.2, other)
    assert registry.list_models() == []
    assert [info.tag for info in registry.list_models(other)] == [tag]
    assert registry.bentoml_home() == home.resolve()
    # BentoML caches its own store at first use; the registry follows BENTOML_HOME whenever it changes.
    monkeypatch.setenv("BENTOML_HOME", str(other))
    assert [info.tag for info in registry.list_models()] == [tag]


def test_a_held_lock_times_out_with_a_clear_error(
    project: Project, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = project.save(0.2, home)
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 0.2)
    with FileLock(home / store.LOCK_FILE), pytest.raises(RegistryError, match="stayed locked"):
        registry.promote(tag)
    assert registry.get_model(tag).stage == CANDIDATE


def _promote_when_ready(home: str, tag: str, barrier: Any) -> None:
    barrier.wait(timeout=60)
    registry.promote(tag, home)


def test_concurrent_promotions_end_with_exactly_one_champion(project: Project, home: Path) -> None:
    tags = [project.save(0.2, home), project.save(0.3, home)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(tags))
    workers = [context.Process(target=_promote_when_ready, args=(str(home), tag, barrier)) for tag in tags]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    stages = sorted(info.stage for info in registry.list_models())
    assert stages == [CHAMPION, RETIRED]
    champion = registry.champion()
    assert champion is not None and champion.tag in tags


def test_each_data_set_has_its_own_versions_and_champion(
    project: Project, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    songs_params = {"seed": 0, "evaluate": {"ks": (5, 10)}, "dataset": {"name": "spotify-songs"}}
    artists = project.save(0.30, home)
    songs = project.save(0.05, home, params_dict=songs_params)
    assert artists.startswith(f"{MODEL_NAME}:") and songs.startswith("music_recommender_spotify_songs:")
    registry.promote(artists)
    registry.promote(songs)
    # Promoting the song model retired nothing of the artists: an artist champion is never compared with
    # (or replaced by) a song challenger.
    artist_champion = registry.champion(dataset="lastfm-artists")
    song_champion = registry.champion(dataset="spotify-songs")
    assert artist_champion is not None and artist_champion.tag == artists
    assert song_champion is not None and song_champion.tag == songs
    assert [info.tag for info in registry.list_models(dataset="spotify-songs")] == [songs]
    assert registry.load_artifact(dataset="spotify-songs").tag == songs
    # A service or the CLI picks its data set from RECSYS_DATASET.
    monkeypatch.setenv(registry.DATASET_ENV, "spotify-songs")
    assert registry.load_artifact().tag == songs
    assert registry.champion(dataset="files") is None
