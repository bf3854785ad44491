"""The champion measured on a run's test split, so challenger and champion are compared on the same data.

The gate (:func:`recsys.offline.gate.decide`) is only fair when both models were measured on the same
split; this finds the champion's numbers for the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import Params
from recsys.models import load_recommender
from recsys.offline import gate as gating
from recsys.offline.bias import measured_model, served_calibration, served_candidate, served_strength
from recsys.offline.calibration import Calibrated
from recsys.offline.evaluation import EvaluationResult
from recsys.offline.features import load_item_features
from recsys.offline.metrics_files import read_bias
from recsys.offline.served import measure_as_served
from recsys.offline.split import load_split
from recsys.offline.uncertainty import Lead, lead_of
from recsys.paths import FEATURES_DIR, SPLIT_DIR, model_file
from recsys.registry.provenance import data_version
from recsys.registry.store import ModelInfo, champion, load_artifact
from recsys.specs import HYBRID, challenger_model


def comparable_champion(
    project: Path, params: Params, champion: ModelInfo, paired: bool = False
) -> tuple[dict[str, Any], str, EvaluationResult | None]:
    """The champion's gate input on this run's test split, how it was obtained, and (when re-measured) the
    evaluation behind it.

    The metrics recorded when the champion was packaged are used while its data version (split and
    features) is this run's, unless ``paired`` asks for its per-listener values (the gate's bound). Otherwise
    (new data, other split settings, or a champion of the retraining flow, whose training data grew with
    feedback) it is re-measured on ``data/split`` when its items and first users are the split's; if they
    are not (the catalogue changed), it cannot be measured on this split and the recorded metrics are used,
    which the returned note says.
    """
    split_dir, features_dir = project / SPLIT_DIR, project / FEATURES_DIR
    same_data = champion.metadata.get("data_version") == data_version(split_dir, features_dir)
    if same_data and not paired:
        return champion.candidate, "recorded when it was packaged, on this test split", None
    artifact = load_artifact(champion.tag)
    split = load_split(split_dir)
    n_users = len(split.user_ids)
    if artifact.item_ids != split.item_ids or artifact.user_ids[:n_users] != split.user_ids:
        return (
            champion.candidate,
            "recorded on another test split (its users or artists differ from this one)",
            None,
        )
    # As served: re-ranked at the strength it was packaged with, or calibrated as it was.
    strength = artifact.bias_strength
    served = measure_as_served(
        artifact.scoring.score,
        split.train_full,
        split.test,
        params.evaluate,
        strength,
        calibration=artifact.calibration,
        features=artifact.item_features,
    )
    if same_data:
        how = "recorded when it was packaged, on this test split (re-measured per listener for the interval)"
        return champion.candidate, how, served.result
    return (
        served.candidate,
        f"re-measured on this test split (re-ranking strength {strength:g})",
        served.result,
    )


def challenger_as_served(
    project: Path,
    params: Params,
    strength: float,
    name: str = HYBRID,
    calibration: Calibrated | None = None,
) -> EvaluationResult:
    """The run's model ``name`` (``models/``) measured on this run's test split at its served ``strength``
    (or ``calibration``)."""
    split = load_split(project / SPLIT_DIR)
    model = load_recommender(project / model_file(name))
    features = load_item_features(project / FEATURES_DIR) if calibration is not None else None
    return measure_as_served(
        model.score, split.train_full, split.test, params.evaluate, strength, None, calibration, features
    ).result


KEEP, HOLD, PROMOTE = "keep", "hold", "promote"


@dataclass(frozen=True)
class RunGate:
    """The gate's verdict on a training run's challenger against the champion, both measured as served.

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
    lead : Lead, optional
        The challenger's lead over the champion, paired per listener (None: no champion, or the gate
        decides on the point estimate).
    model : str
        Which of the run's models is the challenger (:func:`challenger_model`), packaged when it passes.
    """

    decision: gating.GateDecision
    challenger: dict[str, Any]
    champion_tag: str | None
    champion_metrics: str
    strength: float
    primary_metric: str
    lead: Lead | None = None
    model: str = HYBRID

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
            "served": {"strength": self.strength, self.primary_metric: served}
            | ({"calibration": self.challenger["calibration"]} if self.challenger.get("calibration") else {}),
            "lead": self.lead.to_dict() if self.lead else None,
            "model": self.model,
        }


def gate_run(project: Path, params: Params, report: dict[str, Any]) -> RunGate:
    """The run's challenger (``metrics/offline.json``; the hybrid, or the ranker: :func:`challenger_model`)
    against the champion on this run's test split.

    Both are measured as served: the challenger with the mitigation it will be packaged with
    (``bias.serve``: the one ``metrics/bias.json`` chose for it, or none), its metrics the report's row of
    that mitigation (none when the report measured another model, :func:`measured_model`); the
    champion's from :func:`comparable_champion`. With ``gate.min_improvement_on:
    bound`` both are measured per listener and the gate holds the lower end of the lead's paired bootstrap
    interval to ``min_improvement`` (a few seconds on artists: two evaluations and 2,000 resamples).
    """
    bias = read_bias(project)
    name = challenger_model(params)
    # The bias stage measured the run's challenger: its mitigation travels with that model only.
    measured_here = measured_model(bias) == name
    strength = served_strength(bias, params.bias.serve) if measured_here else 0.0
    calibrated = served_calibration(bias, params.bias.serve) if measured_here else None
    challenger = served_candidate(gating.candidate_from_report(report, name), bias, strength, calibrated)
    current = champion(dataset=params.dataset.name)
    paired = params.gate.min_improvement_on == "bound"
    lead = None
    if current is None:
        measured, how = None, "no champion"
    else:
        measured, how, reference = comparable_champion(project, params, current, paired)
        if reference is not None and paired:
            lead = lead_of(
                challenger_as_served(project, params, strength, name, Calibrated.from_metadata(calibrated)),
                reference,
                params.gate.primary_metric,
                params.evaluate.bootstrap,
                params.seed,
            )
    return RunGate(
        gating.decide(challenger, measured, params.gate, lead),
        challenger,
        current.tag if current else None,
        how,
        strength,
        params.gate.primary_metric,
        lead,
        name,
    )
