"""The two-stage ranker: candidates from every generator, scale-free pair features, a LightGBM ranker that
learns from the holdout with generators that never saw it, bounded memory, one file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest
import scipy.sparse as sp

from recsys.config import EvaluateParams, Params
from recsys.errors import RecsysError
from recsys.models import candidates as candidates_module
from recsys.models import load_recommender
from recsys.models import ranker as ranker_module
from recsys.models.baselines import ItemKNN, MostPopular
from recsys.models.candidates import (
    NO_SESSION,
    SESSION_FEATURES,
    ContentNeighbours,
    PairContext,
    SessionItems,
    candidate_pairs,
    feature_names,
    session_columns,
)
from recsys.models.ranker import TwoStageRanker
from recsys.offline.evaluation import evaluate

N_USERS, N_ITEMS, N_GENRES = 240, 120, 6
CHEAP = ["most_popular", "itemknn", "rp3beta", "content"]


def taste_data(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, dict[str, slice]]:
    """Listeners who mostly play two genres (with popular artists more often), item features (genre plus
    a few tags), and a test part of each listener's items."""
    rng = np.random.default_rng(seed)
    genre = np.arange(N_ITEMS) % N_GENRES
    weight = 1.0 / (1 + np.arange(N_ITEMS)) ** 0.5
    dense = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    for user in range(N_USERS):
        liked = rng.choice(N_GENRES, size=2, replace=False)
        p = weight * np.where(np.isin(genre, liked), 8.0, 1.0)
        items = rng.choice(N_ITEMS, size=16, replace=False, p=p / p.sum())
        dense[user, items] = 1 + rng.integers(0, 5, size=16)
    matrix = sp.csr_matrix(dense)
    coo = matrix.tocoo()
    test_cells = rng.random(coo.nnz) < 0.2
    test = sp.csr_matrix(
        (coo.data[test_cells], (coo.row[test_cells], coo.col[test_cells])), shape=matrix.shape
    )
    train = sp.csr_matrix(
        (coo.data[~test_cells], (coo.row[~test_cells], coo.col[~test_cells])), shape=matrix.shape
    )
    genres = sp.csr_matrix((np.ones(N_ITEMS), (np.arange(N_ITEMS), genre)), shape=(N_ITEMS, N_GENRES))
    tags = sp.csr_matrix(
        (np.ones(N_ITEMS), (np.arange(N_ITEMS), (genre * 2 + np.arange(N_ITEMS) % 2))), shape=(N_ITEMS, 12)
    )
    features = sp.hstack([tags, genres], format="csr", dtype=np.float32)
    return train, test, features, {"tags": slice(0, 12), "genre": slice(12, 18)}


def cheap_params(**ranker: object) -> Params:
    """Generators that train in milliseconds, and a ranker small enough for a test."""
    settings = {"generators": CHEAP, "candidates": 20, "min_child_samples": 20, "rounds": 200} | ranker
    return Params.model_validate({"train": {"ranker": settings, "itemknn": {"neighbours": 20}}})


def test_candidates_are_every_generators_top_unplayed_items_with_scale_free_features() -> None:
    train, _, features, groups = taste_data()
    generators = {
        "most_popular": MostPopular().fit(train),
        "content": ContentNeighbours().fit(train, features),
    }
    context = PairContext.of(train, features, groups)
    users = np.arange(30)
    pairs = candidate_pairs(generators, context, users, n=10)
    names = feature_names(generators, context)
    assert pairs.features.shape == (len(pairs.items), len(names)) and np.isfinite(pairs.features).all()
    assert names[:4] == ["most_popular_z", "most_popular_rank", "content_z", "content_rank"]
    assert {"cosine_tags", "cosine_genre", "item_cold", "user_mainstreaminess"} <= set(names)
    for position, user in enumerate(users):
        mine = set(pairs.items[pairs.offsets[position] : pairs.offsets[position + 1]].tolist())
        assert not mine & set(train[user].indices.tolist())  # a played item is never a candidate
        for name, model in generators.items():
            scores = model.score(np.array([user]))[0]
            scores[train[user].indices] = -np.inf
            top = np.lexsort((np.arange(N_ITEMS), -scores))[:10]
            assert set(top.tolist()) <= mine, name
    ranks = pairs.features[:, names.index("most_popular_rank")]
    assert ranks.min() == 0 and ranks.max() == 10  # 10: not in that generator's list
    in_lists = pairs.features[:, names.index("in_lists")]
    assert np.array_equal(in_lists, (pairs.features[:, 1] < 10).astype(float) + (pairs.features[:, 3] < 10))


def test_batches_bound_memory_and_do_not_change_the_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    train, _, features, groups = taste_data()
    generators = {
        "itemknn": ItemKNN(Params().train.itemknn).fit(train),
        "most_popular": MostPopular().fit(train),
    }
    context = PairContext.of(train, features, groups)
    whole = candidate_pairs(generators, context, np.arange(N_USERS), n=15)
    monkeypatch.setattr(candidates_module, "CELLS", 2 * N_ITEMS * 7)  # 7 listeners a batch
    batched = candidate_pairs(generators, context, np.arange(N_USERS), n=15)
    assert np.array_equal(whole.items, batched.items) and np.array_equal(whole.offsets, batched.offsets)
    np.testing.assert_allclose(whole.features, batched.features, rtol=1e-6)


def test_the_ranker_learns_from_the_holdout_and_beats_its_weakest_generator() -> None:
    train, test, features, groups = taste_data()
    ranker = TwoStageRanker(cheap_params(), seed=3).fit(train, features, feature_groups=groups)
    settings = EvaluateParams(ks=[10])
    ours = evaluate(ranker.score, train, test, settings).metrics["ndcg@10"]
    generator_ndcg = {
        name: evaluate(model.score, train, test, settings).metrics["ndcg@10"]
        for name, model in ranker.generators.items()
    }
    assert ours > generator_ndcg["most_popular"] * 1.1, (ours, generator_ndcg)
    assert ours >= 0.9 * max(generator_ndcg.values()), (ours, generator_ndcg)
    assert ranker.best_rounds >= 1 and sum(ranker.importance.values()) == pytest.approx(1.0, abs=1e-3)
    # It ranks only candidates: every other item stays below every candidate, in the first generator's
    # order (distinct float32 scores, not a handful of buckets).
    scores = ranker.score(np.arange(20))
    first = next(iter(ranker.generators.values())).score(np.arange(20))
    for user, mine in enumerate(ranker.candidates_of(np.arange(20))):
        others = np.setdiff1d(np.arange(N_ITEMS), mine)
        assert scores[user, mine].min() > scores[user, others].max()
        order = np.argsort(-scores[user, others], kind="stable")
        assert np.all(np.diff(first[user, others][order]) <= 1e-6)
        assert len(np.unique(scores[user, others])) == len(np.unique(first[user, others]))


def test_the_same_seed_gives_the_same_ranker_and_its_file_holds_everything(tmp_path: Path) -> None:
    train, _, features, groups = taste_data(1)
    first = TwoStageRanker(cheap_params(), seed=5).fit(train, features, feature_groups=groups)
    again = TwoStageRanker(cheap_params(), seed=5).fit(train, features, feature_groups=groups)
    np.testing.assert_array_equal(first.score(np.arange(N_USERS)), again.score(np.arange(N_USERS)))
    first.save(tmp_path / "ranker.npz")
    loaded = load_recommender(tmp_path / "ranker.npz")
    assert isinstance(loaded, TwoStageRanker) and list(loaded.generators) == CHEAP
    np.testing.assert_array_equal(loaded.score(np.arange(N_USERS)), first.score(np.arange(N_USERS)))
    assert loaded.importance == first.importance and loaded.best_rounds == first.best_rounds
    assert loaded.session_aware and first.session_aware  # the default settings learn with sessions
    session = [SessionItems(np.array([3, 9]), np.array([5]))] + [NO_SESSION] * 4
    np.testing.assert_array_equal(loaded.score(np.arange(5), session), first.score(np.arange(5), session))
    # A fresh interpreter that imports only the loader reads it too (the class registers with the package).
    path = str(tmp_path / "ranker.npz")
    code = f"from recsys.models import load_recommender; print(type(load_recommender({path!r})).__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "TwoStageRanker"


def test_given_generators_score_and_a_validation_part_is_learned_from() -> None:
    train, test, features, groups = taste_data(2)
    valid = test  # any part the generators must not see while the ranker learns
    given = {"most_popular": MostPopular().fit(train + valid)}
    ranker = TwoStageRanker(cheap_params(generators=["most_popular", "content"]), seed=1)
    ranker.fit(train + valid, features, holdout=valid, generators=given, feature_groups=groups)
    assert ranker.generators["most_popular"] is given["most_popular"]
    assert isinstance(ranker.generators["content"], ContentNeighbours)  # fitted on every listen here


def test_unknown_generators_are_refused_when_the_settings_are_read() -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown or no generators"):
        Params.model_validate({"train": {"ranker": {"generators": ["bpr"]}}})
    with pytest.raises(pydantic.ValidationError, match="unknown or no generators"):
        Params.model_validate({"train": {"ranker": {"generators": ["ranker"]}}})


def test_a_holdout_with_nothing_to_learn_from_is_refused_with_the_reason() -> None:
    train, _, features, _ = taste_data()
    with pytest.raises(RecsysError, match="nothing to learn from"):
        TwoStageRanker(cheap_params(), seed=1).fit(train, features, holdout=sp.csr_matrix(train.shape))


def test_the_content_cosines_equal_a_dense_computation() -> None:
    train, _, features, groups = taste_data(4)
    context = PairContext.of(train, features, groups)
    users = np.arange(12)
    pairs = candidate_pairs({"most_popular": MostPopular().fit(train)}, context, users, n=8)
    names = feature_names({"most_popular": None}, context)
    profiles = context.profiles(users)
    for group in ("tags", "genre"):
        dense = context.groups[group].toarray()
        expected = np.einsum("pd,pd->p", profiles[group][pairs.rows], dense[pairs.items])
        np.testing.assert_allclose(
            pairs.features[:, names.index(f"cosine_{group}")], expected, rtol=1e-5, atol=1e-6
        )


def test_items_nobody_played_are_no_candidates_unless_asked() -> None:
    train, _, features, groups = taste_data(5)
    unplayed = np.array([3, 40, 77])
    train = sp.csr_matrix(train.multiply(~np.isin(np.arange(N_ITEMS), unplayed)[None, :]))
    train.eliminate_zeros()
    generators = {"content": ContentNeighbours().fit(train, features)}
    users = np.arange(N_USERS)
    blocked = candidate_pairs(
        generators, PairContext.of(train, features, groups, never_played=False), users, 30
    )
    assert not np.isin(blocked.items, unplayed).any()
    # Offered: the content generator (the one that reaches them) proposes them to someone.
    offered = candidate_pairs(
        generators, PairContext.of(train, features, groups, never_played=True), users, 30
    )
    assert np.isin(offered.items, unplayed).any()
    # The ranker's default: below every candidate, in the hybrid's (here the first generator's) order.
    ranker = TwoStageRanker(cheap_params(), seed=2).fit(train, features, feature_groups=groups)
    assert not ranker.settings.never_played
    scores = ranker.score(np.arange(10))
    for user, mine in enumerate(ranker.candidates_of(np.arange(10))):
        assert not np.isin(mine, unplayed).any()
        assert scores[user, unplayed].max() < scores[user, mine].min()


def _items(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_the_session_features_equal_a_dense_computation_and_are_missing_without_a_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train, _, features, groups = taste_data(6)
    context = PairContext.of(train, features, groups)
    users = np.arange(6)
    pairs = candidate_pairs({"most_popular": MostPopular().fit(train)}, context, users, n=12)
    sessions = [
        SessionItems(_items(4, 17), _items(30)),
        NO_SESSION,
        SessionItems(_items(), _items(8, 9)),  # only skips: no liked side
        SessionItems(_items(50), _items()),
        NO_SESSION,
        SessionItems(_items(1, 2, 3), _items(100)),
    ]
    got = session_columns(context, pairs, sessions)
    assert got.shape == (len(pairs.items), len(SESSION_FEATURES)) and got.dtype == np.float32
    played = (train.toarray() > 0).astype(np.float64)
    unit = played / np.maximum(np.linalg.norm(played, axis=0, keepdims=True), 1e-12)
    colisten = unit.T @ unit  # items x items cosines of who listened
    for pair, (row, item) in enumerate(zip(pairs.rows, pairs.items, strict=True)):
        session = sessions[row]
        for column, side in ((0, session.liked), (1, session.skipped)):
            if len(side):
                assert got[pair, column] == pytest.approx(colisten[item, side].mean(), abs=1e-5)
            else:
                assert np.isnan(got[pair, column])
        if len(session.liked):
            cosines = []
            for block in context.groups.values():
                dense = block.toarray()
                profile = dense[session.liked].sum(axis=0)
                cosines.append(dense[item] @ profile / max(np.linalg.norm(profile), 1e-12))
            assert got[pair, 2] == pytest.approx(np.mean(cosines), abs=1e-5)
        else:
            assert np.isnan(got[pair, 2])
    # Batches of listeners bound the dense profiles and change nothing.
    monkeypatch.setattr(candidates_module, "CELLS", 2 * N_USERS)
    np.testing.assert_allclose(session_columns(context, pairs, sessions), got, rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="2 sessions for 6 listeners"):
        session_columns(context, pairs, sessions[:2])


def drifting_data(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, dict[str, slice]]:
    """Listeners who played two genres and, lately (the validation part), four artists of a third: what a
    session tells and their history does not."""
    rng = np.random.default_rng(seed)
    genre = np.arange(N_ITEMS) % N_GENRES
    train = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    recent = np.zeros_like(train)
    for user in range(N_USERS):
        old, new = np.split(rng.choice(N_GENRES, size=3, replace=False), [2])
        train[user, rng.choice(np.flatnonzero(np.isin(genre, old)), size=12, replace=False)] = 1
        recent[user, rng.choice(np.flatnonzero(genre == new[0]), size=4, replace=False)] = 1
    _, _, features, groups = taste_data(seed)
    return sp.csr_matrix(train), sp.csr_matrix(recent), features, groups


def test_a_ranker_learned_with_sessions_moves_a_list_toward_what_the_session_liked() -> None:
    train, recent, features, groups = drifting_data(7)
    params = cheap_params(session_share=1.0, session_candidates=20)
    ranker = TwoStageRanker(params, seed=2).fit(
        train + recent, features, holdout=recent, feature_groups=groups
    )
    assert ranker.session_aware
    assert sum(ranker.importance[name] for name in SESSION_FEATURES) > 0.1, ranker.importance
    genre = np.arange(N_ITEMS) % N_GENRES
    played = (train + recent).toarray() > 0
    gained = []
    for user in range(40):
        # A genre the listener never played: three of its artists liked in the session.
        new = int(np.argmin(np.bincount(genre[played[user]], minlength=N_GENRES)))
        liked = np.flatnonzero(genre == new)[:3]
        without = ranker.score(np.array([user]))[0]
        within = ranker.score(np.array([user]), [SessionItems(liked, _items())])[0]
        for scores in (without, within):
            scores[played[user] | np.isin(np.arange(N_ITEMS), liked)] = -np.inf
        top = [np.argsort(-scores, kind="stable")[:10] for scores in (without, within)]
        gained.append(int((genre[top[1]] == new).sum()) - int((genre[top[0]] == new).sum()))
    assert np.mean(gained) >= 3.0, gained
    # No session: the same scores as a session-less call; a ranker learned without sessions reads none.
    np.testing.assert_array_equal(ranker.score(np.arange(5)), ranker.score(np.arange(5), [NO_SESSION] * 5))
    plain = TwoStageRanker(cheap_params(session_share=0.0), seed=2).fit(
        train + recent, features, holdout=recent, feature_groups=groups
    )
    assert not plain.session_aware and not set(SESSION_FEATURES) & set(plain.importance)
    np.testing.assert_array_equal(
        plain.score(np.arange(5)), plain.score(np.arange(5), [SessionItems(_items(1), _items(2))] * 5)
    )


def test_simulated_sessions_never_leak_a_label_and_their_items_leave_the_candidates() -> None:
    train, recent, features, groups = drifting_data(8)
    ranker = TwoStageRanker(cheap_params(session_share=1.0, session_likes=2), seed=4)
    context = PairContext.of(train, features, groups)
    generators = {
        "most_popular": MostPopular().fit(train),
        "itemknn": ItemKNN(Params().train.itemknn).fit(train),
    }
    users = np.arange(60)
    pairs = candidate_pairs(generators, context, users, n=20)
    first = pairs.features[:, feature_names(generators, context).index("most_popular_rank")]
    sessions = ranker._simulated_sessions(pairs, recent, first)
    assert sum(len(s.liked) > 0 for s in sessions) > 30 and sum(len(s.skipped) > 0 for s in sessions) > 30
    for row, (user, session) in enumerate(zip(users.tolist(), sessions, strict=True)):
        held = set(recent[user].indices.tolist())
        assert set(session.liked.tolist()) <= held and held - set(session.liked.tolist())  # one stays a label
        mine = pairs.items[pairs.offsets[row] : pairs.offsets[row + 1]]
        ranks = first[pairs.offsets[row] : pairs.offsets[row + 1]]
        shown = set(mine[np.argsort(ranks, kind="stable")[:10]].tolist())
        assert not set(session.skipped.tolist()) & held and set(session.skipped.tolist()) <= shown
    taken = ranker_module._session_pairs(pairs, sessions, N_ITEMS)
    for row, session in enumerate(sessions):
        part = slice(pairs.offsets[row], pairs.offsets[row + 1])
        reacted = np.concatenate([session.liked, session.skipped])
        np.testing.assert_array_equal(taken[part], np.isin(pairs.items[part], reacted))
    # The sessions' co-listened candidates: the same whatever the batches.
    whole = candidate_pairs(generators, context, users, 20, sessions, 15)
    assert len(whole.items) > len(pairs.items)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(candidates_module, "CELLS", 3 * N_ITEMS * 5)
        batched = candidate_pairs(generators, context, users, 20, sessions, 15)
        np.testing.assert_array_equal(whole.items, batched.items)
        columns = session_columns(context, whole, sessions)
    np.testing.assert_allclose(columns, session_columns(context, whole, sessions), rtol=1e-6, equal_nan=True)


def test_a_served_sessions_items_are_liked_or_skipped_by_their_summed_weights() -> None:
    session = SessionItems.of(np.array([3, 5, 3, 7, 9, 9]), np.array([0.5, 1.0, -1.0, -0.3, 1.0, -1.0]))
    assert session.liked.tolist() == [5] and session.skipped.tolist() == [3, 7]  # 9: a like undone
