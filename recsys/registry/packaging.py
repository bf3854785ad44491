"""Packaging: a trained hybrid and the data it serves with become one candidate in the store.

:func:`save_candidate` takes explicit folders (tests, benchmarks, a model trained anywhere);
:func:`package_project` is what the training flow calls, with the project's own folders and provenance;
:func:`package_model` packages a model and split held in memory (the retraining flow's challenger).
Promotion is the store's (:func:`recsys.registry.store.promote`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.models import LightFMRecommender, Recommender
from recsys.offline.split import Split, save_split
from recsys.paths import FEATURES_DIR, MODELS_DIR, PREPARED_DIR, SPLIT_DIR
from recsys.registry.artifact import (
    ARTIFACT_FORMAT,
    ServingInputs,
    file_hashes,
    metric_metadata,
    plain,
    served_bias_strength,
)
from recsys.registry.provenance import data_version, dvc_lock_hash, git_commit
from recsys.registry.store import add_model
from recsys.specs import HYBRID, MODELS, RANKER

STACKED = frozenset(spec.name for spec in MODELS if spec.stacked)

TOP_TAGS = 5
"""Tags kept per item for the explanations of a packaged model."""


def save_candidate(
    models_dir: str | Path,
    features_dir: str | Path,
    split_dir: str | Path,
    metrics: Mapping[str, Any],
    *,
    params_dict: Mapping[str, Any],
    dvc_lock_hash: str,
    git_commit: str,
    prepared_dir: str | Path = PREPARED_DIR,
    source_model: str = HYBRID,
    top_tags: int = TOP_TAGS,
    home: str | Path | None = None,
    feedback_users: Sequence[str] = (),
) -> str:
    """Package the trained hybrid and its serving data as one BentoML model labelled ``stage=candidate``.

    Parameters
    ----------
    models_dir, features_dir, split_dir, prepared_dir : path
        Outputs of the train, features, split and prepare stages.
    metrics : Mapping
        The model's test metrics: a :func:`recsys.offline.gate.candidate_from_report` result
        (``{"metrics": ..., "groups": ...}``) or a flat metrics mapping. With a ``bias_strength`` entry
        (:func:`recsys.offline.bias.served_candidate`) the metrics were measured at that popularity
        re-ranking strength, and the model is packaged with it: the service re-ranks at it by default.
    params_dict : Mapping
        The run's parameters (``Params.model_dump()``).
    dvc_lock_hash, git_commit : str
        See :func:`dvc_lock_hash` and :func:`git_commit`.
    source_model : str
        Which ``models/<name>.npz`` to package: the hybrid, or a stacked model (the two-stage ranker),
        packaged with the hybrid beside it.
    top_tags : int
        Tags kept per item for explanations.
    home : path, optional
        The store's home (see :func:`bentoml_home`).
    feedback_users : sequence of str
        The users (among the model's) whose feedback the model trained on (none for a model of the training
        flow): the record an erasure checks (:func:`recsys.feedback.erasure_steps.held_by_model`).

    Returns
    -------
    str
        The new model's tag, ``music_recommender:<version>``.
    """
    # A stacked model ranks known listeners; the hybrid it stacks on serves new ones and similar items.
    stacked = source_model in STACKED
    models = Path(models_dir)
    inputs = ServingInputs.read(
        models / f"{HYBRID if stacked else source_model}.npz",
        Path(features_dir),
        Path(split_dir),
        models / f"{source_model}.npz" if stacked else None,
    )
    provenance = {
        "source_model": source_model,
        "dvc_lock_hash": dvc_lock_hash,
        "git_commit": git_commit,
        "data_version": data_version(Path(split_dir), Path(features_dir)),
    }
    return _package(
        inputs, metrics, params_dict, provenance, Path(prepared_dir), top_tags, home, feedback_users
    )


def package_model(
    project: Path,
    model: LightFMRecommender,
    split: Split,
    metrics: Mapping[str, Any],
    params_dict: Mapping[str, Any],
    *,
    home: str | Path | None = None,
    feedback_users: Sequence[str] = (),
    ranker: Recommender | None = None,
) -> str:
    """Package a model trained elsewhere than the pipeline (the retraining flow's challenger) from the
    objects in memory, with the project's features, prepared tables and provenance; with ``ranker`` (a
    two-stage ranker over ``model``) known listeners are served by it.

    The data version is the split's as :func:`save_candidate` would record it had the split been saved
    with the features (the split is written once, privately, to be hashed).

    Returns
    -------
    str
        The new candidate's tag.
    """
    inputs = ServingInputs.of(model, split, project / FEATURES_DIR).with_ranker(ranker)
    with tempfile.TemporaryDirectory(prefix="recsys-split-") as folder:
        save_split(split, Path(folder))
        version = data_version(Path(folder), project / FEATURES_DIR)
    provenance = {
        "source_model": RANKER if ranker is not None else model.name,
        "dvc_lock_hash": dvc_lock_hash(project / "dvc.lock"),
        "git_commit": git_commit(project),
        "data_version": version,
    }
    return _package(
        inputs, metrics, params_dict, provenance, project / PREPARED_DIR, TOP_TAGS, home, feedback_users
    )


def _package(
    inputs: ServingInputs,
    metrics: Mapping[str, Any],
    params_dict: Mapping[str, Any],
    provenance: Mapping[str, str],
    prepared_dir: Path,
    top_tags: int,
    home: str | Path | None,
    feedback_users: Sequence[str],
) -> str:
    metadata = {
        "format": ARTIFACT_FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "source_model": provenance["source_model"],
        "params": plain(params_dict),
        **metric_metadata(metrics),
        "bias_strength": served_bias_strength(metrics),
        # The calibrated re-ranking the metrics were measured with (none: not served calibrated).
        "calibration": dict(metrics.get("calibration") or {}),
        "dvc_lock_hash": provenance["dvc_lock_hash"],
        "git_commit": provenance["git_commit"],
        "data_version": provenance["data_version"],
        "feedback_users": len(feedback_users),
        **inputs.sizes(),
    }
    with tempfile.TemporaryDirectory(prefix="recsys-artifact-") as staging:
        inputs.write(Path(staging), prepared_dir, top_tags, feedback_users, metadata["bias_strength"])
        metadata["files"] = file_hashes(Path(staging))
        return add_model(Path(staging), metadata, home)


def package_project(
    project: Path,
    metrics: Mapping[str, Any],
    params_dict: Mapping[str, Any],
    *,
    models_dir: Path | None = None,
    split_dir: Path | None = None,
    home: str | Path | None = None,
    feedback_users: Sequence[str] = (),
    source_model: str = HYBRID,
) -> str:
    """Package a project's trained hybrid (or ``source_model``, the two-stage ranker over it) as a candidate,
    its provenance read from the project.

    The training and the retraining flow both package through here: the features and the prepared
    tables are the project's (``data/features``, ``data/prepared``); the model and the split default to
    the pipeline's (``models/``, ``data/split``) and are given when a flow trained elsewhere.

    Returns
    -------
    str
        The new candidate's tag (:func:`save_candidate`).
    """
    return save_candidate(
        models_dir if models_dir is not None else project / MODELS_DIR,
        project / FEATURES_DIR,
        split_dir if split_dir is not None else project / SPLIT_DIR,
        metrics,
        params_dict=params_dict,
        dvc_lock_hash=dvc_lock_hash(project / "dvc.lock"),
        git_commit=git_commit(project),
        prepared_dir=project / PREPARED_DIR,
        source_model=source_model,
        home=home,
        feedback_users=feedback_users,
    )
