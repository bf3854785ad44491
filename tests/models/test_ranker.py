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
from recsys.models.baselines import ItemKNN, MostPopular
from recsys.models.candidates import ContentNeighbours, PairContext, candidate_pairs, feature_names
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
