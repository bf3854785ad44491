"""The champion measured on a run's test split, so challenger and champion are compared on the same data.

The gate (:func:`recsys.offline.gate.decide`) is only fair when both models were measured on the same
split; this finds the champion's numbers for the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import Params
from recsys.offline import gate as gating
from recsys.offline.bias import served_candidate, served_strength
from recsys.offline.metrics_files import read_bias
from recsys.offline.served import measure_as_served
from recsys.offline.split import load_split
from recsys.paths import FEATURES_DIR, SPLIT_DIR
from recsys.registry.provenance import data_version
from recsys.registry.store import ModelInfo, champion, load_artifact
from recsys.specs import HYBRID


def comparable_champion(project: Path, params: Params, champion: ModelInfo) -> tuple[dict[str, Any], str]:
    """The champion's gate input on this run's test split, and how it was obtained.

    The metrics recorded when the champion was packaged are used while its data version (split and
    features) is this run's. Otherwise (new data, other split settings, or a champion of the retraining
    flow, whose training data grew with feedback) it is re-measured on ``data/split`` when its items and
    first users are the split's; if they are not (the catalogue changed), it cannot be measured on this
    split and the recorded metrics are used, which the returned note says.
    """
    split_dir, features_dir = project / SPLIT_DIR, project / FEATURES_DIR
    if champion.metadata.get("data_version") == data_version(split_dir, features_dir):
        return champion.candidate, "recorded when it was packaged, on this test split"
    artifact = load_artifact(champion.tag)
    split = load_split(split_dir)
    n_users = len(split.user_ids)
    if artifact.item_ids != split.item_ids or artifact.user_ids[:n_users] != split.user_ids:
        return (
            champion.candidate,
            "recorded on another test split (its users or artists differ from this one)",
        )
    # As served: re-ranked at the strength it was packaged with.
    strength = artifact.bias_strength
    measured, _ = measure_as_served(
        artifact.model.score, split.train_full, split.test, params.evaluate, strength
    )
    return measured, f"re-measured on this test split (re-ranking strength {strength:g})"


KEEP, HOLD, PROMOTE = "keep", "hold", "promote"


@dataclass(frozen=True)
class RunGate:
    """The gate's verdict on a training run's hybrid against the champion, both measured as served.

    Attributes
    ----------
    decision : GateDecision
        Promote or not, the reasons and the comparison table.
    challenger : dict
        The hybrid's gate input as served (packaged with it).
    champion_tag : str, optional
        The champion it was compared with (None: the first model).
    champion_metrics : str
        How the champion's numbers were obtained (recorded, re-measured, none).
    strength : float
        The popularity re-ranking strength the challenger is served with.
    primary_metric : str
        The gate's metric, for the served line of the run's summary.
    """

    decision: gating.GateDecision
    challenger: dict[str, Any]
    champion_tag: str | None
    champion_metrics: str
    strength: float
    primary_metric: str

    @property
    def promote(self) -> bool:
        return self.decision.promote

    def placement(self, online: str, candidate: bool = False) -> str:
        """What the run does with its challenger: ``"keep"`` the champion (nothing packaged), ``"hold"`` it
        as a candidate for an online experiment (``gate.online: required``, or ``candidate``: whatever the
        offline gate said), or ``"promote"`` it. A first model, with no champion to test against, is
        promoted."""
        held = bool(self.champion_tag) and (candidate or online == "required")
        if not self.promote and not (candidate and held):
            return KEEP
        return HOLD if held else PROMOTE

    def markdown(self) -> str:
        """The decision as the flow's artifact shows it."""
        return gating.render_markdown(self.decision) + f"\nChampion metrics: {self.champion_metrics}.\n"

    def to_dict(self) -> dict[str, Any]:
        """``{"promote", "reasons", "comparison", "champion_tag", "champion_metrics", "challenger",
        "served"}``: the run summary's decision."""
        served = self.challenger["metrics"].get(self.primary_metric)
        return self.decision.to_dict() | {
            "champion_tag": self.champion_tag,
            "champion_metrics": self.champion_metrics,
            "challenger": self.challenger,
            "served": {"strength": self.strength, self.primary_metric: served},
        }


def gate_run(project: Path, params: Params, report: dict[str, Any]) -> RunGate:
    """The run's hybrid (``metrics/offline.json``) against the champion on this run's test split.

    Both are measured as served: the challenger at the popularity re-ranking strength it will be packaged
    with (``bias.serve``: the one ``metrics/bias.json`` chose, or 0), its metrics the trade-off curve's row
    at that strength; the champion's from :func:`comparable_champion`.
    """
    bias = read_bias(project)
    strength = served_strength(bias, params.bias.serve)
    challenger = served_candidate(gating.candidate_from_report(report, HYBRID), bias, strength)
    current = champion(dataset=params.dataset.name)
    measured, how = comparable_champion(project, params, current) if current else (None, "no champion")
    return RunGate(
        gating.decide(challenger, measured, params.gate),
        challenger,
        current.tag if current else None,
        how,
        strength,
        params.gate.primary_metric,
    )
