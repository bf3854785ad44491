"""The table of models and the table of data sets: adding one is one entry here plus its module.

Every place that needs the list reads it from here: the ``train`` stage fits every model of :data:`MODELS`,
``evaluate`` measures them, the tuning experiment searches the ones with a grid, the card and the report
name them by their label; ``dataset.name`` in ``params.yaml`` must be one of :data:`DATASETS`, whose entry
says what its items are, what its ingest copies and how its ``prepare`` builds the canonical tables.

Classes and functions are named as ``"module:attribute"`` and imported when used: this module sits below
the settings and the models (``pyproject.toml``'s layers), so both can read it.

Examples
--------
>>> model_spec("als").label, model_spec("als").section
('implicit ALS', 'als')
>>> [spec.name for spec in MODELS if spec.takes_features], [spec.name for spec in MODELS if spec.stacked]
(['lightfm_hybrid', 'ranker'], ['ranker'])
>>> dataset_spec("spotify-songs").kind, DEFAULT_DATASET
('track', 'lastfm-artists')
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from recsys.config import Params
    from recsys.models.base import Recommender


def resolve(reference: str) -> Any:
    """The object a ``"module:attribute"`` reference names (imported now)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class ModelSpec:
    """One model of the pipeline.

    Attributes
    ----------
    name : str
        Its name everywhere: ``models/<name>.npz``, the key in ``metrics/offline.json``, trial rows.
    cls : str
        The :class:`~recsys.models.base.Recommender` class, ``"module:Class"``.
    section : str, optional
        Its settings: ``params.yaml`` ``train.<section>`` (None: it has none).
    label : str
        How the card, the report and the deck name it.
    takes_features : bool
        Fitted with the item-feature matrix (the hybrid); else on interactions alone.
    seeded, threaded : bool
        Whether its constructor takes the run's seed, and a thread count, after its settings.
    search : str, optional
        How the tuning experiment searches it: ``"epochs"`` (LightFM's trial loop, early-stopped on
        validation), ``"grid"`` (every point of ``train.search.competitors.<name>``), None (not searched).
    saved_as : str
        How it is saved: ``"npz"``, one file read back by :func:`recsys.models.base.load_recommender`.
    stacked : bool
        Built on the other models (the two-stage ranker): its constructor takes every setting
        (:class:`~recsys.config.Params`), and the ``train`` stage fits it last, with the validation part as
        its labels and the models it fitted as its generators.
    """

    name: str
    cls: str
    section: str | None
    label: str
    takes_features: bool = False
    seeded: bool = False
    threaded: bool = False
    search: Literal["epochs", "grid"] | None = None
    saved_as: Literal["npz"] = "npz"
    stacked: bool = False

    def settings(self, params: Params) -> Any:
        """Its ``train.<section>`` settings of ``params`` (None: it has none; all of them: it is stacked)."""
        if self.stacked:
            return params
        return getattr(params.train, self.section) if self.section else None

    def enabled(self, params: Params) -> bool:
        """Whether the run trains it: its section's ``enabled`` (a model without that switch always is)."""
        section = getattr(params.train, self.section, None) if self.section else None
        return bool(getattr(section, "enabled", True))

    def build(self, settings: Any, seed: int = 0, threads: int = 1) -> Recommender:
        """The model with ``settings`` (the type of its section), not fitted yet."""
        args: list[Any] = [] if self.section is None else [settings]
        if self.seeded:
            args.append(seed)
        if self.threaded:
            args.append(threads)
        model: Recommender = resolve(self.cls)(*args, name=self.name)
        return model

    def configured(self, params: Params, threads: int | None = None) -> Recommender:
        """The model with its settings from ``params`` (``threads``: ``train.final_threads``)."""
        threads = params.train.final_threads if threads is None else threads
        return self.build(self.settings(params), params.seed, threads)


HYBRID, CF, MOST_POPULAR, RANKER = "lightfm_hybrid", "lightfm_cf", "most_popular", "ranker"
"""The hybrid (the fold-in, similar items and reasons of every champion; the challenger without a ranker),
LightFM without item features, the
popularity baseline (the floor every model must beat, and the cold listener's list) and the two-stage
ranker over the others' candidates."""

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        HYBRID,
        "recsys.models.lightfm_model:LightFMRecommender",
        "lightfm",
        "LightFM hybrid",
        takes_features=True,
        seeded=True,
        threaded=True,
        search="epochs",
    ),
    ModelSpec(
        CF,
        "recsys.models.lightfm_model:LightFMRecommender",
        "lightfm_cf",
        "LightFM without features",
        seeded=True,
        threaded=True,
        search="epochs",
    ),
    ModelSpec("ease", "recsys.models.baselines:EASE", "ease", "EASE", search="grid"),
    ModelSpec("rp3beta", "recsys.models.graph:RP3beta", "rp3beta", "RP3beta", search="grid"),
    ModelSpec("itemknn", "recsys.models.baselines:ItemKNN", "itemknn", "item-kNN", search="grid"),
    ModelSpec(
        "als", "recsys.models.als:ALS", "als", "implicit ALS", seeded=True, threaded=True, search="grid"
    ),
    ModelSpec(MOST_POPULAR, "recsys.models.baselines:MostPopular", None, "most popular"),
    ModelSpec(
        RANKER,
        "recsys.models.ranker:TwoStageRanker",
        "ranker",
        "two-stage ranker (LightGBM)",
        takes_features=True,
        seeded=True,
        threaded=True,
        stacked=True,
    ),
)
"""Every model the ``train`` stage writes as ``models/<name>.npz`` and ``evaluate`` measures, in the order
the metrics list them."""

MODEL_NAMES: tuple[str, ...] = tuple(spec.name for spec in MODELS)
MODEL_LABELS: Mapping[str, str] = {spec.name: spec.label for spec in MODELS}
GRID_MODELS: tuple[str, ...] = tuple(spec.name for spec in MODELS if spec.search == "grid")
"""The competitors the tuning experiment searches on a grid, by their ``train`` section."""


def trained_models(params: Params) -> tuple[str, ...]:
    """The models a run with ``params`` trains and measures: :data:`MODEL_NAMES` but the ones switched off."""
    return tuple(spec.name for spec in MODELS if spec.enabled(params))


def challenger_model(params: Params) -> str:
    """The model a training run offers the gate: ``gate.challenger`` when the run trains it, else the hybrid.

    >>> from recsys.config import Params
    >>> params = Params.model_validate({"gate": {"challenger": "ranker"}})
    >>> challenger_model(params)
    'ranker'
    >>> challenger_model(params.model_copy(update={"train": params.train.model_copy(update={
    ...     "ranker": params.train.ranker.model_copy(update={"enabled": False})})}))
    'lightfm_hybrid'
    """
    name = params.gate.challenger
    return name if name in trained_models(params) else HYBRID


def model_spec(name: str) -> ModelSpec:
    """The model called ``name`` (a :class:`KeyError` naming the known ones otherwise)."""
    for spec in MODELS:
        if spec.name == name:
            return spec
    raise KeyError(f"no model {name!r}; known models: {', '.join(MODEL_NAMES)}")


@dataclass(frozen=True)
class DatasetSpec:
    """One data set the pipeline can run on (``dataset.name``).

    Attributes
    ----------
    name : str
        ``dataset.name``; the registry's model name for it (:func:`recsys.registry.store.model_name`).
    kind : str
        What its items are: ``"artist"`` or ``"track"`` (``"files"``: ``dataset.files.kind`` says).
    sources : tuple of str
        The raw sources (:data:`recsys.data.sources.SOURCES`) its ingest copies, verified.
    ingest : str
        The ``ingest`` stage's function, ``"module:function"`` taking ``(data_dir, raw_dir, params)``.
    prepare : str
        The ``prepare`` stage's adapter, ``"module:function"`` taking ``(raw_dir, params)`` and returning
        the canonical tables (:class:`recsys.data.prepare.Prepared`).
    fingerprint : str
        What ingest will read, by content (the ``sources`` stage), ``"module:function"`` taking
        ``(params, local_dir)``.
    """

    name: str
    kind: Literal["artist", "track", "files"]
    sources: tuple[str, ...]
    ingest: str
    prepare: str
    fingerprint: str

    def item_kind(self, dataset_settings: Mapping[str, Any]) -> str:
        """``"artist"`` or ``"track"``, with ``dataset_settings`` (``params.yaml``'s ``dataset``)."""
        if self.kind == "files":
            return str((dataset_settings.get("files") or {}).get("kind", "track"))
        return self.kind


DEFAULT_DATASET = "lastfm-artists"
"""The data set of a fresh clone (``params.yaml``), and the one the registry's plain model name serves."""

_ADAPTERS = "recsys.data.datasets"
_FINGERPRINTS = "recsys.data.fingerprint"

DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        DEFAULT_DATASET,
        "artist",
        ("lastfm", "spotify", "lyrics"),
        f"{_ADAPTERS}:ingest_sources",
        f"{_ADAPTERS}:prepare_lastfm",
        f"{_FINGERPRINTS}:of_sources",
    ),
    DatasetSpec(
        "spotify-songs",
        "track",
        ("spotify", "lyrics"),
        f"{_ADAPTERS}:ingest_sources",
        f"{_ADAPTERS}:prepare_songs",
        f"{_FINGERPRINTS}:of_sources",
    ),
    DatasetSpec(
        "files",
        "files",
        (),
        f"{_ADAPTERS}:ingest_files",
        f"{_ADAPTERS}:prepare_files",
        f"{_FINGERPRINTS}:of_files",
    ),
    DatasetSpec(
        "synthetic",
        "artist",
        (),
        f"{_ADAPTERS}:ingest_synthetic",
        f"{_ADAPTERS}:prepare_synthetic",
        f"{_FINGERPRINTS}:of_generated",
    ),
)
"""Every data set, by ``dataset.name``."""

DATASET_NAMES: tuple[str, ...] = tuple(spec.name for spec in DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The data set called ``name`` (a :class:`KeyError` naming the known ones otherwise)."""
    for spec in DATASETS:
        if spec.name == name:
            return spec
    raise KeyError(f"no data set {name!r}; known data sets: {', '.join(DATASET_NAMES)}")
