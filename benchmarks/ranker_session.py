"""The two-stage ranker's session features, measured offline on the real data beside the hybrid's fold-in.

``python -m benchmarks.ranker_session`` replays the closed loop's first two sessions for the test listeners,
for the train stage's ranker (``models/ranker.npz``) and hybrid (``models/lightfm_hybrid.npz``). Session 1
shows each listener a model's top ``k`` as trained; they like the items of their held-out (test) artists
and skip the others. Session 2 is, for the ranker, its list as trained without the items shown (what a
ranker without session features serves) and its list with the session's features (the service's
``ServingState.session_scores``); for the hybrid, its list moved by the same reactions with the served
``session`` settings (``params.yaml``). A hit is a held-out artist not liked yet in session 2's top ``k``.
Each model's listeners are those with a held-out artist left after its own session 1. Also reported: the
ranker's nDCG@k without a session on every test listener, to show learning with sessions costs nothing
there.

The held-out artists of this split are a random part of each listener's listens, so a session says little
their history does not. ``new_taste`` measures the other case: each test listener likes, in their session,
three artists of another (random) listener's training history that they never played, and a hit is the next
list holding one of that other listener's held-out artists (which no model saw them listen to), as trained
against within the session, for both models. Writes ``bench/results/ranker_session.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys import stages
from recsys.config import load_params
from recsys.io import write_json
from recsys.models import LightFMRecommender, load_recommender
from recsys.models.candidates import SessionItems
from recsys.models.ranker import TwoStageRanker
from recsys.models.scorer import top_k_from_scores
from recsys.serving.session import adapt

RESULTS = Path("bench/results/ranker_session.json")
BATCH = 256
SINGLE = 100
"""Listeners whose session list is also timed one at a time (a request's cost on the service)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    split, _ = stages.training_inputs(args.data_root / "features", args.data_root / "split")
    ranker = load_recommender(args.models_dir / "ranker.npz")
    if not isinstance(ranker, TwoStageRanker):
        raise SystemExit(f"{args.models_dir / 'ranker.npz'} is not a two-stage ranker")
    hybrid = LightFMRecommender.load(args.models_dir / "lightfm_hybrid.npz")
    train, test = split.train_full.tocsr(), split.test.tocsr()
    users = np.flatnonzero(test.getnnz(axis=1) > 0)
    k = args.k
    results = {
        "listeners": len(users),
        "k": k,
        "session_aware": ranker.session_aware,
        "ranker": _ranker_sessions(ranker, train, test, users, k),
        "hybrid": _hybrid_sessions(hybrid, train, test, users, k),
        "new_taste": _new_taste(ranker, hybrid, train, test, users, k),
        "one_listener_ms": _one_listener_ms(ranker, train, users[:SINGLE]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    return 0


def _held(test: sp.csr_matrix, user: int) -> set[int]:
    return set(test.indices[test.indptr[user] : test.indptr[user + 1]].tolist())


def _reactions(shown: np.ndarray, held: set[int]) -> tuple[np.ndarray, np.ndarray]:
    liked = np.array(sorted(set(shown.tolist()) & held), dtype=np.int64)
    skipped = np.array(sorted(set(shown.tolist()) - held), dtype=np.int64)
    return liked, skipped


def _ndcg(top: np.ndarray, held: set[int], k: int) -> float:
    gains = [1.0 / np.log2(rank + 2) for rank, item in enumerate(top[:k].tolist()) if item in held]
    ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(len(held), k)))
    return float(sum(gains) / ideal) if ideal else 0.0


def _ranker_sessions(
    ranker: TwoStageRanker, train: sp.csr_matrix, test: sp.csr_matrix, users: np.ndarray, k: int
) -> dict[str, object]:
    plain: list[int] = []
    session: list[int] = []
    ndcg: list[float] = []
    seconds = 0.0
    for start in range(0, len(users), BATCH):
        batch = users[start : start + BATCH]
        scores = ranker.score(batch)
        first, _ = top_k_from_scores(scores.copy(), k, train[batch])
        sessions, rows = [], []
        for row, user in enumerate(batch.tolist()):
            held = _held(test, user)
            ndcg.append(_ndcg(first[row], held, k))
            if not held - set(first[row].tolist()):
                continue
            sessions.append(SessionItems(*_reactions(first[row], held)))
            rows.append(row)
        if not rows:
            continue
        chosen = batch[rows]
        shown = sp.csr_matrix(
            (np.ones(len(rows) * k), first[rows].ravel(), np.arange(0, len(rows) * k + 1, k)),
            shape=(len(rows), train.shape[1]),
        )
        exclude = (train[chosen] + shown).tocsr()
        again, _ = top_k_from_scores(scores[rows], k, exclude)
        timer = time.perf_counter()
        moved, _ = top_k_from_scores(ranker.score(chosen, sessions), k, exclude)
        seconds += time.perf_counter() - timer
        for row, user in enumerate(chosen.tolist()):
            left = _held(test, user) - set(first[rows[row]].tolist())
            plain.append(int(bool(left & set(again[row].tolist()))))
            session.append(int(bool(left & set(moved[row].tolist()))))
    return {
        "ndcg_without_session": round(float(np.mean(ndcg)), 4),
        "session_listeners": len(session),
        "hit_rate": {
            "as trained, shown left out": round(float(np.mean(plain)), 4),
            "session features": round(float(np.mean(session)), 4),
        },
        "gain": _paired(session, plain),
        "ms_per_listener_with_session": round(1000 * seconds / max(len(session), 1), 2),
    }


def _hybrid_sessions(
    hybrid: LightFMRecommender,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    users: np.ndarray,
    k: int,
) -> dict[str, object]:
    settings = load_params().session
    scorer = hybrid.scorer()
    embeddings = scorer.item_vectors[:, :-2]
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    first, _ = scorer.top_k(users, k, train)
    plain: list[int] = []
    adapted: list[int] = []
    for row, user in enumerate(users.tolist()):
        held = _held(test, user)
        shown = first[row]
        left = held - set(shown.tolist())
        if not left:
            continue
        known = train.indices[train.indptr[user] : train.indptr[user + 1]]
        exclude = np.concatenate([known, shown])
        weights = np.array([settings.like if i in held else settings.skip for i in shown.tolist()])
        step = settings.step / max(len(known), 1)
        for vector, hits in (
            (scorer.user_vectors[user], plain),
            (adapt(scorer.user_vectors[user], unit, shown, weights, step), adapted),
        ):
            scores = (scorer.item_vectors @ vector)[np.newaxis, :]
            scores[0, exclude] = -np.inf
            top, _ = top_k_from_scores(scores, k)
            hits.append(int(bool(left & set(top[0].tolist()))))
    return {
        "session_listeners": len(adapted),
        "hit_rate": {
            "as trained, shown left out": round(float(np.mean(plain)), 4),
            "adapted (served session settings)": round(float(np.mean(adapted)), 4),
        },
        "gain": _paired(adapted, plain),
    }


def _new_taste(
    ranker: TwoStageRanker,
    hybrid: LightFMRecommender,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    users: np.ndarray,
    k: int,
) -> dict[str, object]:
    settings = load_params().session
    scorer = hybrid.scorer()
    embeddings = scorer.item_vectors[:, :-2]
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(0)
    listeners = np.flatnonzero((train.getnnz(axis=1) >= 3) & (test.getnnz(axis=1) >= 3))
    chosen, sessions, targets = [], [], []
    for user in users.tolist():
        mine = set(train.indices[train.indptr[user] : train.indptr[user + 1]].tolist())
        other = int(rng.choice(listeners))
        theirs = [
            i for i in train.indices[train.indptr[other] : train.indptr[other + 1]].tolist() if i not in mine
        ]
        # What they go on to like: their held-out artists, which no model saw them listen to (their training
        # row would have linked what was liked to what is found).
        later = set(test.indices[test.indptr[other] : test.indptr[other + 1]].tolist()) - mine
        if other == user or len(theirs) < 3 or not later:
            continue
        liked = np.sort(rng.choice(theirs, size=3, replace=False)).astype(np.int64)
        chosen.append(user)
        sessions.append(SessionItems(liked, np.empty(0, np.int64)))
        targets.append(later)
    found: dict[str, list[float]] = {
        "ranker as trained": [],
        "ranker, session features": [],
        "hybrid as trained": [],
        "hybrid, adapted": [],
    }
    for start in range(0, len(chosen), BATCH):
        batch = np.array(chosen[start : start + BATCH])
        part = sessions[start : start + BATCH]
        liked = sp.csr_matrix(
            (
                np.ones(3 * len(part)),
                np.concatenate([s.liked for s in part]),
                np.arange(0, 3 * len(part) + 1, 3),
            ),
            shape=(len(part), train.shape[1]),
        )
        exclude = (train[batch] + liked).tocsr()
        plain, _ = top_k_from_scores(ranker.score(batch), k, exclude)
        moved, _ = top_k_from_scores(ranker.score(batch, part), k, exclude)
        vectors = scorer.user_vectors[batch]
        adapted = np.stack(
            [
                adapt(
                    vectors[row],
                    unit,
                    session.liked,
                    np.full(3, settings.like),
                    settings.step / max(train.indptr[user + 1] - train.indptr[user], 1),
                )
                for row, (user, session) in enumerate(zip(batch.tolist(), part, strict=True))
            ]
        )
        as_trained, _ = top_k_from_scores(vectors @ scorer.item_vectors.T, k, exclude)
        folded, _ = top_k_from_scores(adapted @ scorer.item_vectors.T, k, exclude)
        for row in range(len(batch)):
            target = targets[start + row]
            for key, tops in zip(found, (plain, moved, as_trained, folded), strict=True):
                found[key].append(float(bool(target & set(tops[row].tolist()))))
    return {
        "listeners": len(chosen),
        "hit_rate": {key: round(float(np.mean(values)), 4) for key, values in found.items()},
    }


def _one_listener_ms(ranker: TwoStageRanker, train: sp.csr_matrix, users: np.ndarray) -> dict[str, float]:
    """A session list's model work on the service: one listener's scores with a session of two liked and
    three skipped artists (their first unplayed candidates), timed one listener at a time."""
    times = []
    for user in users.tolist():
        ranked, _ = top_k_from_scores(ranker.score(np.array([user])), 5, train[[user]])
        session = [SessionItems(np.sort(ranked[0, :2]), np.sort(ranked[0, 2:5]))]
        start = time.perf_counter()
        ranker.score(np.array([user]), session)
        times.append(1000 * (time.perf_counter() - start))
    return {
        "median": round(float(np.median(times)), 2),
        "p90": round(float(np.percentile(times, 90)), 2),
        "listeners": len(times),
    }


def _paired(treated: list[int], control: list[int]) -> dict[str, float]:
    """The mean per-listener difference of two hit lists with its normal 95 % interval."""
    difference = np.asarray(treated, dtype=np.float64) - np.asarray(control, dtype=np.float64)
    if not len(difference):
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan")}
    half = 1.96 * float(difference.std(ddof=1)) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
    mean = float(difference.mean())
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4)}


if __name__ == "__main__":
    raise SystemExit(main())
