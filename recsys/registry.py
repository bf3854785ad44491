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
``retired`` when a newer champion replaced it, ``rolled_back`` when :func:`rollback` demoted it. Nothing
is deleted, so every older model stays available for a rollback. The label ``stage_since`` (UTC ISO time,
strictly increasing across changes) orders the changes. Every read and every label change holds a file lock
in the home folder, so two processes promoting at once end with exactly one champion, and a reader never
sees a half-saved model or the moment between retiring the old champion and crowning the new one.

Contents of a model (all plain files, nothing pickled)
------------------------------------------------------
``model.npz`` (the hybrid LightFM), ``features/`` (the item-feature matrix the model scores with: cold-start
items' identity columns removed, as in training), ``users.parquet`` / ``items.parquet`` (external ids of
the model's rows and columns), ``known.npz`` (every interaction known when packaged, users x items, to
exclude from recommendations), ``catalogue.parquet`` (item id and display name only, never lyrics) and
``item_tags.parquet`` (the top tags of each item, for explanations). The metadata holds the parameters,
the metrics, the dvc.lock hash, the git commit, the creation time, the data version and a sha256 of every
file, checked when the model is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml
from bentoml._internal.models import ModelStore
from bentoml.exceptions import BentoMLException, NotFound
from filelock import FileLock, Timeout

from recsys.columns import Col
from recsys.errors import RecsysError
from recsys.features import ItemFeatures, load_item_features, save_item_features, without_identity
from recsys.io import atomic_open, write_parquet
from recsys.models import LightFMRecommender
from recsys.split import load_split

MODEL_NAME = "music_recommender"
"""Name of every model of this project in the BentoML store."""

HOME_ENV = "BENTOML_HOME"
STAGE_LABEL = "stage"
SINCE_LABEL = "stage_since"
CANDIDATE, CHAMPION, RETIRED, ROLLED_BACK = "candidate", "champion", "retired", "rolled_back"
STAGES: tuple[str, ...] = (CANDIDATE, CHAMPION, RETIRED, ROLLED_BACK)

ARTIFACT_FORMAT = 1
LOCK_FILE = ".recsys-registry.lock"
LOCK_TIMEOUT_S = 60.0
"""How long a registry operation waits for another process's operation to finish."""

MODEL_FILE = "model.npz"
FEATURES_DIR = "features"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
KNOWN_FILE = "known.npz"
CATALOGUE_FILE = "catalogue.parquet"
TAGS_FILE = "item_tags.parquet"
# BentoML's descriptor of a stored model; the registry rewrites only its ``labels``.
_MODEL_YAML = "model.yaml"


class RegistryError(RecsysError):
    """The model store cannot do what was asked (unknown tag, inconsistent inputs, lock timeout...)."""


class NoChampionError(RegistryError):
    """No model is labelled ``stage=champion``."""


class NothingToRollBackError(RegistryError):
    """No retired model is left to restore."""


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
        """The recorded metrics as a :func:`recsys.gate.decide` input."""
        return {"metrics": self.metrics, "groups": dict(self.metadata.get("group_metrics", {}))}

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


@dataclass(frozen=True)
class ServingArtifact:
    """Everything the service needs, loaded from one stored model.

    ``names`` and ``tags`` are aligned with ``item_ids`` (the model's item indices); ``known`` is
    ``(len(user_ids), len(item_ids))`` and holds every interaction known when the model was packaged.
    """

    tag: str
    model: LightFMRecommender
    item_features: ItemFeatures
    user_ids: list[str]
    item_ids: list[str]
    names: list[str]
    tags: list[list[str]]
    known: sp.csr_matrix
    metadata: dict[str, Any]

    @cached_property
    def user_index(self) -> dict[str, int]:
        """External user id -> model row."""
        return {user: index for index, user in enumerate(self.user_ids)}

    @cached_property
    def item_index(self) -> dict[str, int]:
        """External item id -> model column."""
        return {item: index for index, item in enumerate(self.item_ids)}


def bentoml_home(home: str | Path | None = None) -> Path:
    """The store's home: ``home`` if given, else ``$BENTOML_HOME``, else BentoML's default ``~/bentoml``."""
    value = str(home) if home is not None else os.environ.get(HOME_ENV, "").strip()
    if not value:
        value = os.path.join("~", "bentoml")
    return Path(os.path.expandvars(value)).expanduser().resolve()


def save_champion_candidate(
    models_dir: str | Path,
    features_dir: str | Path,
    split_dir: str | Path,
    metrics: Mapping[str, Any],
    *,
    params_dict: Mapping[str, Any],
    dvc_lock_hash: str,
    git_commit: str,
    prepared_dir: str | Path = Path("data/prepared"),
    source_model: str = "lightfm_hybrid",
    top_tags: int = 5,
    home: str | Path | None = None,
) -> str:
    """Package the trained hybrid and its serving data as one BentoML model labelled ``stage=candidate``.

    Parameters
    ----------
    models_dir, features_dir, split_dir, prepared_dir : path
        Outputs of the train, features, split and prepare stages.
    metrics : Mapping
        The model's test metrics: a :func:`recsys.gate.candidate_from_report` result
        (``{"metrics": ..., "groups": ...}``) or a flat metrics mapping.
    params_dict : Mapping
        The run's parameters (``Params.model_dump()``).
    dvc_lock_hash, git_commit : str
        See :func:`dvc_lock_hash` and :func:`git_commit`.
    source_model : str
        Which ``models/<name>.npz`` to package.
    top_tags : int
        Tags kept per item for explanations.
    home : path, optional
        The store's home (see :func:`bentoml_home`).

    Returns
    -------
    str
        The new model's tag, ``music_recommender:<version>``.
    """
    _opt_out_of_usage_tracking()
    inputs = _ServingInputs.read(
        Path(models_dir) / f"{source_model}.npz", Path(features_dir), Path(split_dir)
    )
    created_at = datetime.now(UTC)
    metadata = {
        "format": ARTIFACT_FORMAT,
        "created_at": created_at.isoformat(),
        "source_model": source_model,
        "params": _plain(params_dict),
        **_metric_metadata(metrics),
        "dvc_lock_hash": dvc_lock_hash,
        "git_commit": git_commit,
        "data_version": data_version(Path(split_dir), Path(features_dir)),
        **inputs.sizes(),
    }
    root = bentoml_home(home)
    with tempfile.TemporaryDirectory(prefix="recsys-artifact-") as staging:
        inputs.write(Path(staging), Path(prepared_dir), top_tags)
        metadata["files"] = _file_hashes(Path(staging))
        with _locked(root):
            store = _store(root)
            since = _next_since(_models(store))
            labels = {STAGE_LABEL: CANDIDATE, SINCE_LABEL: since.isoformat()}
            with bentoml.models.create(
                MODEL_NAME, labels=labels, metadata=metadata, _model_store=store
            ) as model:
                shutil.copytree(staging, model.path, dirs_exist_ok=True)
    return str(model.tag)


def list_models(home: str | Path | None = None) -> list[ModelInfo]:
    """Every stored version of :data:`MODEL_NAME`, oldest first."""
    root = bentoml_home(home)
    with _locked(root):
        return [_info(model) for model in _models(_store(root))]


def get_model(tag: str, home: str | Path | None = None) -> ModelInfo:
    """One stored model by tag (``music_recommender:<version>``, a version or its prefix, or ``champion``)."""
    root = bentoml_home(home)
    with _locked(root):
        return _info(_resolve(_store(root), tag))


def champion(home: str | Path | None = None) -> ModelInfo | None:
    """The model labelled ``stage=champion`` (the most recently promoted if several), or None."""
    root = bentoml_home(home)
    with _locked(root):
        found = _champion_model(_store(root))
    return None if found is None else _info(found)


def promote(tag: str, home: str | Path | None = None) -> ModelInfo:
    """Make ``tag`` the champion; the previous champion becomes ``retired``. Returns the new champion.

    Promoting the current champion changes nothing. Any model may be promoted by hand, including a retired
    or rolled-back one.
    """
    root = bentoml_home(home)
    with _locked(root):
        store = _store(root)
        target = _resolve(store, tag)
        models = _models(store)
        if _stage(target) == CHAMPION and len([m for m in models if _stage(m) == CHAMPION]) == 1:
            return _info(target)
        # Crown first: a crash between the two writes leaves two champions, of which champion() picks the
        # newly crowned one, rather than no champion at all.
        since = _next_since(models)
        _relabel(target, CHAMPION, since)
        for model in models:
            if _stage(model) == CHAMPION and model.tag != target.tag:
                _relabel(model, RETIRED, since)
        return _info(_resolve(store, str(target.tag)))


def rollback(home: str | Path | None = None) -> ModelInfo:
    """Restore the most recently retired model as champion; the current champion becomes ``rolled_back``.

    Raises
    ------
    NothingToRollBackError
        When no model is ``retired``.
    """
    root = bentoml_home(home)
    with _locked(root):
        store = _store(root)
        models = _models(store)
        retired = [model for model in models if _stage(model) == RETIRED]
        if not retired:
            current = _champion_model(store)
            held = f"the champion is {current.tag}" if current is not None else "there is no champion"
            raise NothingToRollBackError(
                f"nothing to roll back to: no retired {MODEL_NAME} model in {root} ({held}); "
                "promote a specific tag with `recsys model promote TAG` instead"
            )
        restored = max(retired, key=_order)
        since = _next_since(models)
        _relabel(restored, CHAMPION, since)
        for model in models:
            if _stage(model) == CHAMPION:
                _relabel(model, ROLLED_BACK, since)
        return _info(_resolve(store, str(restored.tag)))


def delete_versions_except(keep: str, home: str | Path | None = None) -> list[str]:
    """Delete every version of the model from the store but ``keep``; returns the deleted tags.

    For an erasure: versions trained before it may hold the erased listeners' feedback, and a rollback
    (or a promote by tag) would serve it again. The retraining flow calls this once a model without
    them is champion, so the rollback history starts over from that model.
    """
    root = bentoml_home(home)
    with _locked(root):
        store = _store(root)
        kept = _resolve(store, keep)
        deleted = []
        for model in _models(store):
            if model.tag != kept.tag:
                store.delete(model.tag)
                deleted.append(str(model.tag))
        return deleted


def load_artifact(tag: str = "champion", home: str | Path | None = None) -> ServingArtifact:
    """Load a stored model (the champion by default) for serving; every file's sha256 is checked."""
    root = bentoml_home(home)
    with _locked(root):
        model = _resolve(_store(root), tag)
    return artifact_from_model(model)


def artifact_from_model(model: bentoml.Model) -> ServingArtifact:
    """Load a model obtained from BentoML (e.g. ``bentoml.models.get`` inside a built bento)."""
    folder, metadata, tag = Path(model.path), dict(model.info.metadata), str(model.tag)
    if metadata.get("format") != ARTIFACT_FORMAT:
        raise RegistryError(f"{tag}: artifact format {metadata.get('format')!r}, expected {ARTIFACT_FORMAT}")
    files = metadata.get("files")
    _verify_files(folder, dict(files) if isinstance(files, dict) else {}, tag)
    item_ids = _id_column(folder / ITEMS_FILE, Col.ITEM)
    return ServingArtifact(
        tag=tag,
        model=LightFMRecommender.load(folder / MODEL_FILE),
        item_features=load_item_features(folder / FEATURES_DIR),
        user_ids=_id_column(folder / USERS_FILE, Col.USER),
        item_ids=item_ids,
        names=_aligned_names(folder / CATALOGUE_FILE, item_ids),
        tags=_aligned_tags(folder / TAGS_FILE, item_ids),
        known=sp.csr_matrix(sp.load_npz(folder / KNOWN_FILE), dtype=np.float32),
        metadata=metadata,
    )


def dvc_lock_hash(path: str | Path = "dvc.lock") -> str:
    """sha256 of ``dvc.lock`` (the pipeline's exact inputs and outputs), or ``"unknown"`` without one."""
    path = Path(path)
    return _sha256(path) if path.is_file() else "unknown"


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` in ``cwd``, or ``"unknown"`` outside a git work tree (or without git)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def data_version(*folders: Path) -> str:
    """sha256 over the names and bytes of the files in ``folders``: changes exactly when the data does."""
    digest = hashlib.sha256()
    for folder in folders:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(folder).as_posix()}\n".encode())
            digest.update(_sha256(file).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class _ServingInputs:
    """The trained model and the data it serves with, checked against each other."""

    model_file: Path
    model: LightFMRecommender
    features: ItemFeatures
    user_ids: list[str]
    item_ids: list[str]
    known: sp.csr_matrix
    n_cold_items: int

    @classmethod
    def read(cls, model_file: Path, features_dir: Path, split_dir: Path) -> _ServingInputs:
        try:
            model = LightFMRecommender.load(model_file)
            split = load_split(split_dir)
            features = without_identity(load_item_features(features_dir), split.cold_items)
        except (FileNotFoundError, ValueError) as exc:
            raise RegistryError(f"cannot package {model_file}: {exc}") from exc
        if features.item_ids != split.item_ids:
            raise RegistryError(
                f"{features_dir} and {split_dir} disagree on the item order: rerun both stages"
            )
        _check_model(model, model_file, features, (len(split.user_ids), len(split.item_ids)))
        known = sp.csr_matrix(split.train + split.valid + split.test + split.cold, dtype=np.float32)
        return cls(model_file, model, features, split.user_ids, split.item_ids, known, len(split.cold_items))

    def sizes(self) -> dict[str, int]:
        return {
            "n_users": len(self.user_ids),
            "n_items": len(self.item_ids),
            "n_features": int(self.features.matrix.shape[1]),
            "n_cold_items": self.n_cold_items,
        }

    def write(self, folder: Path, prepared_dir: Path, top_tags: int) -> None:
        shutil.copyfile(self.model_file, folder / MODEL_FILE)
        save_item_features(self.features, folder / FEATURES_DIR)
        write_parquet(folder / USERS_FILE, pd.DataFrame({Col.USER: self.user_ids}))
        write_parquet(folder / ITEMS_FILE, pd.DataFrame({Col.ITEM: self.item_ids}))
        sp.save_npz(folder / KNOWN_FILE, self.known)
        write_parquet(folder / CATALOGUE_FILE, item_catalogue(prepared_dir, self.item_ids))
        write_parquet(folder / TAGS_FILE, top_item_tags(prepared_dir, self.item_ids, top_tags))


def item_catalogue(prepared_dir: Path, item_ids: list[str]) -> pd.DataFrame:
    """``item_id, name`` of the given items, in their order; only those two columns are ever read."""
    items = _read_prepared(prepared_dir / "items.parquet", [Col.ITEM, Col.NAME])
    names = items.assign(**{Col.ITEM: items[Col.ITEM].astype(str)}).drop_duplicates(Col.ITEM)
    frame = pd.DataFrame({Col.ITEM: item_ids}).merge(names, on=Col.ITEM, how="left")
    frame[Col.NAME] = frame[Col.NAME].fillna(frame[Col.ITEM]).astype(str)
    return frame


def top_item_tags(prepared_dir: Path, item_ids: list[str], top: int) -> pd.DataFrame:
    """The ``top`` most applied tags of each given item (``item_id, tag, count``; ties by tag name)."""
    tags = _read_prepared(prepared_dir / "item_tags.parquet", [Col.ITEM, Col.TAG, Col.COUNT])
    tags = tags.assign(**{Col.ITEM: tags[Col.ITEM].astype(str)})
    tags = tags[tags[Col.ITEM].isin(set(item_ids))]
    ranked = tags.sort_values([Col.ITEM, Col.COUNT, Col.TAG], ascending=[True, False, True], kind="stable")
    return ranked.groupby(Col.ITEM, sort=False).head(top).reset_index(drop=True)


def _read_prepared(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, columns=columns)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise RegistryError(f"{path}: cannot read columns {columns}: {exc}") from exc


def _check_model(
    model: LightFMRecommender, path: Path, features: ItemFeatures, shape: tuple[int, int]
) -> None:
    trained = model.item_features
    if trained is None:
        raise RegistryError(f"{path} is a collaborative model without item features, not the hybrid")
    if (model.n_users, model.n_items) != shape:
        raise RegistryError(
            f"{path} has {model.n_users} users x {model.n_items} items but the split has {shape[0]} x "
            f"{shape[1]}: rerun the train stage"
        )
    if trained.shape != features.matrix.shape or (trained != features.matrix).nnz:
        raise RegistryError(f"{path} was trained on other item features than the current ones: rerun train")


def _metric_metadata(metrics: Mapping[str, Any]) -> dict[str, Any]:
    overall = metrics["metrics"] if isinstance(metrics.get("metrics"), Mapping) else metrics
    groups = metrics.get("groups") or {}
    return {
        "metrics": _numbers(overall),
        "group_metrics": {str(group): _numbers(values) for group, values in groups.items()},
    }


def _numbers(values: Mapping[str, Any]) -> dict[str, float | int]:
    """The numeric entries (counts stay integers); nested entries such as ``groups`` are dropped."""
    return {
        str(key): int(value) if isinstance(value, int | np.integer) else float(value)
        for key, value in values.items()
        if isinstance(value, int | float | np.number) and not isinstance(value, bool)
    }


def _plain(value: Any) -> Any:
    """JSON-like data BentoML accepts as metadata: tuples become lists and None entries are dropped."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value if item is not None]
    return value


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        file.relative_to(folder).as_posix(): _sha256(file)
        for file in sorted(folder.rglob("*"))
        if file.is_file() and file.name not in (_MODEL_YAML, "custom_objects.pkl")
    }


def _verify_files(folder: Path, expected: Mapping[str, Any], tag: str) -> None:
    if not expected:
        raise RegistryError(f"{tag}: no file checksums in the metadata; re-save the model")
    for name, digest in expected.items():
        file = folder / name
        if not file.is_file() or _sha256(file) != str(digest):
            raise RegistryError(f"{tag}: {file} is missing or corrupt (sha256 mismatch); re-save the model")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _aligned_names(path: Path, item_ids: list[str]) -> list[str]:
    catalogue = pd.read_parquet(path)
    names = dict(zip(catalogue[Col.ITEM].astype(str), catalogue[Col.NAME].astype(str), strict=True))
    return [names.get(item, item) for item in item_ids]


def _aligned_tags(path: Path, item_ids: list[str]) -> list[list[str]]:
    frame = pd.read_parquet(path).astype({Col.ITEM: str, Col.TAG: str})
    tags = frame.groupby(Col.ITEM, sort=False)[Col.TAG].agg(list).to_dict()
    return [list(tags.get(item, [])) for item in item_ids]


def _id_column(path: Path, column: str) -> list[str]:
    return pd.read_parquet(path)[column].astype(str).tolist()


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


def _models(store: ModelStore) -> list[bentoml.Model]:
    try:
        models = store.list(MODEL_NAME)
    except NotFound:
        return []
    return sorted(models, key=lambda model: model.info.creation_time)


def _resolve(store: ModelStore, tag: str) -> bentoml.Model:
    if tag == CHAMPION:
        found = _champion_model(store)
        if found is None:
            raise NoChampionError(f"no {MODEL_NAME} model is the champion yet: promote one first")
        return found
    full = tag if ":" in tag else f"{MODEL_NAME}:{tag}"
    try:
        model = store.get(full)
    except NotFound as exc:
        raise RegistryError(f"no model {full} in the store; `recsys model list` shows the tags") from exc
    except BentoMLException as exc:
        raise RegistryError(f"{full}: {exc}") from exc
    if model.tag.name != MODEL_NAME:
        raise RegistryError(f"{model.tag} is not a {MODEL_NAME} model")
    return model


def _champion_model(store: ModelStore) -> bentoml.Model | None:
    champions = [model for model in _models(store) if _stage(model) == CHAMPION]
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
    path = Path(model.path_of(_MODEL_YAML))
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
