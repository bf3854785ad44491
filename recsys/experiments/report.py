"""The online outcome of an experiment: per-arm rates with confidence intervals, the interleaving preference,
and a decision (challenger wins, loses, or needs more traffic).

Pure functions of two frames: the served lists (``served_at, user_id, arm, items, credits``: what each
listener was shown, by which arm, and for an interleaved list which model drafted each slot) and the
feedback events (``user_id, item_id, event, timestamp``). An event counts for the latest list shown to that
listener within ``horizon`` before it that holds its item (:func:`attribute`).

A/B (:func:`ab_outcome`): per arm, over the listener's shown items, the like rate, the skip rate and the hit
rate (share of lists with a later play or like). The listener is the unit of randomisation, so a rate's
variance is the delta-method variance of a ratio of per-listener sums (:func:`ratio_estimate`), not a
binomial one over items: one listener's many lists are not independent draws.

Interleaving (:func:`interleaving_outcome`): each interleaved list with at least one credited play or like
is a win for the model whose slots drew more of them (a tie otherwise); the preference is
``(wins - losses) / lists``, and a two-sided sign test over wins and losses decides.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from recsys.columns import Col
from recsys.config import ExperimentParams
from recsys.experiments.design import CHALLENGER_ARM, CHAMPION_ARM, SHADOW
from recsys.feedback.tables import Served
from recsys.io import write_json

POSITIVE_EVENTS = ("play", "like")
WINS, LOSES, MORE_TRAFFIC = "challenger wins", "challenger loses", "needs more traffic"


@dataclass(frozen=True)
class Estimate:
    """A rate with its standard error and two-sided ``1 - alpha`` confidence interval."""

    value: float
    se: float
    low: float
    high: float
    units: int


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


def ratio_estimate(numerators: np.ndarray, denominators: np.ndarray, alpha: float = 0.05) -> Estimate:
    """``sum(x) / sum(n)`` over listeners, with the delta-method standard error of a ratio of means.

    >>> e = ratio_estimate(np.array([1.0, 0.0, 2.0, 1.0]), np.array([2.0, 2.0, 2.0, 2.0]))
    >>> round(e.value, 3), e.units
    (0.5, 4)
    """
    x, n = np.asarray(numerators, float), np.asarray(denominators, float)
    units = len(n)
    if units == 0 or n.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, units)
    rate = x.sum() / n.sum()
    if units < 2:
        return Estimate(rate, math.nan, math.nan, math.nan, units)
    residual = x - rate * n
    se = math.sqrt(residual.var(ddof=1) / units) / n.mean()
    z = _z(alpha)
    return Estimate(float(rate), float(se), float(rate - z * se), float(rate + z * se), units)


def attribute(served: pd.DataFrame, events: pd.DataFrame, horizon: pd.Timedelta) -> pd.DataFrame:
    """Each event joined to the latest list shown to its listener within ``horizon`` before it that holds its
    item: the event's columns plus ``list_id``, ``arm`` and ``credit`` (the slot's model; the arm outside
    interleaving). Events that no list explains are left out; shadow lists were never shown, so never match.
    """
    shown = served[served[Served.ARM] != SHADOW].reset_index(drop=True)
    lists = np.repeat(shown.index.to_numpy(), shown[Served.ITEMS].map(len).to_numpy())
    slots = pd.DataFrame(
        {
            "list_id": lists,
            Col.ITEM: [item for items in shown[Served.ITEMS] for item in items],
            "credit": _slot_credits(shown),
            Col.USER: shown[Served.USER].to_numpy()[lists],
            Served.SERVED_AT: shown[Served.SERVED_AT].to_numpy()[lists],
            Served.ARM: shown[Served.ARM].to_numpy()[lists],
        }
    )
    # The list decides the arm (an event's own arm, filled in by the service, is for readers of the store).
    plain = events.drop(columns=[Col.ARM], errors="ignore").reset_index(names="event_row")
    joined = plain.merge(slots, on=[Col.USER, Col.ITEM])
    delay = joined[Col.TIMESTAMP] - joined[Served.SERVED_AT]
    joined = joined[(delay >= pd.Timedelta(0)) & (delay <= horizon)].sort_values(
        ["event_row", Served.SERVED_AT]
    )
    return joined.drop_duplicates("event_row", keep="last").drop(columns="event_row").reset_index(drop=True)


def ab_outcome(
    served: pd.DataFrame, events: pd.DataFrame, horizon: pd.Timedelta, alpha: float = 0.05
) -> dict[str, dict[str, Estimate]]:
    """Per arm: ``like_rate``, ``skip_rate`` (of shown items) and ``hit_rate`` (of lists), per listener."""
    shown = served[served[Served.ARM].isin([CHAMPION_ARM, CHALLENGER_ARM])].reset_index(drop=True)
    attributed = attribute(shown.assign(**{Served.CREDITS: None}), events, horizon)
    out: dict[str, dict[str, Estimate]] = {}
    for arm in (CHAMPION_ARM, CHALLENGER_ARM):
        per_user = _per_listener(shown[shown[Served.ARM] == arm], attributed[attributed[Served.ARM] == arm])
        out[arm] = {
            "like_rate": ratio_estimate(per_user["like"], per_user["items"], alpha),
            "skip_rate": ratio_estimate(per_user["skip"], per_user["items"], alpha),
            "hit_rate": ratio_estimate(per_user["hit_lists"], per_user["lists"], alpha),
        }
    return out


def like_rate_by_model(served: pd.DataFrame, events: pd.DataFrame, horizon: pd.Timedelta) -> dict[str, float]:
    """Likes per shown item, per model that placed the item: the champion (every list outside an
    experiment), or an experiment's arms and interleaving credits. Shadow lists were never shown.

    Returns ``{model: rate}`` for each model with shown items; ``{}`` without served lists.
    """
    shown = served[served[Served.ARM] != SHADOW].reset_index(drop=True)
    if shown.empty:
        return {}
    shown[Served.ARM] = shown[Served.ARM].where(shown[Served.ARM].notna(), CHAMPION_ARM)
    attributed = attribute(shown, events, horizon)
    placed = pd.Series(_slot_credits(shown)).value_counts()
    likes = attributed.loc[attributed[Col.EVENT] == "like", "credit"].value_counts()
    return {str(model): float(likes.get(model, 0) / count) for model, count in placed.items() if count}


def _slot_credits(shown: pd.DataFrame) -> list[str]:
    """The model of every shown slot, list by list: its interleaving credit, else the list's arm."""
    return [
        credit
        for items, credits, arm in zip(
            shown[Served.ITEMS], shown[Served.CREDITS], shown[Served.ARM], strict=True
        )
        for credit in (credits if credits else [arm] * len(items))
    ]


def _per_listener(lists: pd.DataFrame, attributed: pd.DataFrame) -> pd.DataFrame:
    """One row per listener of an arm: lists and items shown, likes and skips of them, lists with a hit."""
    users = lists[Served.USER]
    per_user = pd.DataFrame(
        {"lists": users.value_counts(), "items": lists[Served.ITEMS].map(len).groupby(users).sum()}
    )
    counts = attributed.groupby([Col.USER, Col.EVENT]).size().unstack(fill_value=0)
    per_user = per_user.join(counts.reindex(columns=["like", "skip"], fill_value=0), how="left").fillna(0)
    positive = attributed[attributed[Col.EVENT].isin(POSITIVE_EVENTS)]
    per_user["hit_lists"] = positive.drop_duplicates("list_id").groupby(Col.USER).size()
    return per_user.fillna(0).astype(float)


def difference(challenger: Estimate, champion: Estimate, alpha: float = 0.05) -> Estimate:
    """Challenger minus champion (independent arms), with its confidence interval."""
    value = challenger.value - champion.value
    se = math.sqrt(challenger.se**2 + champion.se**2)
    z = _z(alpha)
    return Estimate(value, se, value - z * se, value + z * se, challenger.units + champion.units)


def interleaving_outcome(served: pd.DataFrame, events: pd.DataFrame, horizon: pd.Timedelta) -> dict[str, Any]:
    """Wins, losses and ties of the challenger over interleaved lists with a credited play or like, the
    preference ``(wins - losses) / lists`` and the two-sided sign test's p-value."""
    mixed = served[served[Served.CREDITS].map(bool)].reset_index(drop=True)
    attributed = attribute(mixed, events, horizon)
    positive = attributed[attributed[Col.EVENT].isin(POSITIVE_EVENTS)]
    votes = positive.groupby(["list_id", "credit"]).size().unstack(fill_value=0)
    ours = votes.get(CHALLENGER_ARM, pd.Series(0, index=votes.index))
    theirs = votes.get(CHAMPION_ARM, pd.Series(0, index=votes.index))
    wins, losses = int((ours > theirs).sum()), int((ours < theirs).sum())
    ties = len(votes) - wins - losses
    decided = wins + losses
    p_value = float(stats.binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    return {
        "lists": len(mixed),
        "lists_with_votes": len(votes),
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "preference": (wins - losses) / len(votes) if len(votes) else math.nan,
        "p_value": p_value,
    }


def decide(difference_or_p: Estimate | dict[str, Any], alpha: float = 0.05, min_units: int = 0) -> str:
    """``challenger wins`` / ``challenger loses`` when the evidence is significant at ``alpha`` (an A/B
    difference's interval excludes 0, or the sign test's p-value is below ``alpha``), else
    ``needs more traffic``; also while fewer than ``min_units`` listeners (A/B) or voting lists took part."""
    if isinstance(difference_or_p, Estimate):
        estimate = difference_or_p
        if estimate.units < min_units or not np.isfinite(estimate.se):
            return MORE_TRAFFIC
        if estimate.low > 0:
            return WINS
        return LOSES if estimate.high < 0 else MORE_TRAFFIC
    outcome = difference_or_p
    if outcome["lists_with_votes"] < min_units or outcome["p_value"] >= alpha:
        return MORE_TRAFFIC
    return WINS if outcome["wins"] > outcome["losses"] else LOSES


def as_dict(estimate: Estimate) -> dict[str, float]:
    """An estimate as plain numbers (for JSON)."""
    return {
        key: (round(value, 6) if isinstance(value, float) else value)
        for key, value in asdict(estimate).items()
    }


def latest_challenger(served: pd.DataFrame) -> str | None:
    """The challenger of the most recently logged experiment list (None: no experiment was logged)."""
    named = served[Served.CHALLENGER].dropna() if Served.CHALLENGER in served else pd.Series(dtype=object)
    return str(named.iloc[-1]) if len(named) else None


def experiment_report(
    served: pd.DataFrame, events: pd.DataFrame, settings: ExperimentParams, challenger: str | None = None
) -> dict[str, Any]:
    """Everything the service logged for one challenger's experiment (default: the latest), measured.

    Returns ``{"challenger", "lists", "ab", "interleaving", "exploration", "decision", "reason"}``
    (``exploration``: :func:`recsys.experiments.replay.exploration_outcome` of every logged list): ``ab`` has
    each arm's
    rates and the challenger-minus-champion difference of ``settings.metric`` (None without A/B lists),
    ``interleaving`` the sign test's counts (None without interleaved lists); ``decision`` is
    :data:`WINS`, :data:`LOSES` or :data:`MORE_TRAFFIC`, from interleaving when it ran, else from A/B.
    """
    challenger = challenger or latest_challenger(served)
    mine = served[served[Served.CHALLENGER] == challenger] if challenger else served.iloc[0:0]
    horizon = pd.Timedelta(hours=settings.horizon_hours)
    report: dict[str, Any] = {"challenger": challenger, "lists": mine[Served.ARM].value_counts().to_dict()}
    decisions: list[str] = []
    if mine[Served.ARM].isin([CHAMPION_ARM, CHALLENGER_ARM]).any():
        arms = ab_outcome(mine, events, horizon, settings.alpha)
        delta = difference(
            arms[CHALLENGER_ARM][settings.metric], arms[CHAMPION_ARM][settings.metric], settings.alpha
        )
        min_units = 2 * settings.min_units
        report["ab"] = {arm: {name: as_dict(e) for name, e in rates.items()} for arm, rates in arms.items()}
        report["ab"]["difference"] = {settings.metric: as_dict(delta)}
        decisions.append(decide(delta, settings.alpha, min_units))
    if mine[Served.ARM].eq("interleave").any():
        outcome = interleaving_outcome(mine, events, horizon)
        report["interleaving"] = outcome
        decisions.append(decide(outcome, settings.alpha, settings.min_units))
    report.setdefault("ab", None)
    report.setdefault("interleaving", None)
    from recsys.experiments.replay import exploration_outcome  # it builds on this module

    report["exploration"] = exploration_outcome(served, events, horizon, settings.alpha)
    report["decision"] = decisions[-1] if decisions else MORE_TRAFFIC
    report["reason"] = _reason(report, settings) if decisions else "no list of this experiment was logged yet"
    return report


def _reason(report: dict[str, Any], settings: ExperimentParams) -> str:
    if report["interleaving"] is not None:
        i = report["interleaving"]
        return (
            f"interleaving: challenger won {i['wins']} and lost {i['losses']} of {i['lists_with_votes']} "
            f"lists with a vote (preference {i['preference']:+.3f}, sign test p = {i['p_value']:.3g}, alpha "
            f"{settings.alpha}, at least {settings.min_units} lists)"
        )
    d = report["ab"]["difference"][settings.metric]
    return (
        f"A/B: {settings.metric} challenger - champion = {d['value']:+.4f} "
        f"[{d['low']:+.4f}, {d['high']:+.4f}] ({1 - settings.alpha:.0%} CI, {d['units']} listeners; at least "
        f"{settings.min_units} per arm)"
    )


def measure_experiment(
    feedback_url: str, settings: ExperimentParams, challenger: str | None, out: Path
) -> dict[str, Any]:
    """:func:`experiment_report` of the store at ``feedback_url`` (never created here), written to ``out``
    atomically: the one way the command line and the experiment flow measure an experiment."""
    from recsys.feedback.store import FeedbackStore

    with FeedbackStore(feedback_url, create=False) as store:
        served, events = store.served_frame(), store.export_frame()
    report = experiment_report(served, events, settings, challenger)
    write_json(out, report)
    return report
