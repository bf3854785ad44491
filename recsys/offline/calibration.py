"""Calibrated re-ranking (Steck, RecSys 2018): each listener's list keeps the genre and popularity mix of
their own listening.

A listener's *target* is the mix of their listened items: over genres (the catalogue's most common genre and
tag columns, each item's weights normalised) and over popularity tiers (head, middle, tail: the most listened
items holding the first third of all listens, the next third, the rest). A list's mix is the same average
over its items. Miscalibration is the Kullback-Leibler divergence of the list's mix from the target (the
list's mix smoothed with ``ALPHA`` of the target, so it is finite), summed over genres and tiers.

:func:`calibrate` builds a list greedily from the model's best ``candidates``: each place takes the item that
maximises ``(1 - strength) * (sum of the list's scores) - strength * miscalibration(list)`` (scores scaled to
[0, 1] over the candidates), so strength 0 is the model's order and larger strengths trade score for a mix
closer to the listener's own. A niche listener's target is mostly tail: their list gets more of it.

Examples
--------
>>> genres = np.eye(2, dtype=np.float32)[[0, 0, 1]]  # items 0 and 1 of genre a, item 2 of genre b
>>> cats = Categories(genres=genres, tiers=np.array([0, 0, 2]), names=("a", "b"))
>>> target = cats.target(np.array([0, 2]))  # one item of each genre, a head and a tail item
>>> calibrate(np.array([0, 1, 2]), np.array([1.0, 0.9, 0.1]), cats, target, 0.0, 2).tolist()
[0, 1]
>>> calibrate(np.array([0, 1, 2]), np.array([1.0, 0.9, 0.1]), cats, target, 0.9, 2).tolist()
[0, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import EvaluateParams
from recsys.models.scorer import MISSING, top_k_from_scores
from recsys.offline.evaluation import EvaluationResult, evaluate_variants
from recsys.offline.metrics import head_items, ranking_metrics
from recsys.offline.popularity import PAD_ITEM, popularity_lift

ALPHA = 0.01
"""Share of the target mixed into a list's mix before the divergence (Steck's smoothing)."""
TIERS = ("head", "middle", "tail")
GENRE_PREFIXES = ("genre:", "tag:")


@dataclass(frozen=True)
class Target:
    """A listener's mix: over genres (zeros when none of their items has one) and popularity tiers."""

    genres: np.ndarray
    tiers: np.ndarray


@dataclass(frozen=True)
class Categories:
    """Each item's genre weights (rows summing to 1, or 0 without a genre) and popularity tier."""

    genres: np.ndarray
    tiers: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def of(
        cls,
        feature_names: Sequence[str],
        features: sp.spmatrix,
        popularity: np.ndarray,
        n_genres: int = 30,
    ) -> Categories:
        """The ``n_genres`` genre and tag columns most items carry, and the popularity tiers of the items.

        Memory: ``n_items x n_genres`` float32 (18 MB at 150,000 items and 30 genres).
        """
        columns = [i for i, name in enumerate(feature_names) if name.startswith(GENRE_PREFIXES)]
        matrix = sp.csc_matrix(features)[:, columns]
        counts = np.asarray((matrix > 0).sum(axis=0)).ravel()
        chosen = np.argsort(-counts, kind="stable")[:n_genres]
        chosen = chosen[counts[chosen] > 0]
        weights = np.abs(matrix[:, chosen].toarray()).astype(np.float32)
        totals = weights.sum(axis=1, keepdims=True)
        genres = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
        names = tuple(feature_names[columns[c]] for c in chosen)
        return cls(genres, popularity_tiers(popularity), names)

    def target(self, items: np.ndarray) -> Target:
        """The mix of ``items`` (a listener's history, or a list)."""
        return Target(
            _mean_mix(self.genres[items]),
            np.bincount(self.tiers[items], minlength=len(TIERS)) / max(len(items), 1),
        )

    def miscalibration(self, target: Target, items: np.ndarray) -> float:
        """KL divergence of the mix of ``items`` from ``target``, genres plus tiers."""
        mix = self.target(items)
        return kl(target.genres, mix.genres) + kl(target.tiers, mix.tiers)


def popularity_tiers(popularity: np.ndarray) -> np.ndarray:
    """0 (head), 1 (middle) or 2 (tail) per item: the most listened items holding the first third of all
    listens, those holding the next third, the rest."""
    head = head_items(popularity, 1 / 3)
    middle = head_items(popularity, 2 / 3) & ~head
    return np.where(head, 0, np.where(middle, 1, 2)).astype(np.int64)


def kl(target: np.ndarray, mix: np.ndarray, alpha: float = ALPHA) -> float:
    """``KL(target || (1 - alpha) mix + alpha target)`` over the target's non-zero entries (0: no target).

    Examples
    --------
    >>> round(kl(np.array([0.5, 0.5]), np.array([0.5, 0.5])), 6)
    0.0
    >>> kl(np.array([1.0, 0.0]), np.array([0.0, 1.0])) > 4
    True
    """
    present = target > 0
    if not present.any():
        return 0.0
    p = target[present]
    q = (1 - alpha) * mix[present] + alpha * p
    return float(np.sum(p * np.log(p / q)))


def calibrate(
    candidates: np.ndarray,
    scores: np.ndarray,
    cats: Categories,
    target: Target,
    strength: float,
    k: int,
    tier_weight: float = 1.0,
) -> np.ndarray:
    """The ``k`` of ``candidates`` (best first) chosen greedily for score and calibration (module doc);
    ``tier_weight`` weighs the popularity tiers' divergence against the genres'.

    ``strength`` 0 returns the ``k`` best-scored candidates in score order.
    """
    k = min(k, len(candidates))
    if strength == 0 or k == 0:
        return candidates[np.argsort(-scores, kind="stable")[:k]]
    low, high = float(scores.min()), float(scores.max())
    scaled = (scores - low) / (high - low) if high > low else np.ones_like(scores, dtype=np.float64)
    genres, tiers = cats.genres[candidates], np.eye(len(TIERS))[cats.tiers[candidates]]
    has_genre = genres.sum(axis=1)
    p_genre, p_tier = target.genres, target.tiers
    sum_genre, sum_tier = np.zeros(genres.shape[1]), np.zeros(len(TIERS))
    genre_items, total = 0.0, 0.0
    free = np.ones(len(candidates), dtype=bool)
    chosen = []
    for placed in range(k):
        with np.errstate(invalid="ignore", divide="ignore"):
            mix_genre = (sum_genre + genres) / np.maximum(genre_items + has_genre, 1e-12)[:, np.newaxis]
        mix_tier = (sum_tier + tiers) / (placed + 1)
        cost = _kl_rows(p_genre, mix_genre)
        if tier_weight:
            cost = cost + tier_weight * _kl_rows(p_tier, mix_tier)
        value = (1 - strength) * (total + scaled) - strength * cost
        value[~free] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        free[best] = False
        sum_genre += genres[best]
        sum_tier += tiers[best]
        genre_items += has_genre[best]
        total += scaled[best]
    return candidates[np.array(chosen, dtype=np.int64)]


def _kl_rows(target: np.ndarray, mixes: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """:func:`kl` of ``target`` against each row of ``mixes``."""
    present = target > 0
    if not present.any():
        return np.zeros(len(mixes))
    p = target[present]
    q = (1 - alpha) * mixes[:, present] + alpha * p
    return np.sum(p * np.log(p / q), axis=1)


def _mean_mix(rows: np.ndarray) -> np.ndarray:
    """The mean of the rows that carry a genre (zeros when none does)."""
    carrying = rows.sum(axis=1) > 0
    if not carrying.any():
        return np.zeros(rows.shape[1])
    return rows[carrying].mean(axis=0)


def _history(train: sp.csr_matrix, user: int) -> np.ndarray:
    """The items ``user`` listened to in ``train`` (CSR)."""
    return train.indices[train.indptr[user] : train.indptr[user + 1]]


def list_miscalibration(
    top: np.ndarray, train: sp.csr_matrix, users: np.ndarray, cats: Categories
) -> np.ndarray:
    """Per user: the miscalibration of their list (a row of ``top``, padding ignored) against their own."""
    train = sp.csr_matrix(train)
    return np.array(
        [
            cats.miscalibration(cats.target(_history(train, u)), row[row != PAD_ITEM])
            for u, row in zip(users.tolist(), top, strict=True)
        ]
    )


def calibrated_lists(
    score_fn: Callable[[np.ndarray], np.ndarray],
    train: sp.csr_matrix,
    users: np.ndarray,
    cats: Categories,
    strengths: Sequence[float],
    k: int,
    n_candidates: int = 100,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 256,
    tier_weight: float = 1.0,
) -> dict[float, np.ndarray]:
    """Every user's calibrated top ``k`` at each strength, from the model's best ``n_candidates`` unlistened
    items (after ``transform`` of the scores, e.g. a popularity re-ranking). Memory: one batch of scores."""
    lists = {float(s): np.full((len(users), k), PAD_ITEM, dtype=np.int64) for s in strengths}
    train = sp.csr_matrix(train)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.asarray(score_fn(batch), dtype=np.float64)
        if transform is not None:
            scores = transform(scores)
        top, top_scores = top_k_from_scores(scores, n_candidates, train[batch])
        for row, user in enumerate(batch.tolist()):
            keep = top[row] != MISSING
            candidates, values = top[row][keep], top_scores[row][keep]
            target = cats.target(_history(train, user))
            for strength, out in lists.items():
                chosen = calibrate(candidates, values, cats, target, strength, k, tier_weight)
                out[start + row, : len(chosen)] = chosen
    return lists


def per_user_metrics(
    top: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix, users: np.ndarray, cats: Categories, k: int
) -> dict[str, np.ndarray]:
    """Per user: ``ndcg@k``, ``recall@k``, ``miscalibration`` (KL of the list from their listening) and
    ``popularity_lift`` (the list's mean popularity over their own)."""
    ranked = ranking_metrics(top, test, users, [k])
    return {
        f"ndcg@{k}": ranked[f"ndcg@{k}"],
        f"recall@{k}": ranked[f"recall@{k}"],
        "miscalibration": list_miscalibration(top, train, users, cats),
        "popularity_lift": popularity_lift(top, train, users),
    }


def calibrated_score_fn(
    score_fn: Callable[[np.ndarray], np.ndarray],
    train: sp.csr_matrix,
    cats: Categories,
    strength: float,
    n_candidates: int = 100,
    depth: int = 20,
    tier_weight: float = 1.0,
) -> Callable[[np.ndarray], np.ndarray]:
    """A score function whose ranking is the calibrated list: each user's first ``depth`` places are chosen
    by :func:`calibrate` from their best ``n_candidates`` unlistened items (so any cut-off up to ``depth``
    reads the calibrated list), the other candidates follow in score order, every other item keeps its order
    below them. Strength 0 returns ``score_fn`` itself.

    Lets the offline protocol (:func:`recsys.offline.evaluation.evaluate`, the gate's measurement of a model
    as served) measure a calibrated model as it measures any other.
    """
    if strength == 0:
        return score_fn
    train = sp.csr_matrix(train)

    def scores(users: np.ndarray) -> np.ndarray:
        raw = np.asarray(score_fn(users), dtype=np.float64)
        top, top_scores = top_k_from_scores(raw, n_candidates, train[users])
        out = raw.copy()
        finite = raw[np.isfinite(raw)]
        ceiling = float(finite.max()) + 1.0 if finite.size else 1.0
        for row, user in enumerate(np.asarray(users).tolist()):
            keep = top[row] != MISSING
            candidates = top[row][keep]
            target = cats.target(_history(train, user))
            first = calibrate(candidates, top_scores[row][keep], cats, target, strength, depth, tier_weight)
            order = np.concatenate([first, candidates[~np.isin(candidates, first)]])
            out[row, order] = ceiling + np.arange(len(order), 0, -1, dtype=np.float64)
        return out

    return scores


@dataclass(frozen=True)
class Measured:
    """One way of serving the model, measured: the protocol's result, its lists, and per user the
    miscalibration and popularity lift of their list."""

    result: EvaluationResult
    users: np.ndarray
    miscalibration: np.ndarray
    lift: np.ndarray


def measure(
    score_fn: Callable[[np.ndarray], np.ndarray],
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    params: EvaluateParams,
    groups: Mapping[str, np.ndarray],
    cats: Categories,
) -> Measured:
    """``score_fn`` through the offline protocol, plus each evaluated user's miscalibration and lift."""
    one = evaluate_variants(score_fn, lambda raw: iter([(0, raw)]), train, test, params, groups)[0]
    k = params.primary_k
    top = one.top_k[:, :k]
    miscalibrated = list_miscalibration(top, train, one.users, cats)
    return Measured(one.result, one.users, miscalibrated, popularity_lift(top, train, one.users))


def summary(
    measured: Measured, rows: np.ndarray, groups: Mapping[str, np.ndarray], k: int
) -> dict[str, float]:
    """nDCG@k, miscalibration and popularity lift over the evaluated users ``rows`` selects (a boolean mask
    over ``measured.users``), overall and per group; the niche / mainstream nDCG ratio when both exist."""
    ndcg = np.asarray(measured.result.per_user[f"ndcg@{k}"], dtype=np.float64)
    out: dict[str, float] = {}
    selections = {"": rows} | {f"/{name}": rows & np.isin(measured.users, m) for name, m in groups.items()}
    for suffix, selected in selections.items():
        out[f"ndcg@{k}{suffix}"] = _mean(ndcg[selected])
        out[f"miscalibration{suffix}"] = _mean(measured.miscalibration[selected])
        out[f"popularity_lift{suffix}"] = _mean(measured.lift[selected])
    if out.get(f"ndcg@{k}/mainstream", 0) > 0 and f"ndcg@{k}/niche" in out:
        out["niche_ratio"] = out[f"ndcg@{k}/niche"] / out[f"ndcg@{k}/mainstream"]
    return out


def tuning_half(users: np.ndarray, seed: int) -> np.ndarray:
    """A boolean mask drawing half the ``users`` (by ``seed``): the listeners strengths are tuned on; the
    others report the chosen strength's effect."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(users), dtype=bool)
    mask[rng.permutation(len(users))[: len(users) // 2]] = True
    return mask


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


@dataclass(frozen=True)
class Calibrated:
    """How a model is served calibrated: the strength and the settings it was measured with (packaged with
    the model as its metadata's ``calibration``)."""

    strength: float
    candidates: int = 100
    genres: int = 30
    tier_weight: float = 0.0

    @classmethod
    def from_metadata(cls, raw: Mapping[str, Any] | None) -> Calibrated | None:
        """The packaged setting; None when the model is not served calibrated."""
        if not raw or not float(raw.get("strength", 0.0)) > 0:
            return None
        return cls(
            float(raw["strength"]),
            int(raw.get("candidates", 100)),
            int(raw.get("genres", 30)),
            float(raw.get("tier_weight", 0.0)),
        )

    def metadata(self) -> dict[str, float | int]:
        """What :meth:`from_metadata` reads back."""
        return {
            "strength": self.strength,
            "candidates": self.candidates,
            "genres": self.genres,
            "tier_weight": self.tier_weight,
        }

    def categories(
        self, feature_names: Sequence[str], features: sp.spmatrix, popularity: np.ndarray
    ) -> Categories:
        """The catalogue's categories as this setting counts them."""
        return Categories.of(feature_names, features, popularity, self.genres)

    def order(
        self, candidates: np.ndarray, scores: np.ndarray, cats: Categories, history: np.ndarray, k: int
    ) -> np.ndarray:
        """The calibrated ``k`` of ``candidates`` (best first) for a listener of ``history``."""
        return calibrate(candidates, scores, cats, cats.target(history), self.strength, k, self.tier_weight)

    def score_fn(
        self, score_fn: Callable[[np.ndarray], np.ndarray], train: sp.csr_matrix, cats: Categories, depth: int
    ) -> Callable[[np.ndarray], np.ndarray]:
        """:func:`calibrated_score_fn` with this setting."""
        return calibrated_score_fn(
            score_fn, train, cats, self.strength, self.candidates, depth, self.tier_weight
        )
