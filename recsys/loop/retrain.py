"""Retraining on listener feedback: merge events into the training matrix, hold out recent feedback, retrain.

Merge rule (weights from :class:`recsys.config.RetrainParams`)
-------------------------------------------------------------
For each (user, artist) pair of an export: every ``play`` adds ``play_weight``, every ``like`` adds
``like_weight`` and every ``skip`` subtracts ``skip_weight``; the result is floored at 0 and a pair left at 0
is removed. A ``dislike`` removes the pair whatever else the export holds for it. Events for an artist the
model does not know are dropped and counted (the catalogue changes only through a full pipeline run).
Events of an unknown user add a new row: the shape changes, so the model must be fitted from scratch
rather than warm-started (:func:`retrain` with ``changed_shape=True``).

Each event counts once: :class:`FeedbackCursor` records how far the feedback store has been exported
(``data/feedback/cursor.json``), and the retraining flow advances it only after a successful run. It also
counts the ``delete_user`` audit records already honoured (``erasures_applied``), so each erasure is applied
to the exported files and the model exactly once (see :mod:`recsys.loop.erasure`).

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
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import FEEDBACK_EVENTS, Col
from recsys.config import RetrainParams
from recsys.errors import DataError
from recsys.io import write_json
from recsys.models import LightFMRecommender
from recsys.offline.split import Split
from recsys.paths import FEEDBACK_CURSOR

CURSOR_FILE = FEEDBACK_CURSOR
"""Where the retraining flow keeps its :class:`FeedbackCursor`, relative to the project root."""

ScoreFn = Callable[[np.ndarray], np.ndarray]


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


@dataclass(frozen=True)
class FeedbackCursor:
    """How far the feedback store has been consumed: the store's export cursor (0 = nothing yet).

    Attributes
    ----------
    position : int
        The ``cursor`` of :meth:`recsys.loop.feedback.FeedbackStore.export_frame` after the last
        consumed event.
    updated_at : str
        UTC ISO time of the last advance (empty before the first).
    history : list of dict
        One entry per advance: ``{"from", "to", "events", "file", "at"}``, plus ``"erasures"``,
        ``"erased_users"`` and ``"purged_rows"`` when the advance honoured erasures.
    erasures_applied : int
        How many ``delete_user`` records of the store's audit log (oldest first) have been honoured. A
        cursor file written before erasures were tracked loads with 0.
    """

    position: int = 0
    updated_at: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    erasures_applied: int = 0

    @classmethod
    def load(cls, path: str | Path) -> FeedbackCursor:
        """Read ``path``; a missing file means nothing has been consumed yet."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                int(payload["position"]),
                str(payload.get("updated_at", "")),
                list(payload.get("history", [])),
                int(payload.get("erasures_applied", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"feedback cursor is unreadable ({exc}); restore it from git/DVC", file=str(path)
            ) from exc

    def advanced(
        self,
        position: int,
        n_events: int,
        file: str,
        *,
        erasures_applied: int | None = None,
        erased_users: int = 0,
        purged_rows: int = 0,
    ) -> FeedbackCursor:
        """A new cursor at ``position``, recording the export (and any erasures honoured) in ``history``.

        Parameters
        ----------
        position, n_events, file
            The store cursor after the export, its number of events and the file it was written to.
        erasures_applied : int, optional
            The new count of honoured ``delete_user`` audit records; None keeps the current one.
        erased_users, purged_rows : int
            What those erasures changed (users reset in the model, rows purged from exported files).
        """
        if position < self.position:
            raise ValueError(f"the feedback cursor cannot move back from {self.position} to {position}")
        applied = self.erasures_applied if erasures_applied is None else erasures_applied
        if applied < self.erasures_applied:
            raise ValueError(f"erasures_applied cannot move back from {self.erasures_applied} to {applied}")
        now = datetime.now(UTC).isoformat()
        entry: dict[str, Any] = {
            "from": self.position,
            "to": position,
            "events": n_events,
            "file": file,
            "at": now,
        }
        if applied != self.erasures_applied:
            entry |= {
                "erasures": applied - self.erasures_applied,
                "erased_users": erased_users,
                "purged_rows": purged_rows,
            }
        return FeedbackCursor(position, now, [*self.history, entry], applied)

    def save(self, path: str | Path) -> None:
        """Write the cursor atomically (a crash leaves the previous one)."""
        write_json(path, asdict(self))
