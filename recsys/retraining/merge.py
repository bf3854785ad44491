"""Retraining on listener feedback: merge events into the training matrix, then warm-start or refit.

Merge rule (weights from :class:`recsys.config.RetrainParams`)
-------------------------------------------------------------
For each (user, artist) pair of an export: every ``play`` adds ``play_weight``, every ``like`` adds
``like_weight`` and every ``skip`` subtracts ``skip_weight``; the result is floored at 0 and a pair left at 0
is removed. A ``dislike`` removes the pair whatever else the export holds for it. Events for an artist the
model does not know are dropped and counted (the catalogue changes only through a full pipeline run).
Events of an unknown user add a new row: the shape changes, so the model must be fitted from scratch
rather than warm-started (:func:`retrain` with ``changed_shape=True``).

Each event counts once: :class:`recsys.feedback.exports.FeedbackCursor` records how far the feedback store
has been exported. What the challenger is measured on (the recent-feedback holdout, the fixed test split)
is :mod:`recsys.retraining.challenger`.

Examples
--------
>>> from recsys.config import RetrainParams
>>> train = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32))
>>> events = pd.DataFrame(
...     {Col.USER: ["u0", "u1", "u1"], Col.ITEM: ["b", "b", "zz"], Col.EVENT: ["like", "dislike", "play"]}
... )
>>> merged, report = merge_feedback(train, events, {"u0": 0, "u1": 1}, {"a": 0, "b": 1}, RetrainParams())
>>> merged.toarray().tolist()
[[1.0, 2.0], [0.0, 0.0]]
>>> report.n_unknown_item_events, report.pairs_added, report.pairs_removed
(1, 1, 1)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import FEEDBACK_EVENTS, Col
from recsys.config import RetrainParams
from recsys.errors import DataError
from recsys.models import LightFMRecommender


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge_feedback` did with an export.

    Attributes
    ----------
    n_events : int
        Events in the export.
    events_by_type : dict
        ``event -> count`` over the events that were applied.
    n_unknown_item_events : int
        Events dropped because the artist is not in the model's catalogue.
    new_users : list of str
        Users not in the model, appended as new rows in this order (sorted).
    n_new_user_events : int
        Applied events of those new users.
    pairs_added, pairs_changed, pairs_removed : int
        Pairs that appeared, kept their presence with a new weight, or disappeared.
    """

    n_events: int
    events_by_type: dict[str, int]
    n_unknown_item_events: int
    new_users: list[str]
    n_new_user_events: int
    pairs_added: int
    pairs_changed: int
    pairs_removed: int

    @property
    def needs_full_retrain(self) -> bool:
        """True when new users changed the matrix shape, so a warm start is impossible."""
        return bool(self.new_users)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (with ``needs_full_retrain``)."""
        return asdict(self) | {"needs_full_retrain": self.needs_full_retrain}


def event_weights(params: RetrainParams) -> dict[str, float]:
    """The signed weight each event type adds to its pair (``dislike`` is handled as a removal)."""
    return {
        "play": params.play_weight,
        "like": params.like_weight,
        "skip": -params.skip_weight,
        "dislike": 0.0,
    }


def merge_feedback(
    train: sp.csr_matrix,
    events: pd.DataFrame,
    user_index: Mapping[str, int],
    item_index: Mapping[str, int],
    params: RetrainParams,
) -> tuple[sp.csr_matrix, MergeReport]:
    """Apply feedback events to a user x item weight matrix (the rule is in the module docstring).

    Parameters
    ----------
    train : csr_matrix
        ``(n_users, n_items)`` training weights of the current model; not modified.
    events : pandas.DataFrame
        Columns ``Col.USER``, ``Col.ITEM``, ``Col.EVENT`` (a feedback export).
    user_index, item_index : Mapping
        External id -> row / column of ``train``.
    params : RetrainParams
        The weight of each event type.

    Returns
    -------
    tuple
        The merged float32 CSR (with a row per new user appended) and a :class:`MergeReport`.

    Raises
    ------
    DataError
        A required column is missing or an event type is unknown.
    """
    _check_events(events)
    known_item = events[Col.ITEM].isin(list(item_index))
    applied = events[known_item]
    new_users = sorted(set(applied[Col.USER]) - set(user_index))
    rows_of = dict(user_index) | {user: train.shape[0] + i for i, user in enumerate(new_users)}
    shape = (train.shape[0] + len(new_users), train.shape[1])
    base = sp.csr_matrix(sp.vstack([train, sp.csr_matrix((len(new_users), shape[1]))]), dtype=np.float32)
    rows = applied[Col.USER].map(rows_of).to_numpy(np.int64)
    cols = applied[Col.ITEM].map(dict(item_index)).to_numpy(np.int64)
    merged = _apply(base, rows, cols, applied[Col.EVENT].to_numpy(), params)
    added, changed, removed = _pair_changes(base, merged)
    report = MergeReport(
        n_events=len(events),
        events_by_type={event: int((applied[Col.EVENT] == event).sum()) for event in FEEDBACK_EVENTS},
        n_unknown_item_events=int((~known_item).sum()),
        new_users=new_users,
        n_new_user_events=int(applied[Col.USER].isin(new_users).sum()),
        pairs_added=added,
        pairs_changed=changed,
        pairs_removed=removed,
    )
    return merged, report


def _check_events(events: pd.DataFrame) -> None:
    missing = [column for column in (Col.USER, Col.ITEM, Col.EVENT) if column not in events.columns]
    if missing:
        raise DataError(f"feedback events lack the columns {missing}", column=missing[0])
    unknown = sorted(set(events[Col.EVENT]) - set(FEEDBACK_EVENTS))
    if unknown:
        row = int(np.flatnonzero(~events[Col.EVENT].isin(FEEDBACK_EVENTS))[0])
        raise DataError(
            f"unknown feedback events {unknown}; expected {FEEDBACK_EVENTS}", row=row, column=Col.EVENT
        )


def _apply(
    base: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, kinds: np.ndarray, params: RetrainParams
) -> sp.csr_matrix:
    weights = pd.Series(kinds).map(event_weights(params)).to_numpy(np.float64)
    # COO -> CSR sums duplicates, so several events of one pair add up before the floor at 0.
    delta = sp.csr_matrix((weights, (rows, cols)), shape=base.shape, dtype=np.float64)
    merged = sp.csr_matrix(base.astype(np.float64) + delta)
    merged.data = np.maximum(merged.data, 0.0)
    disliked = kinds == "dislike"
    if disliked.any():
        blocked = sp.csr_matrix(
            (np.ones(int(disliked.sum())), (rows[disliked], cols[disliked])), shape=base.shape
        )
        merged = sp.csr_matrix(merged - merged.multiply(blocked > 0))
    merged.eliminate_zeros()
    return sp.csr_matrix(merged, dtype=np.float32)


def _pair_changes(before: sp.csr_matrix, after: sp.csr_matrix) -> tuple[int, int, int]:
    presence = (after > 0).astype(np.int8) - (before > 0).astype(np.int8)
    added, removed = int((presence.data == 1).sum()), int((presence.data == -1).sum())
    both = (after > 0).multiply(before > 0)
    differ = abs(after - before).multiply(both)
    return added, int((differ.data > 1e-6).sum()), removed


def retrain(
    model: LightFMRecommender,
    merged: sp.csr_matrix,
    changed_shape: bool,
    params: RetrainParams,
    item_features: sp.csr_matrix | None = None,
) -> LightFMRecommender:
    """A challenger trained on ``merged``; ``model`` itself is left untouched.

    Parameters
    ----------
    model : LightFMRecommender
        The champion's model.
    merged : csr_matrix
        The training weights after :func:`merge_feedback`.
    changed_shape : bool
        True when users were added: fit from scratch with the champion's params and seed. Otherwise warm
        start: a copy of the champion continues for ``params.warm_start_epochs`` epochs.
    params : RetrainParams
        ``warm_start_epochs``.
    item_features : csr_matrix, optional
        Defaults to the champion's training item features.
    """
    if changed_shape:
        features = item_features if item_features is not None else model.item_features
        fresh = LightFMRecommender(model.params, seed=model.seed, num_threads=model.num_threads)
        return fresh.fit(merged, features)
    if merged.shape != (model.n_users, model.n_items):
        raise ValueError(
            f"warm start needs the model's shape {(model.n_users, model.n_items)}, got {merged.shape}: "
            "pass changed_shape=True"
        )
    challenger = copy.deepcopy(model)
    return challenger.fit_partial(merged, epochs=params.warm_start_epochs, item_features=item_features)
