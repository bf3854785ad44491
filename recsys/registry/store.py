"""The BentoML model store as the model registry: save candidates, promote, roll back, load for serving.

Where the store lives
---------------------
BentoML keeps models under ``$BENTOML_HOME/models`` (default ``~/bentoml``). BentoML itself reads
``BENTOML_HOME`` lazily, at its first store access, and then caches the store for the life of the process,
so changing the variable afterwards has no effect on ``bentoml.models.*`` called without a store. Every
function here therefore resolves the home when it is called (an explicit ``home`` argument, else
``BENTOML_HOME``, else BentoML's default) and hands BentoML an explicit store for it.

Stages
------
Each saved model carries the label ``stage``: ``candidate`` when saved, ``champion`` once promoted,
``retired`` when a newer champion replaced it, ``rolled_back`` when :func:`rollback` demoted it. Nothing is
deleted, so every older model stays available for a rollback, except the versions an erasure deletes because
they hold an erased listener's feedback (:func:`delete_versions`). The label ``stage_since`` (UTC ISO time,
strictly increasing across changes) orders the changes. Every read and every label change holds a file lock in
the home folder, so two processes promoting at once end with exactly one champion, and a reader never sees a
half-saved model or the moment between retiring the old champion and crowning the new one.

What a stored model holds is :mod:`recsys.registry.artifact`; where its provenance comes from is
:mod:`recsys.registry.provenance`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bentoml
import yaml
from bentoml._internal.models import ModelStore
from bentoml.exceptions import BentoMLException, NotFound
from filelock import FileLock, Timeout

from recsys.errors import NoChampionError, NothingToRollBackError, RegistryError
from recsys.io import atomic_open
from recsys.registry.artifact import MODEL_YAML, ServingArtifact, read_artifact, served_bias_strength
from recsys.specs import DEFAULT_DATASET

MODEL_NAME = "music_recommender"
"""Name of the models of the first data set (``lastfm-artists``) in the BentoML store."""

DATASET_ENV = "RECSYS_DATASET"
"""The data set whose models a call means when none is passed (a service, the registry CLI)."""


def model_name(dataset: str | None = None) -> str:
    """The store name of one data set's models: each data set has its own versions and champion.

    ``dataset`` defaults to ``$RECSYS_DATASET``, else ``lastfm-artists``, whose models keep the first name.

    Examples
    --------
    >>> model_name("lastfm-artists"), model_name("spotify-songs")
    ('music_recommender', 'music_recommender_spotify_songs')
    """
    chosen = dataset or os.environ.get(DATASET_ENV, "").strip() or DEFAULT_DATASET
    return MODEL_NAME if chosen == DEFAULT_DATASET else f"{MODEL_NAME}_{chosen.replace('-', '_')}"


HOME_ENV = "BENTOML_HOME"
STAGE_LABEL = "stage"
SINCE_LABEL = "stage_since"
CANDIDATE, CHAMPION, RETIRED, ROLLED_BACK = "candidate", "champion", "retired", "rolled_back"
STAGES: tuple[str, ...] = (CANDIDATE, CHAMPION, RETIRED, ROLLED_BACK)

LOCK_FILE = ".recsys-registry.lock"
LOCK_TIMEOUT_S = 60.0
"""How long a registry operation waits for another process's operation to finish."""


@dataclass(frozen=True)
class ModelInfo:
    """One stored model as the registry sees it.

    Attributes
    ----------
    tag : str
        ``music_recommender:<version>``.
    stage : str
        One of :data:`STAGES`.
    created_at, stage_since : datetime
        UTC times of the save and of the last stage change.
    labels, metadata : dict
        BentoML labels and metadata (params, metrics, group_metrics, dvc_lock_hash, git_commit, ...).
    path : Path
        The model's folder in the store.
    """

    tag: str
    stage: str
    created_at: datetime
    stage_since: datetime
    labels: dict[str, str]
    metadata: dict[str, Any]
    path: Path

    @property
    def metrics(self) -> dict[str, float | int]:
        """The overall test metrics recorded when the model was saved."""
        return dict(self.metadata.get("metrics", {}))

    @property
    def candidate(self) -> dict[str, Any]:
        """The recorded metrics as a :func:`recsys.offline.gate.decide` input, with the re-ranking strength
        they were measured (and the model is served) at."""
        return {
            "metrics": self.metrics,
            "groups": dict(self.metadata.get("group_metrics", {})),
            "bias_strength": served_bias_strength(self.metadata),
            "calibration": dict(self.metadata.get("calibration") or {}),
        }

    @property
    def size_bytes(self) -> int:
        """Bytes the model takes in the store."""
        return sum(file.stat().st_size for file in self.path.rglob("*") if file.is_file())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {
            "tag": self.tag,
            "stage": self.stage,
            "created_at": self.created_at.isoformat(),
            "stage_since": self.stage_since.isoformat(),
            "labels": dict(self.labels),
            "metadata": self.metadata,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
        }


def bentoml_home(home: str | Path | None = None) -> Path:
    """The store's home: ``home`` if given, else ``$BENTOML_HOME``, else BentoML's default ``~/bentoml``."""
    value = str(home) if home is not None else os.environ.get(HOME_ENV, "").strip()
    if not value:
        value = os.path.join("~", "bentoml")
    return Path(os.path.expandvars(value)).expanduser().resolve()


def add_model(
    staging: Path, metadata: Mapping[str, Any], home: str | Path | None = None, dataset: str | None = None
) -> str:
    """Store the files of ``staging`` as a new model of ``dataset`` labelled ``stage=candidate``; returns its
    tag. The data set defaults to the one in ``metadata["params"]``, then to :func:`model_name`'s."""
    dataset = dataset or metadata.get("params", {}).get("dataset", {}).get("name")
    _opt_out_of_usage_tracking()
    root = bentoml_home(home)
    with _locked(root):
        store = _store(root)
        name = model_name(dataset)
        since = _next_since(_models(store, name))
        labels = {STAGE_LABEL: CANDIDATE, SINCE_LABEL: since.isoformat()}
        with bentoml.models.create(name, labels=labels, metadata=dict(metadata), _model_store=store) as model:
            shutil.copytree(staging, model.path, dirs_exist_ok=True)
    return str(model.tag)


def list_models(home: str | Path | None = None, dataset: str | None = None) -> list[ModelInfo]:
    """Every stored version of the data set's model (:func:`model_name`), oldest first."""
    root = bentoml_home(home)
    with _locked(root):
        return [_info(model) for model in _models(_store(root), model_name(dataset))]


def get_model(tag: str, home: str | Path | None = None, dataset: str | None = None) -> ModelInfo:
    """One stored model by tag (``music_recommender:<version>``, a version or its prefix, or ``champion``)."""
    root = bentoml_home(home)
    with _locked(root):
        return _info(_resolve(_store(root), tag, model_name(dataset)))


def champion(home: str | Path | None = None, dataset: str | None = None) -> ModelInfo | None:
    """The data set's model labelled ``stage=champion`` (the most recently promoted if several), or None."""
    root = bentoml_home(home)
    with _locked(root):
        found = _champion_model(_store(root), model_name(dataset))
    return None if found is None else _info(found)


def promote(tag: str, home: str | Path | None = None, dataset: str | None = None) -> ModelInfo:
    """Make ``tag`` the champion; the previous champion becomes ``retired``. Returns the new champion.

    Promoting the current champion changes nothing. Any model may be promoted by hand, including a retired
    or rolled-back one.
    """
    root = bentoml_home(home)
    with _locked(root):
        store = _store(root)
        target = _resolve(store, tag, model_name(dataset))
        models = _models(store, target.tag.name)
        if _stage(target) == CHAMPION and len([m for m in models if _stage(m) == CHAMPION]) == 1:
            return _info(target)
        # Crown first: a crash between the two writes leaves two champions, of which champion() picks the
        # newly crowned one, rather than no champion at all.
        since = _next_since(models)
        _relabel(target, CHAMPION, since)
        for model in models:
            if _stage(model) == CHAMPION and model.tag != target.tag:
                _relabel(model, RETIRED, since)
        return _info(_resolve(store, str(target.tag), target.tag.name))


def rollback(home: str | Path | None = None, dataset: str | None = None) -> ModelInfo:
    """Restore the most recently retired model as champion; the current champion becomes ``rolled_back``.

    Raises
    ------
    NothingToRollBackError
        When no model is ``retired``.
    """
    root = bentoml_home(home)
    with _locked(root):
        store, name = _store(root), model_name(dataset)
        models = _models(store, name)
        retired = [model for model in models if _stage(model) == RETIRED]
        if not retired:
            current = _champion_model(store, name)
            held = f"the champion is {current.tag}" if current is not None else "there is no champion"
            raise NothingToRollBackError(
                f"nothing to roll back to: no retired {name} model in {root} ({held}); "
                "promote a specific tag with `recsys model promote TAG` instead"
            )
        restored = max(retired, key=_order)
        since = _next_since(models)
        _relabel(restored, CHAMPION, since)
        for model in models:
            if _stage(model) == CHAMPION:
                _relabel(model, ROLLED_BACK, since)
        return _info(_resolve(store, str(restored.tag), name))


def all_versions(home: str | Path | None = None) -> list[ModelInfo]:
    """Every stored version of every data set's model (each :func:`model_name`), oldest first."""
    root = bentoml_home(home)
    with _locked(root):
        models = [model for model in _store(root).list() if _is_ours(model.tag.name)]
    return [_info(model) for model in sorted(models, key=lambda model: model.info.creation_time)]


def delete_versions(tags: Iterable[str], home: str | Path | None = None) -> list[str]:
    """Delete the given versions (full tags, any data set) from the store; returns the tags deleted.

    For an erasure: versions that hold an erased listener's feedback must not be served again, nor be
    restored by a rollback or a promotion by tag. Tags already gone are skipped, so a rerun finishes the job.

    Raises
    ------
    RegistryError
        A tag names its data set's current champion (nothing is deleted): replace it first, since deleting
        it would leave the data set with nothing to serve.
    """
    root = bentoml_home(home)
    with _locked(root):
        store = _store(root)
        present = {str(model.tag): model for model in store.list() if _is_ours(model.tag.name)}
        doomed = [present[tag] for tag in dict.fromkeys(tags) if tag in present]
        for model in doomed:
            current = _champion_model(store, model.tag.name)
            if current is not None and current.tag == model.tag:
                raise RegistryError(
                    f"{model.tag} is the champion of its data set: promote a model without the erased "
                    "feedback before deleting it"
                )
        for model in doomed:
            store.delete(model.tag)
    return [str(model.tag) for model in doomed]


def load_artifact(
    tag: str = "champion", home: str | Path | None = None, dataset: str | None = None
) -> ServingArtifact:
    """Load a stored model (the data set's champion by default) for serving; each file's sha256 is checked."""
    root = bentoml_home(home)
    with _locked(root):
        model = _resolve(_store(root), tag, model_name(dataset))
    return artifact_from_model(model)


def artifact_from_model(model: bentoml.Model) -> ServingArtifact:
    """Load a model obtained from BentoML (e.g. ``bentoml.models.get`` inside a built bento)."""
    return read_artifact(Path(model.path), dict(model.info.metadata), str(model.tag))


def _opt_out_of_usage_tracking() -> None:
    # bentoml.models.create posts a usage event to BentoML's servers unless this is "true"; a registry
    # save must not phone home. An explicit setting by the user is respected.
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the registry's file lock in ``root`` (one lock object per call: never nest these)."""
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(root / LOCK_FILE, timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout as exc:
        raise RegistryError(
            f"the model registry in {root} stayed locked for {LOCK_TIMEOUT_S:g} s by another process; "
            f"retry, or remove {root / LOCK_FILE} if no recsys process is running"
        ) from exc
    try:
        yield
    finally:
        lock.release()


def _store(root: Path) -> ModelStore:
    (root / "models").mkdir(parents=True, exist_ok=True)
    return ModelStore(root / "models")


def _models(store: ModelStore, name: str) -> list[bentoml.Model]:
    try:
        models = store.list(name)
    except NotFound:
        return []
    return sorted(models, key=lambda model: model.info.creation_time)


def _resolve(store: ModelStore, tag: str, name: str) -> bentoml.Model:
    """``tag`` as ``name:version``, a bare version (or prefix) of ``name``, or ``champion`` of ``name``."""
    if tag == CHAMPION:
        found = _champion_model(store, name)
        if found is None:
            where = getattr(store, "_path", None)  # the folder, so a store in another home is spotted
            place = f" in {where}" if where else ""
            raise NoChampionError(f"no {name} model is the champion yet{place}: promote one first")
        return found
    full = tag if ":" in tag else f"{name}:{tag}"
    try:
        model = store.get(full)
    except NotFound as exc:
        raise RegistryError(f"no model {full} in the store; `recsys model list` shows the tags") from exc
    except BentoMLException as exc:
        raise RegistryError(f"{full}: {exc}") from exc
    if not _is_ours(model.tag.name):
        raise RegistryError(f"{model.tag} is not a {MODEL_NAME} model")
    return model


def _is_ours(name: str) -> bool:
    return name == MODEL_NAME or name.startswith(f"{MODEL_NAME}_")


def _champion_model(store: ModelStore, name: str) -> bentoml.Model | None:
    champions = [model for model in _models(store, name) if _stage(model) == CHAMPION]
    return max(champions, key=_order) if champions else None


def _stage(model: bentoml.Model) -> str:
    return str(model.info.labels.get(STAGE_LABEL, CANDIDATE))


def _since(model: bentoml.Model) -> datetime:
    value = model.info.labels.get(SINCE_LABEL)
    return datetime.fromisoformat(value) if value else model.info.creation_time


def _order(model: bentoml.Model) -> tuple[datetime, datetime]:
    return _since(model), model.info.creation_time


def _next_since(models: list[bentoml.Model]) -> datetime:
    """Now, or just after the latest recorded change if the clock went backwards: changes stay ordered."""
    now = datetime.now(UTC)
    latest = max((_since(model) for model in models), default=now - timedelta(seconds=1))
    return max(now, latest + timedelta(microseconds=1))


def _relabel(model: bentoml.Model, stage: str, since: datetime) -> None:
    """Rewrite the model's labels in its ``model.yaml``, atomically (readers see old or new, never half)."""
    path = Path(model.path_of(MODEL_YAML))
    descriptor = yaml.safe_load(path.read_text(encoding="utf-8"))
    descriptor["labels"] = {
        **(descriptor.get("labels") or {}),
        STAGE_LABEL: stage,
        SINCE_LABEL: since.isoformat(),
    }
    with atomic_open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(descriptor, handle, sort_keys=False)


def _info(model: bentoml.Model) -> ModelInfo:
    return ModelInfo(
        tag=str(model.tag),
        stage=_stage(model),
        created_at=model.info.creation_time,
        stage_since=_since(model),
        labels=dict(model.info.labels),
        metadata=dict(model.info.metadata),
        path=Path(model.path),
    )
