"""The two-stage ranker served: packaged with the hybrid it stacks on, it ranks known listeners (cached and
full rankings agree), new listeners and similar items stay the hybrid's, and the HTTP service says which model
ranks whom."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from recsys import registry
from recsys.config import Params
from recsys.errors import RegistryError
from recsys.models import load_recommender
from recsys.models.candidates import SessionItems
from recsys.models.ranker import TwoStageRanker
from recsys.models.scorer import top_k_from_scores
from recsys.offline.features import load_item_features, without_identity
from recsys.offline.popularity import rerank_popularity
from recsys.offline.split import load_split
from recsys.paths import model_file
from recsys.serving import logic
from recsys.serving.schemas import NewListenerRequest, RecommendRequest
from recsys.serving.session import SessionEvent
from recsys.serving.state import ServingState
from recsys.specs import HYBRID, RANKER
from tests.helpers import Project, start_server, stop_server

GENERATORS = [HYBRID, "most_popular", "itemknn", "content"]


def learned_ranker(project: Project, **settings: object) -> TwoStageRanker:
    """A ranker over the tiny project's own hybrid, as ``train`` fits it (``settings``: ``train.ranker``)."""
    split = load_split(project.split)
    features = without_identity(load_item_features(project.features), split.cold_items)
    ranker_settings = {"generators": GENERATORS, "candidates": 10, "min_child_samples": 5, "rounds": 30}
    params = Params.model_validate(
        {
            "train": {
                "lightfm": {"no_components": 4, "epochs": 3},
                "itemknn": {"neighbours": 10},
                "ranker": ranker_settings | settings,
            }
        }
    )
    ranker = TwoStageRanker(params, seed=0).learn(
        split.train_full, features.matrix, holdout=split.valid, feature_groups=features.group_slices
    )
    return ranker.use_generators({HYBRID: load_recommender(model_file(HYBRID, project.models))})


@pytest.fixture(scope="module")
def with_ranker(project: Project) -> Project:
    """The tiny project with a ranker over its own hybrid (``models/ranker.npz``), as ``train`` fits it."""
    learned_ranker(project).save(model_file(RANKER, project.models))
    return project


SESSION_FEATURES_ON = {"session": {"ranker_features": True}}


def test_a_packaged_ranker_ranks_known_listeners_and_the_hybrid_the_rest(
    with_ranker: Project, home: Path
) -> None:
    params = {"seed": 0, "split": {"test_fraction": 0.2}, "evaluate": {"ks": (5, 10)}}
    # Packaged with the ranker's session features on (the project's params.yaml serves it without them).
    tag = with_ranker.save(0.3, home, source_model=RANKER, params_dict=params | SESSION_FEATURES_ON)
    artifact = registry.load_artifact(tag, home=home)
    assert artifact.served_model == RANKER and artifact.metadata["source_model"] == RANKER
    assert isinstance(artifact.ranker, TwoStageRanker)
    state = ServingState(artifact)
    ranker = load_recommender(model_file(RANKER, with_ranker.models))
    for user_id in ("u01", "u05", "u11"):
        user = state.user_index[user_id]
        expected, _ = ranker.recommend(np.array([user]), 5, exclude=artifact.known)
        answer = logic.recommend(state, RecommendRequest(user_id=user_id, k=5), frozenset())
        assert [item["item_id"] for item in answer["items"]] == [artifact.item_ids[i] for i in expected[0]]
        # Past the cached list (a dislike of every cached item but a few): the same model's full ranking.
        cached, _ = state.ranked_top(user)
        disliked = {artifact.item_ids[i] for i in cached[3:]}
        full = logic.recommend(state, RecommendRequest(user_id=user_id, k=5), frozenset(disliked))
        scores = ranker.score(np.array([user]))[0]
        scores[state.known_items(user)] = -np.inf
        scores[[artifact.item_index[i] for i in disliked]] = -np.inf
        order = np.lexsort((np.arange(len(scores)), -scores))[:5]
        order = order[np.isfinite(scores[order])]  # a tiny catalogue: fewer than 5 left
        assert [item["item_id"] for item in full["items"]] == [artifact.item_ids[i] for i in order]
    # Within the session a session-aware ranker (the default settings learn with sessions) ranks with the
    # session's features; the items the listener reacted to leave the list.
    assert state.session_ranker
    user = state.user_index["u01"]
    first = logic.recommend(state, RecommendRequest(user_id="u01", k=5), frozenset())
    shown = [item["item_id"] for item in first["items"]]
    now = datetime.now(UTC).timestamp()
    events = (
        SessionEvent(1, shown[0], "like", now),
        *(SessionEvent(n + 2, item, "skip", now) for n, item in enumerate(shown[1:3])),
    )
    later = logic.recommend(state, RecommendRequest(user_id="u01", k=5), frozenset(), events)
    session = SessionItems(
        np.array([artifact.item_index[shown[0]]]), np.sort([artifact.item_index[i] for i in shown[1:3]])
    )
    scores = ranker.score(np.array([user]), [session])[0]
    scores[state.known_items(user)] = -np.inf
    scores[[artifact.item_index[i] for i in shown[:3]]] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))[:5]
    order = order[np.isfinite(scores[order])]  # a tiny catalogue: fewer than 5 left
    assert later["session_events"] == 3
    assert [item["item_id"] for item in later["items"]] == [artifact.item_ids[i] for i in order]
    # A ranker learned without sessions keeps its order: only the items reacted to leave the list.
    plain = ServingState(artifact)
    plain._ranker = without = learned_ranker(with_ranker, session_share=0.0)
    plain._ranked_ahead = None
    assert not plain.session_ranker
    kept = logic.recommend(plain, RecommendRequest(user_id="u01", k=5), frozenset(), events)
    expected, _ = without.recommend(np.array([user]), 8, exclude=artifact.known)
    assert [item["item_id"] for item in kept["items"]] == [
        artifact.item_ids[i] for i in expected[0] if i >= 0 and artifact.item_ids[i] not in shown[:3]
    ][:5]
    # So does the session-aware ranker packaged with the default settings (session.ranker_features off).
    default = registry.load_artifact(with_ranker.save(0.3, home, source_model=RANKER), home=home)
    off = ServingState(default)
    assert (
        not off.session_ranker and isinstance(default.ranker, TwoStageRanker) and default.ranker.session_aware
    )
    as_trained = logic.recommend(off, RecommendRequest(user_id="u01", k=8), frozenset())
    after = datetime.now(UTC).timestamp() + 1  # events count when stored after the model was packaged
    events = tuple(event._replace(at=after) for event in events)
    within = logic.recommend(off, RecommendRequest(user_id="u01", k=5), frozenset(), events)
    assert within["session_events"] == 3
    assert [item["item_id"] for item in within["items"]] == [
        item["item_id"] for item in as_trained["items"] if item["item_id"] not in shown[:3]
    ][:5]
    # Ranked when packaged (every known listener), and read only at the packaged strength: at another one the
    # ranker's row is re-ranked per request.
    assert artifact.ranked is not None and artifact.ranked[0].shape == (len(artifact.user_ids), state.n_items)
    mitigated = ServingState(artifact, bias_strength=2.0)
    user = state.user_index["u07"]
    adjusted = rerank_popularity(ranker.score(np.array([user])), mitigated.popularity, 2.0)
    expected, _ = top_k_from_scores(adjusted, 5, artifact.known[[user]])
    answer = logic.recommend(mitigated, RecommendRequest(user_id="u07", k=5), frozenset())
    assert [item["item_id"] for item in answer["items"]] == [artifact.item_ids[i] for i in expected[0]]
    assert not np.array_equal(mitigated.ranked_top(user)[0], state.ranked_top(user)[0])
    # Packaged at a strength, its lists ranked ahead are re-ranked at it, as the service re-ranks a full row.
    strong = registry.load_artifact(
        with_ranker.save(0.3, home, bias_strength=2.0, source_model=RANKER), home=home
    )
    assert strong.bias_strength == 2.0 and strong.ranked is not None
    ahead = ServingState(strong)
    answer = logic.recommend(ahead, RecommendRequest(user_id="u07", k=5), frozenset())
    assert [item["item_id"] for item in answer["items"]] == [artifact.item_ids[i] for i in expected[0]]
    # A new listener has no row in the ranker's generators: the hybrid's fold-in ranks them.
    hybrid = registry.load_artifact(with_ranker.save(0.3, home), home=home)
    assert hybrid.ranker is None and hybrid.served_model == HYBRID
    request = NewListenerRequest(favourites=[artifact.item_ids[0], artifact.item_ids[1]], k=5)
    assert [i["item_id"] for i in logic.new_listener(state, request, frozenset())["items"]] == [
        i["item_id"] for i in logic.new_listener(ServingState(hybrid), request, frozenset())["items"]
    ]
    # Unmitigated beside a ranker packaged at a strength: that strength was chosen on the ranker's lists.
    # The hybrid served alone at that strength re-ranks them (the same favourites, another list).
    favoured = [i["item_id"] for i in logic.new_listener(ahead, request, frozenset())["items"]]
    plain = [i["item_id"] for i in logic.new_listener(state, request, frozenset())["items"]]
    alone = registry.load_artifact(with_ranker.save(0.3, home, bias_strength=2.0), home=home)
    assert (
        favoured
        == plain
        != [i["item_id"] for i in logic.new_listener(ServingState(alone), request, frozenset())["items"]]
    )


def test_a_ranker_of_another_split_or_a_missing_one_is_refused(
    with_ranker: Project, home: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(model_file(HYBRID, with_ranker.models), model_file(HYBRID, models))
    with pytest.raises(RegistryError, match=r"cannot package .*ranker\.npz"):
        with_ranker.save(0.3, home, source_model=RANKER, models_dir=models)
    # A ranker of fewer artists than the split has (trained on another catalogue) is refused too.
    train = load_split(with_ranker.split).train_full
    params = Params.model_validate(
        {"train": {"ranker": {"generators": ["most_popular"], "min_child_samples": 2}}}
    )
    TwoStageRanker(params).fit(train[:, :-1]).save(model_file(RANKER, models))
    with pytest.raises(RegistryError, match="rerun the train stage"):
        with_ranker.save(0.3, home, source_model=RANKER, models_dir=models)
    assert registry.list_models(home) == []


def test_the_service_serves_a_ranker_champion_over_http(
    with_ranker: Project, home: Path, tmp_path: Path
) -> None:
    tag = with_ranker.save(0.3, home, source_model=RANKER)
    registry.promote(tag, home=home)
    ranker = load_recommender(model_file(RANKER, with_ranker.models))
    artifact = registry.load_artifact(tag, home=home)
    server = start_server(home, tmp_path, {})
    try:
        info = server.client.get("/model").json()
        assert info["served_model"] == RANKER and info["model_version"] == tag
        user = artifact.user_index["u02"]
        expected, _ = ranker.recommend(np.array([user]), 5, exclude=artifact.known)
        answer = server.client.post("/recommend", json={"user_id": "u02", "k": 5})
        assert answer.status_code == 200, answer.text
        assert [item["item_id"] for item in answer.json()["items"]] == [
            artifact.item_ids[i] for i in expected[0]
        ]
        # A like and a skip on the page change the next list on every worker: the ranker's with the session.
        shown = [item["item_id"] for item in answer.json()["items"]]
        events = [
            {"user_id": "u02", "item_id": item, "event": event, "event_id": str(uuid.uuid4())}
            for item, event in ((shown[0], "like"), (shown[1], "skip"))
        ]
        assert server.client.post("/feedback", json={"events": events}).status_code == 200
        session = SessionItems(
            np.array([artifact.item_index[shown[0]]]), np.array([artifact.item_index[shown[1]]])
        )
        scores = ranker.score(np.array([user]), [session])[0]
        scores[artifact.known[user].indices] = -np.inf
        scores[[artifact.item_index[i] for i in shown[:2]]] = -np.inf
        order = np.lexsort((np.arange(len(scores)), -scores))[:5]
        order = order[np.isfinite(scores[order])]
        for _ in range(6):  # two workers: each one's next answer knows the events
            later = server.client.post("/recommend", json={"user_id": "u02", "k": 5}).json()
            assert later["session_events"] == 2
            assert [item["item_id"] for item in later["items"]] == [artifact.item_ids[i] for i in order]
    finally:
        stop_server(server)
