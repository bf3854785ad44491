"""The model artifact: what one stored model holds, how it is written and how it is read back.

Contents of a model (all plain files, nothing pickled)
------------------------------------------------------
``model.npz`` (the hybrid LightFM), ``ranker.npz`` and ``ranked.npz`` (only when the served model is the
two-stage ranker: the booster with every generator it scores with, the hybrid among them, and every known
listener's best :data:`RANKED_TOP` unplayed items in its order, ranked when packaged so that no request pays
the ranker's ~10-20 ms; new listeners and similar items keep the hybrid's embeddings), ``features/`` (the
item-feature matrix the model scores with: cold-start items' identity columns removed, as in training),
``users.parquet`` / ``items.parquet`` (external ids of the
model's rows and columns), ``known.npz`` (every interaction known when packaged, users x items, to exclude
from recommendations), ``catalogue.parquet`` (item id and display name only, never lyrics),
``item_tags.parquet`` (the top tags of each item, for explanations) and ``feedback_users.parquet`` (which of
the model's users it trained on feedback of: none for a model of the training flow; an erasure reads it to
find every version holding a listener's feedback, whatever salt the erasure's pseudonym was made with). The
metadata holds the parameters, the metrics, the dvc.lock hash, the git commit, the creation time, the data
version and a sha256 of every file, checked when the model is loaded (:func:`read_artifact`). The format is
versioned (:data:`ARTIFACT_FORMAT`); the store's lifecycle is in :mod:`recsys.registry.store`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import Col
from recsys.errors import RegistryError
from recsys.io import write_parquet
from recsys.models import LightFMRecommender, Recommender, load_recommender
from recsys.models.scorer import MISSING, top_k_from_scores
from recsys.offline.calibration import Calibrated
from recsys.offline.features import ItemFeatures, load_item_features, save_item_features, without_identity
from recsys.offline.popularity import popularity_variants
from recsys.offline.split import Split, load_split
from recsys.paths import ITEM_TAGS_TABLE, ITEMS_TABLE
from recsys.registry.provenance import sha256_file
from recsys.specs import HYBRID, RANKER

ARTIFACT_FORMAT = 1
MODEL_FILE = "model.npz"
RANKER_FILE = "ranker.npz"
RANKED_FILE = "ranked.npz"
RANKED_TOP = 200
"""Items of every known listener's list a packaged ranker ranks ahead of time (``ranked.npz``)."""
RANKED_BATCH = 512
"""Listeners the ranker scores at once while packaging (its candidates bound the memory of each batch)."""
FEATURES_DIR = "features"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
KNOWN_FILE = "known.npz"
CATALOGUE_FILE = "catalogue.parquet"
TAGS_FILE = "item_tags.parquet"
FEEDBACK_FILE = "feedback_users.parquet"
# BentoML's descriptor of a stored model; the registry rewrites only its ``labels``.
MODEL_YAML = "model.yaml"


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
    feedback_users: frozenset[str] | None = None
    """The users whose feedback the model trained on (None: packaged before models kept the record)."""
    ranker: Recommender | None = None
    """The two-stage ranker known listeners are served by (None: the hybrid serves them)."""
    ranked: tuple[np.ndarray, np.ndarray] | None = None
    """With a ranker: every known listener's best unplayed items and their scores, ``(n_users, RANKED_TOP)``
    each (best first; index -1 and score -inf past the end), ranked when the model was packaged."""

    @property
    def served_model(self) -> str:
        """The name of the model known listeners are ranked by (:data:`recsys.specs.RANKER` or the hybrid)."""
        return RANKER if self.ranker is not None else HYBRID

    @property
    def scoring(self) -> Recommender:
        """What ranks known listeners: the ranker when packaged with one, else the hybrid."""
        return self.ranker if self.ranker is not None else self.model

    @property
    def bias_strength(self) -> float:
        """The popularity re-ranking strength the model was packaged (and measured) with; 0 for older ones."""
        return served_bias_strength(self.metadata)

    @property
    def calibration(self) -> Calibrated | None:
        """The calibration the model was packaged (and measured) with; None: not served calibrated."""
        return Calibrated.from_metadata(self.metadata.get("calibration"))

    @cached_property
    def user_index(self) -> dict[str, int]:
        """External user id -> model row."""
        return {user: index for index, user in enumerate(self.user_ids)}

    @cached_property
    def item_index(self) -> dict[str, int]:
        """External item id -> model column."""
        return {item: index for index, item in enumerate(self.item_ids)}


def read_artifact(folder: Path, metadata: Mapping[str, Any], tag: str) -> ServingArtifact:
    """The artifact stored in ``folder`` with ``metadata``; every file's sha256 is checked first."""
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
        metadata=dict(metadata),
        feedback_users=read_feedback_record(folder),
        ranker=_read_ranker(folder / RANKER_FILE, len(item_ids), tag),
        ranked=_read_ranked(folder / RANKED_FILE),
    )


def ranked_lists(
    ranker: Recommender, known: sp.csr_matrix, top: int = RANKED_TOP, bias_strength: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Every listener's best ``top`` items by ``ranker`` that ``known`` (users x items) does not hold: int32
    indices and float32 scores, best first (-1 / -inf past the end), :data:`RANKED_BATCH` listeners a time;
    re-ranked against popularity at ``bias_strength`` (the model's served strength, as the service re-ranks
    a full row: listeners per item counted in ``known``)."""
    n_users = known.shape[0]
    width = min(top, known.shape[1])
    indices = np.full((n_users, width), MISSING, dtype=np.int32)
    scores = np.full((n_users, width), -np.inf, dtype=np.float32)
    variants = popularity_variants(np.asarray(known.getnnz(axis=0), dtype=np.int64), [bias_strength])
    for start in range(0, n_users, RANKED_BATCH):
        users = np.arange(start, min(start + RANKED_BATCH, n_users))
        rows = ranker.score(users)
        if bias_strength > 0:
            ((_, rows),) = variants(rows)
        best, values = top_k_from_scores(rows, width, known[users])
        indices[users], scores[users] = best, values
    return indices, scores


def _read_ranked(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as arrays:
        return np.asarray(arrays["indices"]), np.asarray(arrays["scores"])


def _read_ranker(path: Path, n_items: int, tag: str) -> Recommender | None:
    """The packaged two-stage ranker (None: the model has none), checked against the catalogue."""
    if not path.is_file():
        return None
    ranker = load_recommender(path)
    if ranker.n_items != n_items:
        raise RegistryError(f"{tag}: {path.name} ranks {ranker.n_items} items, the catalogue has {n_items}")
    return ranker


def read_feedback_record(folder: Path) -> frozenset[str] | None:
    """The users whose feedback a stored model trained on; None when the model predates the record."""
    path = folder / FEEDBACK_FILE
    return frozenset(_id_column(path, Col.USER)) if path.is_file() else None


def read_user_ids(folder: Path) -> list[str]:
    """A stored model's user ids (its rows), without loading the rest."""
    return _id_column(folder / USERS_FILE, Col.USER)


@dataclass(frozen=True)
class ServingInputs:
    """The trained model and the data it serves with, checked against each other."""

    model_file: Path | None
    model: LightFMRecommender
    features: ItemFeatures
    user_ids: list[str]
    item_ids: list[str]
    known: sp.csr_matrix
    n_cold_items: int
    ranker_file: Path | None = None
    ranker: Recommender | None = None

    @classmethod
    def read(
        cls, model_file: Path, features_dir: Path, split_dir: Path, ranker_file: Path | None = None
    ) -> ServingInputs:
        """The trained model of ``model_file`` with the stages' features and split (``ranker_file``: the
        two-stage ranker known listeners are served by, trained on the same split)."""
        try:
            model = LightFMRecommender.load(model_file)
            split = load_split(split_dir)
            ranker = load_recommender(ranker_file) if ranker_file is not None else None
        except (FileNotFoundError, ValueError) as exc:
            raise RegistryError(f"cannot package {ranker_file or model_file}: {exc}") from exc
        inputs = cls.of(model, split, features_dir, model_file, split_dir)
        return replace(inputs.with_ranker(ranker, ranker_file), ranker_file=ranker_file)

    @classmethod
    def of(
        cls,
        model: LightFMRecommender,
        split: Split,
        features_dir: Path,
        model_file: Path | None = None,
        split_dir: Path | str = "the split",
    ) -> ServingInputs:
        """A trained ``model`` and its ``split`` as they are in memory (``model_file``: where it was read
        from, copied as it is; None: saved when written)."""
        where = model_file if model_file is not None else Path(f"the {model.name} model")
        try:
            features = without_identity(load_item_features(features_dir), split.cold_items)
        except (FileNotFoundError, ValueError) as exc:
            raise RegistryError(f"cannot package {where}: {exc}") from exc
        if features.item_ids != split.item_ids:
            raise RegistryError(
                f"{features_dir} and {split_dir} disagree on the item order: rerun both stages"
            )
        _check_model(model, where, features, (len(split.user_ids), len(split.item_ids)))
        known = sp.csr_matrix(split.train + split.valid + split.test + split.cold, dtype=np.float32)
        return cls(model_file, model, features, split.user_ids, split.item_ids, known, len(split.cold_items))

    def with_ranker(self, ranker: Recommender | None, where: Path | None = None) -> ServingInputs:
        """These inputs with a two-stage ranker that serves known listeners, checked against the split."""
        if ranker is None:
            return self
        users = getattr(ranker, "n_users", None)
        if ranker.n_items != len(self.item_ids) or users not in (None, len(self.user_ids)):
            raise RegistryError(
                f"{where or 'the ranker'} ranks {users} users x {ranker.n_items} items but the split has "
                f"{len(self.user_ids)} x {len(self.item_ids)}: rerun the train stage"
            )
        return replace(self, ranker=ranker)

    def sizes(self) -> dict[str, int]:
        return {
            "n_users": len(self.user_ids),
            "n_items": len(self.item_ids),
            "n_features": int(self.features.matrix.shape[1]),
            "n_cold_items": self.n_cold_items,
        }

    def write(
        self,
        folder: Path,
        prepared_dir: Path,
        top_tags: int,
        feedback_users: Sequence[str] = (),
        bias_strength: float = 0.0,
    ) -> None:
        """The artifact's files in ``folder``; a ranker's lists are ranked ahead at the served
        ``bias_strength``."""
        if self.model_file is not None:
            shutil.copyfile(self.model_file, folder / MODEL_FILE)
        else:
            self.model.save(folder / MODEL_FILE)
        if self.ranker is not None:
            if self.ranker_file is not None:
                shutil.copyfile(self.ranker_file, folder / RANKER_FILE)
            else:
                self.ranker.save(folder / RANKER_FILE)
            indices, scores = ranked_lists(self.ranker, self.known, bias_strength=bias_strength)
            np.savez(folder / RANKED_FILE, indices=indices, scores=scores)
        write_parquet(folder / FEEDBACK_FILE, pd.DataFrame({Col.USER: sorted(feedback_users)}, dtype=object))
        save_item_features(self.features, folder / FEATURES_DIR)
        write_parquet(folder / USERS_FILE, pd.DataFrame({Col.USER: self.user_ids}))
        write_parquet(folder / ITEMS_FILE, pd.DataFrame({Col.ITEM: self.item_ids}))
        sp.save_npz(folder / KNOWN_FILE, self.known)
        write_parquet(folder / CATALOGUE_FILE, item_catalogue(prepared_dir, self.item_ids))
        write_parquet(folder / TAGS_FILE, top_item_tags(prepared_dir, self.item_ids, top_tags))


def item_catalogue(prepared_dir: Path, item_ids: list[str]) -> pd.DataFrame:
    """``item_id, name`` of the given items, in their order; only those two columns are ever read."""
    items = _read_prepared(prepared_dir / ITEMS_TABLE, [Col.ITEM, Col.NAME])
    names = items.assign(**{Col.ITEM: items[Col.ITEM].astype(str)}).drop_duplicates(Col.ITEM)
    frame = pd.DataFrame({Col.ITEM: item_ids}).merge(names, on=Col.ITEM, how="left")
    frame[Col.NAME] = frame[Col.NAME].fillna(frame[Col.ITEM]).astype(str)
    return frame


def top_item_tags(prepared_dir: Path, item_ids: list[str], top: int) -> pd.DataFrame:
    """The ``top`` most applied tags of each given item (``item_id, tag, count``; ties by tag name)."""
    tags = _read_prepared(prepared_dir / ITEM_TAGS_TABLE, [Col.ITEM, Col.TAG, Col.COUNT])
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


def metric_metadata(metrics: Mapping[str, Any]) -> dict[str, Any]:
    overall = metrics["metrics"] if isinstance(metrics.get("metrics"), Mapping) else metrics
    groups = metrics.get("groups") or {}
    return {
        "metrics": _numbers(overall),
        "group_metrics": {str(group): _numbers(values) for group, values in groups.items()},
    }


def served_bias_strength(metrics: Mapping[str, Any]) -> float:
    """The popularity re-ranking strength ``metrics`` were measured at (0 when they do not say).

    Raises
    ------
    RegistryError
        When the strength is not a finite number ``>= 0``.
    """
    raw = metrics.get("bias_strength", 0.0)
    strength = float(raw) if isinstance(raw, int | float | np.number) and not isinstance(raw, bool) else -1.0
    if not np.isfinite(strength) or strength < 0:
        raise RegistryError(f"bias_strength must be a finite number >= 0, got {raw!r}")
    return strength


def _numbers(values: Mapping[str, Any]) -> dict[str, float | int]:
    """The numeric entries (counts stay integers); nested entries such as ``groups`` are dropped."""
    return {
        str(key): int(value) if isinstance(value, int | np.integer) else float(value)
        for key, value in values.items()
        if isinstance(value, int | float | np.number) and not isinstance(value, bool)
    }


def plain(value: Any) -> Any:
    """JSON-like data BentoML accepts as metadata: tuples become lists and None entries are dropped."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value if item is not None]
    return value


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        file.relative_to(folder).as_posix(): sha256_file(file)
        for file in sorted(folder.rglob("*"))
        if file.is_file() and file.name not in (MODEL_YAML, "custom_objects.pkl")
    }


def _verify_files(folder: Path, expected: Mapping[str, Any], tag: str) -> None:
    if not expected:
        raise RegistryError(f"{tag}: no file checksums in the metadata; re-save the model")
    for name, digest in expected.items():
        file = folder / name
        if not file.is_file() or sha256_file(file) != str(digest):
            raise RegistryError(f"{tag}: {file} is missing or corrupt (sha256 mismatch); re-save the model")


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
