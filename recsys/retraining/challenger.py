"""A challenger from feedback, measured fairly: aligned with the champion's split, no test pair trained on.

The retraining flow's ML steps, in order: the split aligned with the champion's users
(:func:`align_split`), events on the fixed test split or on cold-start items dropped
(:func:`without_evaluation_pairs`), each user's latest events held out (:func:`split_feedback_holdout`),
the rest merged and retrained (:mod:`recsys.retraining.merge`), then challenger and champion measured on the
same rows: the test split and the held-out likes (:func:`liked_hit_rate`). :func:`retrain_on_feedback`
runs them all; nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import Col
from recsys.config import Params
from recsys.errors import RecsysError
from recsys.feedback.erasure_steps import anonymise_ids, erased_users, feedback_record, without_users
from recsys.models import LightFMRecommender, Recommender
from recsys.offline.calibration import Calibrated
from recsys.offline.features import ItemFeatures
from recsys.offline.served import Served, measure_as_served
from recsys.offline.split import Split
from recsys.offline.uncertainty import Lead, lead_of
from recsys.retraining.merge import merge_feedback, retrain
from recsys.specs import HYBRID, RANKER

ScoreFn = Callable[[np.ndarray], np.ndarray]


def without_evaluation_pairs(events: pd.DataFrame, split: Split) -> tuple[pd.DataFrame, int]:
    """Drop events on a test pair or a cold-start item of ``split``; return the rest and how many went.

    Training on them would leak the fixed test split (and the cold-start protocol) into the challenger,
    so the gate would compare a model that has seen the answers with one that has not.
    """
    user_index = pd.Index(split.user_ids)
    item_index = pd.Index(split.item_ids)
    rows = user_index.get_indexer(events[Col.USER])
    cols = item_index.get_indexer(events[Col.ITEM])
    known = (rows >= 0) & (cols >= 0)
    blocked = np.zeros(len(events), dtype=bool)
    if known.any():
        in_test = np.asarray(split.test[rows[known], cols[known]]).ravel() != 0
        blocked[known] = in_test | np.isin(cols[known], split.cold_items)
    return events[~blocked], int(blocked.sum())


def extend_split(split: Split, merged: sp.csr_matrix, new_users: list[str]) -> Split:
    """The split with ``merged`` as its training part and empty rows for ``new_users``.

    ``valid`` is folded into ``train`` (``merged`` grew from ``train_full``), ``test`` and ``cold`` keep
    their pairs. The registry packages a model from such a split: its known listens then include the
    feedback.
    """
    if merged.shape != (len(split.user_ids) + len(new_users), len(split.item_ids)):
        raise ValueError(f"merged matrix {merged.shape} does not fit the split plus {len(new_users)} users")
    empty = sp.csr_matrix((len(new_users), merged.shape[1]), dtype=np.float32)

    def grown(part: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix(sp.vstack([part, empty]), dtype=np.float32)

    return Split(
        user_ids=[*split.user_ids, *new_users],
        item_ids=list(split.item_ids),
        train=sp.csr_matrix(merged, dtype=np.float32),
        valid=sp.csr_matrix(merged.shape, dtype=np.float32),
        test=grown(split.test),
        cold=grown(split.cold),
        cold_items=split.cold_items,
    )


def align_split(split: Split, user_ids: list[str]) -> Split:
    """``split`` with empty rows for the users a retrained champion has beyond it (appended by feedback).

    Raises
    ------
    ValueError
        ``split.user_ids`` is not a prefix of ``user_ids``: the champion was trained on another split.
    """
    n_users = len(split.user_ids)
    if list(user_ids[:n_users]) != split.user_ids:
        raise ValueError("the split's users are not the first users of the model")
    extra = list(user_ids[n_users:])
    padding = sp.csr_matrix((len(extra), len(split.item_ids)), dtype=np.float32)
    return extend_split(split, sp.csr_matrix(sp.vstack([split.train_full, padding])), extra)


def champion_training(known: sp.csr_matrix, split: Split) -> sp.csr_matrix:
    """The data a packaged champion was trained on: its known listens without test pairs and cold items.

    A champion packaged from ``split`` knows ``train + valid + test + cold``, one packaged by the retraining
    flow ``merged + test + cold`` (see :func:`extend_split`); either way this gives back its training part.
    """
    if known.shape != (len(split.user_ids), len(split.item_ids)):
        raise ValueError(f"known listens {known.shape} do not match the split's users and items")
    keep = np.ones(known.shape[1])
    keep[split.cold_items] = 0.0
    training = sp.csr_matrix(known - known.multiply(split.test != 0)) @ sp.diags(keep)
    training = sp.csr_matrix(training, dtype=np.float32)
    training.eliminate_zeros()
    return training


def split_feedback_holdout(
    events: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's latest events: the recent-feedback test set.

    A user with ``n`` events gets ``round(fraction * n)`` (half up) of the latest ones, by timestamp, in
    the holdout; ties in time are broken by a seeded random key, so the split is reproducible.

    Returns
    -------
    tuple
        ``(train_events, holdout_events)``, each in the input's row order.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    keys = np.random.default_rng(seed).random(len(events))
    order = events.assign(_key=keys).sort_values([Col.USER, Col.TIMESTAMP, "_key"], kind="stable")
    from_end = order.groupby(Col.USER, sort=False).cumcount(ascending=False)
    sizes = order.groupby(Col.USER, sort=False)[Col.USER].transform("size")
    n_held = np.floor(fraction * sizes + 0.5)
    held = events.index.isin(order.index[from_end.to_numpy() < n_held.to_numpy()])
    return events[~held], events[held]


def liked_hit_rate(
    score_fn: ScoreFn,
    exclude: sp.csr_matrix,
    holdout: pd.DataFrame,
    user_index: Mapping[str, int],
    item_index: Mapping[str, int],
    k: int,
) -> dict[str, float | int]:
    """Share of users with a held-out liked artist that the model puts in their top ``k``.

    Only users and artists the model knows count; an artist already in ``exclude`` (a training item of
    the user) cannot be recommended, so it is not relevant either.

    Returns
    -------
    dict
        ``{"feedback_hit_rate@k": share, "feedback_users": n}``; only ``feedback_users`` when it is 0.
    """
    likes = holdout[(holdout[Col.EVENT] == "like") & holdout[Col.USER].isin(list(user_index))]
    likes = likes[likes[Col.ITEM].isin(list(item_index))]
    rows = likes[Col.USER].map(dict(user_index)).to_numpy(np.int64)
    cols = likes[Col.ITEM].map(dict(item_index)).to_numpy(np.int64)
    relevant = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=exclude.shape)
    relevant = sp.csr_matrix(relevant > 0) - sp.csr_matrix(relevant > 0).multiply(exclude > 0)
    relevant.eliminate_zeros()
    users = np.flatnonzero(np.diff(relevant.indptr))
    hits = []
    for user in users:
        scores = np.asarray(score_fn(np.array([user])), dtype=np.float64)[0]
        scores[exclude[user].indices] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        hits.append(bool(np.isin(relevant[user].indices, top).any()))
    if not hits:  # no number rather than NaN, which the model metadata could not store as JSON
        return {"feedback_users": 0}
    return {f"feedback_hit_rate@{k}": float(np.mean(hits)), "feedback_users": len(hits)}


def champion_split(split: Split, user_ids: list[str], item_ids: list[str], tag: str) -> tuple[Split, int]:
    """``split`` aligned with the champion's users, and how many users the split itself has.

    Raises
    ------
    RecsysError
        The champion was not trained on this split (other items, or the split's users are not its first).
    """
    try:
        if split.item_ids != item_ids:
            raise ValueError("the items differ")
        return align_split(split, user_ids), len(split.user_ids)
    except ValueError as exc:
        raise RecsysError(
            f"the champion {tag} was not trained on the project's split ({exc}): "
            "run the training flow first, then retrain on feedback"
        ) from exc


@dataclass(frozen=True)
class Retrained:
    """A challenger retrained on feedback and measured beside the champion (nothing written yet).

    Attributes
    ----------
    champion_tag : str
        The champion it started from.
    model : LightFMRecommender
        The challenger.
    split : Split
        The champion's split grown by the listeners known only through feedback.
    merge : dict
        What the merge did (:class:`recsys.retraining.merge.MergeReport` plus protected and earlier events).
    n_holdout_events : int
        Feedback events held out to measure the feedback hit rate.
    warm_start : bool
        Continued from the champion (False: fitted from scratch).
    erased_users : int
        Erased listeners the champion knew.
    feedback_users : list of str
        Whose feedback the challenger trained on, packaged with it so that a later erasure finds it.
    challenger, champion : dict
        Their gate inputs, both as served (``{"metrics", "groups", "bias_strength"}``).
    lead : Lead
        The challenger's lead over the champion on the gate's metric, paired per listener, with its interval.
    ranker : Recommender, optional
        With a champion served by a two-stage ranker: its booster over generators refitted on the merged
        listens, the retrained hybrid among them; what the challenger serves known listeners with (and what
        was measured).
    """

    champion_tag: str
    model: LightFMRecommender
    split: Split
    merge: dict[str, Any]
    n_holdout_events: int
    warm_start: bool
    erased_users: int
    feedback_users: list[str]
    challenger: dict[str, Any]
    champion: dict[str, Any]
    lead: Lead
    ranker: Recommender | None = None

    def summary(self) -> dict[str, Any]:
        """The retraining run's summary keys of this outcome."""
        return {
            "merge": self.merge,
            "n_holdout_events": self.n_holdout_events,
            "warm_start": self.warm_start,
            "challenger": self.challenger["metrics"],
            "champion": self.champion["metrics"],
            "champion_tag": self.champion_tag,
            "lead": self.lead.to_dict(),
            "served_model": RANKER if self.ranker is not None else HYBRID,
        }


def candidate_metrics(
    model: Recommender,
    exclude: sp.csr_matrix,
    split: Split,
    holdout: pd.DataFrame,
    indexes: tuple[dict[str, int], dict[str, int]],
    params: Params,
    bias_strength: float = 0.0,
    calibration: tuple[Calibrated, ItemFeatures] | None = None,
) -> Served:
    """One model as served at ``bias_strength`` (or ``calibration``: the setting and the item features): its
    gate input holds the test-split metrics (overall and per group) plus the feedback hit rate."""
    # The champion's users only (new listeners have no test items): both models are measured on the same
    # rows, groups and item popularity.
    n_users = len(indexes[0])
    train = exclude[:n_users]
    setting, features = calibration if calibration is not None else (None, None)
    served = measure_as_served(
        model.score, train, split.test[:n_users], params.evaluate, bias_strength, None, setting, features
    )
    hit_rate = liked_hit_rate(served.score, train, holdout, *indexes, k=params.evaluate.primary_k)
    measured = served.candidate
    return replace(served, candidate=measured | {"metrics": measured["metrics"] | hit_rate})


def retrain_on_feedback(
    champion: Any,
    project_split: Split,
    events: pd.DataFrame,
    params: Params,
    erased: frozenset[str] = frozenset(),
    salt: str | None = None,
    history: pd.DataFrame | None = None,
) -> Retrained:
    """Merge, retrain and measure challenger and champion; nothing is written.

    ``champion`` is the served champion (a :class:`recsys.registry.ServingArtifact`), ``project_split``
    the pipeline's split (``data/split``). The training matrix is rebuilt from the split's own listens
    plus every feedback event exported so far (``history``, the earlier ``events-*.parquet``) and this
    export without its holdout, rather than grown from the champion's: events of a run whose challenger
    was refused, and earlier holdouts, are trained on the next time, and each event still counts once.

    ``erased`` holds the pseudonyms (made with ``salt``, the store's) of users to erase: their events are
    dropped (their earlier events were purged from the files before), so their rows hold only the split's
    own listens, and when the champion knows any of them the challenger is fitted from scratch. The result's
    ``feedback_users`` are the listeners whose feedback the challenger trained on, the record packaged with it
    (:func:`recsys.feedback.erasure_steps.feedback_record`).
    """
    artifact = champion
    split, n_split_users = champion_split(project_split, artifact.user_ids, artifact.item_ids, artifact.tag)
    earlier_users = history[Col.USER] if history is not None else []
    erased_ids = erased_users([*artifact.user_ids, *events[Col.USER], *earlier_users], erased, salt)
    in_champion = set(erased_ids) & set(artifact.user_ids)
    events, _ = without_users(events, erased_ids)
    split = replace(split, user_ids=anonymise_ids(split.user_ids, erased_ids, n_split_users, salt))
    user_index = {user: row for row, user in enumerate(split.user_ids)}
    rest, holdout = split_feedback_holdout(events, params.retrain.feedback_holdout_fraction, params.seed)
    earlier = pd.DataFrame(columns=rest.columns) if history is None else without_users(history, erased_ids)[0]
    pieces = [frame for frame in (earlier, rest) if not frame.empty]
    candidates = pd.concat(pieces, ignore_index=True) if pieces else rest
    trainable, n_protected = without_evaluation_pairs(candidates, split)
    trained = champion_training(artifact.known, split)
    # The split's own listens (empty rows for listeners known only through feedback): an erased user's
    # feedback-derived pairs are gone with their purged events.
    base = sp.csr_matrix(split.train_full, dtype=np.float32)
    merged, report = merge_feedback(base, trainable, user_index, artifact.item_index, params.retrain)
    full_fit = report.needs_full_retrain or bool(in_champion)
    challenger = retrain(artifact.model, merged, full_fit, params.retrain)
    # A champion served by a two-stage ranker stays one: the same booster over generators refitted on the
    # merged listens (the retrained hybrid among them), so the feedback reaches the served order too.
    ranker = artifact.ranker.refitted(merged, {HYBRID: challenger}) if artifact.ranker is not None else None
    served_by = ranker if ranker is not None else challenger
    extended = extend_split(split, merged, report.new_users)
    # Both models rank without every pair either of them trained on, so neither is credited for those.
    before = sp.vstack([trained, sp.csr_matrix((len(report.new_users), merged.shape[1]))])
    exclude = sp.csr_matrix(((merged > 0) + (sp.csr_matrix(before) > 0)) > 0, dtype=np.float32)
    indexes = (user_index, artifact.item_index)
    strength = artifact.bias_strength if params.bias.serve == "chosen" else 0.0
    setting = artifact.calibration if params.bias.serve == "chosen" else None
    calibrated = (setting, artifact.item_features) if setting is not None else None
    # Both as served: at the champion's packaged re-ranking strength or calibration, which the challenger
    # inherits.
    measured = candidate_metrics(served_by, exclude, extended, holdout, indexes, params, strength, calibrated)
    # The champion as listeners get it: its two-stage ranker when it was packaged with one.
    reference = candidate_metrics(
        artifact.scoring, exclude, extended, holdout, indexes, params, strength, calibrated
    )
    return Retrained(
        champion_tag=artifact.tag,
        model=challenger,
        split=extended,
        merge=report.to_dict() | {"n_protected_events": n_protected, "n_earlier_events": len(earlier)},
        n_holdout_events=len(holdout),
        warm_start=not full_fit,
        erased_users=len(in_champion),
        # Whose feedback the challenger trained on, packaged with it so that a later erasure finds it.
        feedback_users=feedback_record(trainable[Col.USER], extended.user_ids),
        challenger=measured.candidate,
        champion=reference.candidate,
        lead=lead_of(
            measured.result,
            reference.result,
            params.gate.primary_metric,
            params.evaluate.bootstrap,
            params.seed,
        ),
        ranker=ranker,
    )
