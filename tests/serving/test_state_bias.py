"""Popularity re-ranking in the serving core: the cached fast path agrees with a full ranking."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from recsys import registry
from recsys.offline.popularity import rerank_popularity
from recsys.serving import logic
from recsys.serving.schemas import NewListenerRequest, RecommendRequest
from recsys.serving.state import BIAS_STRENGTH_ENV, ServingState, bias_strength_from_env
from tests.serving.test_state import assert_cached_ranking_equals_full

STRENGTH = 1.0


@pytest.fixture(scope="module")
def artifact(champion_home: tuple[Path, str]) -> registry.ServingArtifact:
    return registry.load_artifact("champion", home=champion_home[0])


@pytest.fixture(scope="module")
def plain(artifact: registry.ServingArtifact) -> ServingState:
    return ServingState(artifact, bias_strength=0.0)


@pytest.fixture(scope="module")
def debiased(artifact: registry.ServingArtifact) -> ServingState:
    return ServingState(artifact, bias_strength=STRENGTH)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_cached_reranked_ranking_equals_a_full_ranking(debiased: ServingState, k: int) -> None:
    assert_cached_ranking_equals_full(debiased, k)


def test_full_ranking_applies_the_offline_formula(debiased: ServingState) -> None:
    user = debiased.user_index["u03"]
    raw = debiased.item_vectors @ debiased.user_vectors[user]
    adjusted = rerank_popularity(raw, debiased.popularity, STRENGTH)
    adjusted[debiased.known_items(user)] = -np.inf
    n_left = int(np.isfinite(adjusted).sum())
    indices, _ = debiased.rank(debiased.user_vectors[user], n_left, debiased.known_items(user))
    np.testing.assert_array_equal(indices, np.argsort(-adjusted, kind="stable")[:n_left])


def test_reranking_lowers_the_popularity_of_served_lists(plain: ServingState, debiased: ServingState) -> None:
    def mean_popularity(state: ServingState) -> float:
        lists = [state.rank_known(user, 5)[0] for user in range(len(state.user_index))]
        return float(np.mean([state.popularity[items].mean() for items in lists]))

    assert mean_popularity(debiased) < mean_popularity(plain)


def test_the_model_is_served_at_its_packaged_strength_unless_the_environment_overrides(
    artifact: registry.ServingArtifact, debiased: ServingState, monkeypatch: pytest.MonkeyPatch
) -> None:
    packaged = dataclasses.replace(artifact, metadata=artifact.metadata | {"bias_strength": STRENGTH})
    monkeypatch.delenv(BIAS_STRENGTH_ENV, raising=False)
    state = ServingState(packaged)
    assert (state.bias_strength, state.bias_source) == (STRENGTH, "model")
    user = state.user_index["u03"]
    np.testing.assert_array_equal(state.rank_known(user, 10)[0], debiased.rank_known(user, 10)[0])
    monkeypatch.setenv(BIAS_STRENGTH_ENV, "0")
    overridden = ServingState(packaged)
    assert (overridden.bias_strength, overridden.bias_source) == (0.0, BIAS_STRENGTH_ENV)
    broken = dataclasses.replace(artifact, metadata=artifact.metadata | {"bias_strength": -1})
    monkeypatch.delenv(BIAS_STRENGTH_ENV)
    with pytest.raises(registry.RegistryError, match="bias_strength"):
        ServingState(broken)


def test_strength_zero_keeps_the_unmitigated_ranking(
    artifact: registry.ServingArtifact, plain: ServingState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BIAS_STRENGTH_ENV, raising=False)
    default = ServingState(artifact)
    assert default.bias_strength == 0.0
    for user in range(len(plain.user_index)):
        np.testing.assert_array_equal(default.rank_known(user, 10)[0], plain.rank_known(user, 10)[0])


def test_endpoints_serve_reranked_lists(debiased: ServingState) -> None:
    answer = logic.recommend(debiased, RecommendRequest(user_id="u03", k=5), frozenset())
    listened = {debiased.item_ids[i] for i in debiased.known_items(debiased.user_index["u03"])}
    ids = [item["item_id"] for item in answer["items"]]
    assert len(ids) == 5 and not set(ids) & listened
    expected, _ = debiased.rank_known(debiased.user_index["u03"], 5)
    assert ids == [debiased.item_ids[i] for i in expected]
    fresh = logic.new_listener(debiased, NewListenerRequest(favourites=["a01", "a02"], k=3), frozenset())
    assert len(fresh["items"]) == 3 and not {"a01", "a02"} & {i["item_id"] for i in fresh["items"]}


def test_strength_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BIAS_STRENGTH_ENV, " 0.25 ")
    assert bias_strength_from_env() == 0.25
    monkeypatch.setenv(BIAS_STRENGTH_ENV, "")
    assert bias_strength_from_env() is None  # blank: the model's own strength
    for bad in ("strong", "-1", "nan", "inf"):
        monkeypatch.setenv(BIAS_STRENGTH_ENV, bad)
        with pytest.raises(ValueError, match=BIAS_STRENGTH_ENV):
            bias_strength_from_env()


def test_a_negative_explicit_strength_is_refused(artifact: registry.ServingArtifact) -> None:
    with pytest.raises(ValueError, match="bias_strength"):
        ServingState(artifact, bias_strength=-0.5)
