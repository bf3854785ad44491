"""The champion measured on a run's test split, so challenger and champion are compared on the same data.

The gate (:func:`recsys.offline.gate.decide`) is only fair when both models were measured on the same
split; this finds the champion's numbers for the current one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys.config import Params
from recsys.offline.evaluation import evaluate
from recsys.offline.popularity import item_popularity, mainstreaminess_groups, reranked_scores
from recsys.offline.split import load_split
from recsys.paths import FEATURES_DIR, SPLIT_DIR
from recsys.registry.provenance import data_version
from recsys.registry.store import ModelInfo, load_artifact


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
    groups = mainstreaminess_groups(split.train_full, params.evaluate.groups)
    # As served: re-ranked at the strength it was packaged with.
    strength = artifact.bias_strength
    score = reranked_scores(artifact.model.score, item_popularity(split.train_full), strength)
    result = evaluate(score, split.train_full, split.test, params.evaluate, groups)
    measured = {"metrics": dict(result.metrics), "groups": result.groups, "bias_strength": strength}
    return measured, f"re-measured on this test split (re-ranking strength {strength:g})"
