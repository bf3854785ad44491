"""The serving core without HTTP: ranking, exclusions, filters, reasons, search and request bounds."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from recsys import registry
from recsys.serving import logic
from recsys.serving import state as state_module
from recsys.serving.name_search import NameIndex
from recsys.serving.schemas import FeedbackRequest, NewListenerRequest, RecommendRequest, SimilarRequest
from recsys.serving.state import FALLBACK_REASON, ServingState


@pytest.fixture(scope="module")
def state(champion_home: tuple[Path, str]) -> ServingState:
    return ServingState(registry.load_artifact("champion", home=champion_home[0]))


def test_known_user_excludes_listened_and_disliked(state: ServingState) -> None:
    user = state.user_index["u03"]
    listened = {state.item_ids[i] for i in state.known_items(user)}
    first = logic.recommend(state, RecommendRequest(user_id="u03", k=100), frozenset())
    ids = [item["item_id"] for item in first["items"]]
    assert ids and not set(ids) & listened and len(ids) == state.n_items - len(listened)
    again = logic.recommend(state, RecommendRequest(user_id="u03", k=100), frozenset({ids[0]}))
    assert ids[0] not in {item["item_id"] for item in again["items"]}


def assert_cached_ranking_equals_full(state: ServingState, k: int) -> None:
    """For every known user, with and without dislikes and a filter: the cached list == a full ranking."""
    rng = np.random.default_rng(k)
    mask = rng.random(state.n_items) < 0.5
    for user in range(len(state.user_index)):
        listened = state.known_items(user)
        dislikes = rng.choice(state.n_items, size=3, replace=False)
        for exclude, allowed in ((None, None), (dislikes, None), (dislikes, mask)):
            full_exclude = listened if exclude is None else np.concatenate([listened, exclude])
            expected = state.rank(state.user_vectors[user], k, full_exclude, allowed)
            cached = state.rank_known(user, k, exclude, allowed)
            np.testing.assert_array_equal(cached[0], expected[0])
            # Re-ranked scores are standardised (centred near 0), hence an absolute tolerance too.
            np.testing.assert_allclose(cached[1], expected[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_cached_ranking_equals_a_full_ranking(state: ServingState, k: int) -> None:
    assert_cached_ranking_equals_full(state, k)


def test_lists_are_ranked_on_first_use_and_the_cache_is_bounded(
    champion_home: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_module, "CACHED_USERS", 3)
    fresh = ServingState(registry.load_artifact("champion", home=champion_home[0]))
    assert fresh.cached_users == 0  # nothing ranked at load, whatever the number of users
    first = fresh.ranked_top(0)
    assert fresh.ranked_top(0) is first  # the second request reuses the list
    for user in (1, 2, 3):
        fresh.ranked_top(user)
    assert fresh.cached_users == 3  # user 0, least recently used, was dropped
    assert fresh.ranked_top(0) is not first
    np.testing.assert_array_equal(fresh.ranked_top(0)[0], first[0])
    # Requests on threads ranking at once (the service's worker threads) leave a consistent cache.
    with ThreadPoolExecutor(8) as pool:
        lists = list(pool.map(lambda user: fresh.ranked_top(user % 6)[0], range(60)))
    for user, ranked in enumerate(lists):
        np.testing.assert_array_equal(ranked, fresh.ranked_top(user % 6)[0])
    assert fresh.cached_users == 3


def test_cold_start_is_popularity_ordered_and_filtered(state: ServingState) -> None:
    answer = logic.recommend(state, RecommendRequest(user_id="new", k=5, genre="rock"), frozenset({"a00"}))
    indices = [state.item_index[item["item_id"]] for item in answer["items"]]
    assert answer["cold_start"] and "a00" not in {item["item_id"] for item in answer["items"]}
    assert list(state.popularity[indices]) == sorted(state.popularity[indices], reverse=True)
    with pytest.raises(logic.FieldError) as caught:
        logic.recommend(state, RecommendRequest(user_id="new", tag="polka"), frozenset())
    assert caught.value.field == "tag"


def test_reasons_name_shared_tags_or_fall_back(state: ServingState) -> None:
    rock = state.item_index["a01"]
    assert state.reason(rock, state.tag_profile([state.item_index["a02"]])).startswith("shares tags: rock")
    assert state.reason(rock, state.tag_profile([state.item_index["a20"]])) == FALLBACK_REASON
    anchored = state.reason(rock, state.tag_profile([state.item_index["a02"]]), state.item_index["a02"])
    assert anchored.startswith(f"because you like {state.names[state.item_index['a02']]}; shares tags: rock")


def test_a_reason_names_the_nearest_liked_item_only_when_it_is_near(state: ServingState) -> None:
    rock, pop = state.item_index["a01"], state.item_index["a20"]
    liked = np.array([state.item_index["a02"], pop])
    nearest = state.anchors(np.array([rock]), liked)[0]
    similarity = state.unit_embeddings[liked] @ state.unit_embeddings[rock]
    assert nearest == int(liked[similarity.argmax()])
    # An item far from everything liked gets no "because you like": its best cosine is below the floor.
    rock_fan = np.array([state.item_index["a02"]])
    far = np.array([i for i in range(state.n_items) if i not in rock_fan])
    cosines = (state.unit_embeddings[far] @ state.unit_embeddings[rock_fan].T).max(axis=1)
    anchors = state.anchors(far, rock_fan)
    assert [a is None for a in anchors] == (cosines < 0.5).tolist()
    assert 0 < sum(a is None for a in anchors) < len(far)  # both cases occur in the clustered catalogue
    assert state.anchors(np.array([rock]), np.array([], dtype=np.int64)) == [None]


def test_new_listener_and_similar(state: ServingState) -> None:
    answer = logic.new_listener(
        state, NewListenerRequest(favourites=["Radiohead"], exclude=["a00"]), frozenset()
    )
    ids = {item["item_id"] for item in answer["items"]}
    assert "a12" not in ids and "a00" not in ids
    near = logic.similar(state, SimilarRequest(item_id="a14", k=3))
    assert [item["name"].startswith("Pop Star") for item in near["items"]] == [True, True, True]
    scores = [item["score"] for item in near["items"]]
    assert all(-1.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


def test_name_index_orders_prefix_hits_by_popularity() -> None:
    index = NameIndex(["Beta Band", "Beatles", "Bee Gees", "Abba"], np.array([1, 50, 9, 3]))
    assert [i for i, _ in index.search("be", 10)] == [1, 2, 0]
    assert index.search("abba", 3)[0] == (3, "exact")
    assert index.exact("  BEATLES ") == 1


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (RecommendRequest, {"user_id": "u", "k": 101}, "k"),
        (NewListenerRequest, {"favourites": []}, "favourites"),
        (SimilarRequest, {"k": 3}, None),
        (
            FeedbackRequest,
            {"events": [{"user_id": "u", "item_id": "a", "event": "meh", "event_id": "e"}]},
            "events",
        ),
    ],
)
def test_request_bounds(model: type[BaseModel], body: dict[str, object], field: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    if field is not None:
        assert caught.value.errors()[0]["loc"][0] == field


def test_an_interleaved_answer_is_the_team_draft_of_both_models_with_each_models_own_entries(
    state: ServingState, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Drafted from both rankings; each item's entry (score, reason) is the one its own model gives."""
    from recsys.experiments.design import team_draft
    from recsys.serving import experiment
    from tests.helpers import Project
    from tests.serving.conftest import build_project, save_champion

    other: Project = build_project(tmp_path_factory.mktemp("other-model"), seed=5)
    home = tmp_path_factory.mktemp("other-home")
    challenger = ServingState(registry.load_artifact(save_champion(other, home), home=home))
    request = RecommendRequest(user_id="u03", k=6)
    ours, theirs = logic.recommend(state, request, set()), logic.recommend(challenger, request, set())
    answer = experiment.interleaved(state, challenger, request, set(), seed=11)
    drafted = team_draft(
        [i["item_id"] for i in ours["items"]], [i["item_id"] for i in theirs["items"]], 6, 11
    )
    assert [(item["item_id"], item["model"]) for item in answer["items"]] == drafted
    entries = {"champion": ours["items"], "challenger": theirs["items"]}
    for item in answer["items"]:
        own = next(e for e in entries[item["model"]] if e["item_id"] == item["item_id"])
        assert {k: v for k, v in item.items() if k != "model"} == own
    assert answer["arm"] == "interleave" and answer["challenger_version"] == challenger.version
    cold = experiment.interleaved(state, challenger, RecommendRequest(user_id="nobody", k=3), set(), seed=1)
    assert cold["cold_start"] and "arm" not in cold


def test_filter_masks_are_bounded_and_an_unknown_tag_is_refused_without_being_kept(
    champion_home: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = ServingState(registry.load_artifact("champion", home=champion_home[0]))
    monkeypatch.setattr(state_module, "CACHED_MASKS", 2)
    tags = ["rock", "indie", "pop", "dance"]
    for tag in tags:
        assert fresh.allowed(None, tag) is not None
    assert len(fresh._mask_cache) == 2 and ("tag", "dance") in fresh._mask_cache
    for made_up in (f"no-such-tag-{n}" for n in range(50)):
        with pytest.raises(state_module.UnknownFilterError, match="unknown tag"):
            fresh.allowed(None, made_up)
    assert len(fresh._mask_cache) == 2
    rock = fresh.allowed(None, "rock")
    assert rock is not None and rock.sum() == sum("rock" in tags for tags in fresh.tags) > 0


def test_an_erased_listener_is_hidden_only_by_a_model_holding_their_feedback(
    champion_home: tuple[Path, str],
) -> None:
    from recsys.feedback.pseudonyms import pseudonymise

    fresh = ServingState(registry.load_artifact("champion", home=champion_home[0]))
    erased = frozenset({pseudonymise("u03", "s")})

    fresh.hide_erased(erased, lambda user: pseudonymise(user, "s"))
    assert fresh.hidden_users == frozenset() and fresh.row_of("u03") is not None  # trained on no feedback

    fresh.feedback_users, fresh._feedback_pseudonyms, fresh._hidden_for = frozenset({"u03", "u04"}), None, 0
    fresh.hide_erased(erased, lambda user: pseudonymise(user, "s"))
    assert fresh.hidden_users == {"u03"} and fresh.row_of("u03") is None and fresh.row_of("u04") is not None
    answer = logic.recommend(fresh, RecommendRequest(user_id="u03", k=3), frozenset())
    assert answer["cold_start"] is True


def test_every_favourite_explains_one_item_when_a_close_candidate_ranks_below_the_list() -> None:
    from types import SimpleNamespace

    # Items 0-5 point like favourite 10 (x), items 6-7 like favourite 11 (y, ranked last), 8 like neither.
    x, y, z = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    embeddings = np.array([x, x, x, x, x, x, y, y, z, z, x, y], dtype=np.float32)
    fake = SimpleNamespace(unit_embeddings=embeddings)
    indices = np.arange(10)
    scores = np.linspace(1.0, 0.1, 10)
    picked, kept, anchors = ServingState.every_favourite(fake, indices, scores, np.array([10, 11]), 4)  # type: ignore[arg-type]
    assert picked.tolist() == [0, 1, 2, 6]  # the x-item ranked 4th gave way to y's best candidate
    assert anchors == [10, 10, 10, 11] and kept.tolist() == scores[[0, 1, 2, 6]].tolist()
    # A favourite with no close candidate changes nothing; neither does a single favourite.
    far = ServingState.every_favourite(fake, indices[:6], scores[:6], np.array([10, 11]), 4)  # type: ignore[arg-type]
    assert far[0].tolist() == [0, 1, 2, 3]


def test_one_song_under_two_ids_is_never_listed_twice(state: ServingState) -> None:
    from recsys.serving import logic
    from recsys.serving.name_search import NameIndex
    from recsys.serving.schemas import NewListenerRequest, RecommendRequest

    doubled = ServingState.__new__(ServingState)  # the tiny model's state, with items 3 and 4 one song
    doubled.__dict__.update(state.__dict__)
    doubled.names = list(state.names)
    doubled.names[3] = doubled.names[4]
    doubled.names_index = NameIndex(doubled.names, state.popularity)
    doubled.twins = doubled.names_index.twins()
    assert doubled.twins.tolist() in ([3], [4])
    twin = state.item_ids[int(doubled.twins[0])]
    everything = len(state.names)
    for answer in (
        logic.recommend(doubled, RecommendRequest(user_id=next(iter(state.user_index)), k=everything), set()),
        logic.recommend(doubled, RecommendRequest(user_id="nobody", k=everything), set()),
        logic.new_listener(doubled, NewListenerRequest(favourites=[state.item_ids[0]], k=everything), set()),
    ):
        names = [item["name"] for item in answer["items"]]
        assert len(names) == len(set(names)) and twin not in {item["item_id"] for item in answer["items"]}
