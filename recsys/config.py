"""``params.yaml`` parsed into validated pydantic models: the one source of settings.

Nothing here runs at import time; call :func:`load_params`.

Examples
--------
>>> params = Params()
>>> params.split.test_fraction
0.2
>>> Params.model_validate(params.model_dump()) == params
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from recsys.errors import ConfigError
from recsys.specs import DATASET_NAMES, DEFAULT_DATASET, MODELS, dataset_spec

DATA_DIR_ENV = "RECSYS_DATA_DIR"
"""Environment variable naming a local folder that holds the raw data sets."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _yaml_off(value: Any) -> Any:
    """``off`` for the ``False`` YAML 1.1 (PyYAML) reads an unquoted ``off`` as."""
    return "off" if value is False else value


class SongsParams(_Section):
    """The ``spotify-songs`` adapter: tracks as items, playlists as listeners."""

    # A playlist needs this many tracks to be a listener (fewer cannot be held out from).
    min_playlist_tracks: int = Field(5, ge=1)


class FilesParams(_Section):
    """The ``files`` adapter: a team's own interactions and items files (CSV or Parquet).

    ``columns`` maps a canonical column to the files' column name: ``user``, ``item``, ``plays`` (or
    ``weight``) and optional ``timestamp`` of the interactions; ``item``, ``name`` and optional ``artist``,
    ``genre``, ``release_date``, ``tags`` ("|"-joined) and ``text`` of the items. ``interactions_columns``
    and ``items_columns`` map one file only and win over ``columns`` there (the two files may call the
    item id by different names).
    """

    interactions: str = ""
    items: str = ""
    kind: Literal["artist", "track"] = "track"
    columns: dict[str, str] = Field(default_factory=dict)
    interactions_columns: dict[str, str] = Field(default_factory=dict)
    items_columns: dict[str, str] = Field(default_factory=dict)

    def mapping(self, kind: Literal["interactions", "items"]) -> dict[str, str]:
        """Canonical column -> the ``kind`` file's column name."""
        own = self.interactions_columns if kind == "interactions" else self.items_columns
        return self.columns | own


class SyntheticParams(_Section):
    """The ``synthetic`` generator (:mod:`recsys.data.synthetic`): listeners x artists shaped like Last.fm 2K.

    ``size`` (S1, S10, S50, S200) sets users, items and pairs together; empty uses the three counts.
    """

    size: Literal["", "S1", "S10", "S50", "S200"] = ""
    users: int = Field(2_000, ge=1)
    items: int = Field(17_632, ge=10)
    pairs: int = Field(93_000, ge=1)
    popularity_exponent: float = Field(0.8, ge=0)
    activity_sigma: float = Field(1.0, ge=0)
    genres: int = Field(20, ge=1)
    taste: float = Field(0.8, ge=0, le=1)
    tags: int = Field(2_000, ge=1)
    tags_per_item: int = Field(20, ge=1)
    audio: bool = True
    seed: int = 0


class DatasetParams(_Section):
    """Which data set the stages after ``prepare`` see, through the canonical tables (one contract)."""

    name: str = DEFAULT_DATASET
    songs: SongsParams = SongsParams()
    files: FilesParams = FilesParams()
    synthetic: SyntheticParams = SyntheticParams()

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in DATASET_NAMES:
            raise ValueError(f"unknown data set {name!r}: use one of {', '.join(DATASET_NAMES)}")
        return name


def item_kind(params: dict[str, Any]) -> str:
    """``artist`` or ``track``: what the items of the data set in a (possibly partial) params dict are.

    Examples
    --------
    >>> item_kind({"dataset": {"name": "spotify-songs"}}), item_kind({"seed": 0})
    ('track', 'artist')
    """
    dataset = params.get("dataset") or {}
    return dataset_spec(dataset.get("name", DEFAULT_DATASET)).item_kind(dataset)


class IngestParams(_Section):
    sources: tuple[Literal["lastfm", "spotify", "lyrics"], ...] = ("lastfm", "spotify", "lyrics")
    download_retries: int = Field(3, ge=1, le=20)
    download_timeout_s: float = Field(60.0, gt=0)


class PrepareParams(_Section):
    weight_transform: Literal["log", "linear", "binary"] = "log"
    weight_alpha: float = Field(1.0, gt=0)
    weight_scale: float = Field(1.0, gt=0)
    max_plays: int = Field(1_000_000, gt=0)
    min_user_interactions: int = Field(5, ge=1)
    min_item_users: int = Field(1, ge=1)
    min_tag_users: int = Field(1, ge=1)


class FeatureGroup(_Section):
    enabled: bool = True
    weight: float = Field(1.0, ge=0)


class TagFeatures(FeatureGroup):
    top_n: int = Field(20, ge=1)
    min_artists: int = Field(3, ge=1)


class AudioFeatures(FeatureGroup):
    bins: int = Field(4, ge=2, le=20)


class LyricsFeatures(FeatureGroup):
    max_features: int = Field(5000, ge=10)
    svd_components: int = Field(16, ge=1)


class FeaturesParams(_Section):
    tags: TagFeatures = TagFeatures()
    audio: AudioFeatures = AudioFeatures(weight=0.5)
    lyrics: LyricsFeatures = LyricsFeatures(weight=0.5)
    genre: FeatureGroup = FeatureGroup(weight=0.5)
    identity: FeatureGroup = FeatureGroup(weight=0.5)
    normalize_rows: bool = True


class SplitParams(_Section):
    test_fraction: float = Field(0.2, gt=0, lt=1)
    valid_fraction: float = Field(0.2, gt=0, lt=1)
    cold_item_fraction: float = Field(0.1, ge=0, lt=1)
    # random: a random share of items; newest: the share with the latest release dates (new music).
    cold_items: Literal["random", "newest"] = "random"
    min_user_interactions: int = Field(5, ge=2)


class LightFMParams(_Section):
    loss: Literal["warp", "bpr", "logistic", "warp-kos"] = "warp"
    no_components: int = Field(64, ge=1, le=1024)
    learning_schedule: Literal["adagrad", "adadelta"] = "adagrad"
    learning_rate: float = Field(0.05, gt=0)
    item_alpha: float = Field(1e-6, ge=0)
    user_alpha: float = Field(1e-6, ge=0)
    max_sampled: int = Field(30, ge=1)
    epochs: int = Field(40, ge=1)
    eval_every: int = Field(5, ge=1)
    patience: int = Field(2, ge=0)
    # A seed ensemble: members trained from seeds seed, seed + 1, ... side by side (one thread each, so
    # still bit-identical), scored by the members' mean score.
    members: int = Field(1, ge=1, le=8)


class EaseParams(_Section):
    l2: float = Field(300.0, gt=0)
    min_item_users: int = Field(3, ge=1)
    # The bounded variant: at most this many (most listened) items are modelled; 20k items need ~12.5 GB.
    max_items: int = Field(20_000, ge=1)


class ItemKNNParams(_Section):
    neighbours: int = Field(100, ge=1)
    shrink: float = Field(10.0, ge=0)


class RP3betaParams(_Section):
    alpha: float = Field(1.0, gt=0)
    beta: float = Field(0.5, ge=0)
    neighbours: int = Field(200, ge=1)


class ALSParams(_Section):
    factors: int = Field(64, ge=1)
    regularization: float = Field(0.01, ge=0)
    alpha: float = Field(1.0, gt=0)
    iterations: int = Field(15, ge=1)


def competitor_params() -> dict[str, type[_Section]]:
    """The settings of every competitor the tuning experiment searches on a grid, by name (its ``train``
    section's type: :data:`recsys.specs.MODELS` names them)."""
    fields = TrainParams.model_fields
    return {spec.name: fields[str(spec.section)].annotation for spec in MODELS if spec.search == "grid"}  # type: ignore[misc]


class SearchParams(_Section):
    """The tuning experiment (``recsys tune``): trials early-stop on validation, up to ``max_epochs``."""

    n_trials: int = Field(8, ge=1)
    metric: str = "ndcg@10"
    max_epochs: int = Field(80, ge=1)
    space: dict[str, list[float | int | str]] = Field(default_factory=dict)
    competitors: dict[str, dict[str, list[float | int]]] = Field(default_factory=dict)
    """Full grids per competitor (``ease``, ``itemknn``, ``rp3beta``, ``als``), each point one trial."""

    @field_validator("space")
    @classmethod
    def _known_keys(cls, space: dict[str, list[float | int | str]]) -> dict[str, list[float | int | str]]:
        unknown = set(space) - set(LightFMParams.model_fields)
        if unknown:
            raise ValueError(f"unknown LightFM parameter(s) in search space: {sorted(unknown)}")
        empty = [key for key, values in space.items() if not values]
        if empty:
            raise ValueError(f"search space lists must not be empty: {empty}")
        return space

    @field_validator("competitors")
    @classmethod
    def _known_competitors(
        cls, competitors: dict[str, dict[str, list[float | int]]]
    ) -> dict[str, dict[str, list[float | int]]]:
        for model, grid in competitors.items():
            known = competitor_params()
            if model not in known:
                raise ValueError(f"unknown competitor {model!r}: use one of {sorted(known)}")
            unknown = set(grid) - set(known[model].model_fields)
            if unknown:
                raise ValueError(f"unknown {model} parameter(s) in its grid: {sorted(unknown)}")
            if any(not values for values in grid.values()):
                raise ValueError(f"the {model} grid's lists must not be empty")
        return competitors


class RankerParams(_Section):
    """The two-stage ranker (``recsys/models/ranker.py``): candidates from generators, a LightGBM ranker."""

    enabled: bool = True  # off: the train stage fits no ranker and evaluate measures none
    # Candidate generators: models of the table (fitted with their own settings) and "content" (feature
    # neighbours of the listener's items, the one that reaches items nobody played).
    generators: tuple[str, ...] = ("lightfm_hybrid", "als", "rp3beta", "itemknn", "most_popular", "content")
    candidates: int = Field(100, ge=1, le=2000)  # each generator's top N unplayed items
    # Items nobody played as candidates too. Off: offline, an item with no training listens is mostly
    # someone's held-out item (the catalogue is built from the listens), which the ranker learns from the
    # popularity features and a served model would not meet (docs/benchmarks.md); they keep the hybrid's
    # order below the candidates.
    never_played: bool = False
    # The hybrid generator fitted on train alone for the ranker's labels (the test-time one is the train
    # stage's hybrid): fewer members and epochs train faster (its features are scale-free ranks and z-scores).
    hybrid_members: int = Field(1, ge=1, le=8)
    hybrid_epochs: int = Field(25, ge=1)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)  # the carve when no validation part is given
    max_listeners: int = Field(20_000, ge=10)  # validation listeners the ranker learns from (memory bound)
    rounds: int = Field(200, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(7, ge=2)
    min_child_samples: int = Field(400, ge=1)
    lambda_l2: float = Field(10.0, ge=0)
    feature_fraction: float = Field(1.0, gt=0, le=1)
    # Session features: this share of the listeners it learns from get a simulated session (shown their
    # first generator's best session_shown candidates, they like the validation items among them and skip
    # the rest, and like up to session_likes more validation items; those items leave their candidates), so
    # it learns how a session moves a list. 0: a ranker without session features (it keeps its order).
    session_share: float = Field(0.5, ge=0, le=1)
    session_shown: int = Field(10, ge=0, le=100)
    session_likes: int = Field(1, ge=0, le=50)
    # The items most listened with a session's likes that join the listener's candidates (what follows a
    # taste the listener's history lacks; 100 cost 0.009 of the next session's hit rate on artists, 20 none).
    session_candidates: int = Field(20, ge=0, le=2000)

    @field_validator("generators")
    @classmethod
    def _known_generators(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = {spec.name for spec in MODELS if not spec.stacked} | {"content"}
        unknown = [name for name in value if name not in known]
        if unknown or not value:
            raise ValueError(f"unknown or no generators {unknown}: use some of {sorted(known)}")
        return value


class TrainParams(_Section):
    """The ``train`` stage fits every model once with these settings (the tuned ones: ``recsys tune``).

    ``final_threads`` is the LightFM threads of those fits: with 1 the same seed gives bit-identical
    models and metrics. ``num_threads`` is the threads of each search trial.
    """

    num_threads: int = Field(2, ge=1)
    final_threads: int = Field(1, ge=1)
    lightfm: LightFMParams = LightFMParams()
    lightfm_cf: LightFMParams = LightFMParams()
    search: SearchParams = SearchParams()
    ease: EaseParams = EaseParams()
    itemknn: ItemKNNParams = ItemKNNParams()
    rp3beta: RP3betaParams = RP3betaParams()
    als: ALSParams = ALSParams()
    ranker: RankerParams = RankerParams()


class BootstrapParams(_Section):
    """The paired bootstrap over listeners behind every comparison's interval (``offline/uncertainty.py``)."""

    resamples: int = Field(2000, ge=100, le=100_000)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class EvaluateParams(_Section):
    ks: tuple[int, ...] = (5, 10, 20)
    primary_k: int = 10
    head_share: float = Field(0.2, gt=0, lt=1)
    groups: tuple[str, ...] = ("niche", "medium", "mainstream")
    bootstrap: BootstrapParams = BootstrapParams()


class GateParams(_Section):
    """When a challenger may replace the champion (both measured on the same test split)."""

    primary_metric: str = "ndcg@10"
    # The model a training run offers as challenger: the hybrid, or "ranker" (the two-stage ranker, served
    # with the generators it stacks on; the bias stage measures the challenger, so its mitigation is its
    # own). The artists' params.yaml offers the ranker; this default (the hybrid) is a run without one.
    # A ranker switched off (train.ranker.enabled false) leaves the hybrid as the challenger.
    challenger: Literal["lightfm_hybrid", "ranker"] = "lightfm_hybrid"
    # The challenger must beat the champion's primary metric by at least this much (absolute).
    min_improvement: float = Field(0.0, ge=0)
    # What min_improvement (and the feedback gate's feedback_max_primary_drop) applies to: "bound", the
    # lower end of the paired bootstrap interval of the lead (evaluate.bootstrap), or "point", the lead.
    min_improvement_on: Literal["point", "bound"] = "bound"
    # Allowed regressions (absolute) on the guard metrics.
    max_coverage_drop: float = Field(0.02, ge=0)
    max_arp_increase_ratio: float = Field(0.05, ge=0)
    max_group_ndcg_drop: float = Field(0.01, ge=0)
    # Retraining on feedback (decide_feedback): non-inferiority instead of a win on the test split.
    feedback_max_primary_drop: float = Field(0.005, ge=0)
    feedback_metric: str = "feedback_hit_rate@10"
    feedback_max_drop: float = Field(0.1, ge=0)
    # "required": a challenger that passes the offline rules is packaged as a candidate, not promoted, until
    # an online experiment says it wins (`recsys experiment decide`).
    online: Annotated[Literal["off", "required"], BeforeValidator(_yaml_off)] = "off"


class MonitoringParams(_Section):
    """Thresholds of the monitoring flow (Evidently drift and popularity bias of served recommendations)."""

    # Dataset drift is flagged when at least this share of the monitored columns drifted.
    drift_share_threshold: float = Field(0.5, gt=0, le=1)
    # Served recommendations are flagged when their mean popularity exceeds the listeners' own by this ratio.
    popularity_lift_threshold: float = Field(2.0, gt=0)
    # What crossing a threshold does: "flag" only reports it, "retrain" also starts the retraining flow.
    # Either way the run emits Prefect events (drift, popularity lift, new feedback), which the feedback
    # retraining deployment's trigger answers once deployed (prefect.yaml): keep "flag" then.
    on_trigger: Literal["flag", "retrain"] = "flag"
    # Feedback events stored since the last retraining that make a monitoring run emit "feedback accumulated".
    min_new_feedback: int = Field(1000, ge=1)
    # The current window: feedback and served recommendations of the last this many days.
    window_days: int = Field(7, ge=1)
    min_events: int = Field(50, ge=1)
    # Served lists hold raw user ids: the monitoring flow deletes those older than this many days.
    served_retention_days: int = Field(30, ge=1)
    # The Evidently workspace each run adds its snapshots to (relative to the project; `recsys monitor ui`).
    workspace: str = Field("reports/monitoring/workspace", min_length=1)


class BiasParams(_Section):
    """Popularity-bias mitigation by re-ranking (``recsys.offline.popularity.rerank_popularity``)."""

    strengths: tuple[float, ...] = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2, 0.3, 0.5)
    # Rule for the default strength: the largest long-tail share whose nDCG@10 is at most this much
    # (relative) below the unmitigated model's.
    max_ndcg_cost: float = Field(0.03, ge=0, lt=1)
    # What the packaged model is served with (its metadata's ``bias_strength``): ``chosen`` (the strength
    # the rule picked, measured at it by the gate) or ``off`` (0: where the offline curve is not to be
    # trusted, e.g. the songs' protocol, until an online experiment says otherwise).
    serve: Annotated[Literal["chosen", "off"], BeforeValidator(_yaml_off)] = "chosen"
    # Calibrated re-ranking (recsys.offline.calibration): strengths measured (0 = unmitigated), the genre
    # and tag columns a listener's mix is counted over, the weight of the popularity tiers' divergence, and
    # the model's best unlistened items each list is chosen from.
    calibration_strengths: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
    calibration_genres: int = Field(30, ge=1, le=500)
    calibration_tier_weight: float = Field(0.0, ge=0)
    calibration_candidates: int = Field(100, ge=10, le=200)  # the service keeps 200 ranked a listener
    # Test listeners beyond which calibration is not measured (nor served): Python-loop work per listener.
    calibration_max_users: int = Field(20_000, ge=1)
    # The served mitigation (recsys.offline.mitigation): none, popularity or calibration, the rule's pick
    # among those costing at most this much nDCG@k (relative) and not lowering the niche group's.
    max_mitigation_cost: float = Field(0.02, ge=0, lt=1)


class RetrainParams(_Section):
    """How feedback becomes training data (see README, "Retraining on feedback")."""

    play_weight: float = Field(1.0, ge=0)
    like_weight: float = Field(2.0, ge=0)
    skip_weight: float = Field(0.5, ge=0)  # subtracted from the pair's weight
    warm_start_epochs: int = Field(5, ge=1)
    feedback_holdout_fraction: float = Field(0.2, ge=0, lt=1)


class ExperimentParams(_Section):
    """Online experiments (``recsys experiment ...``; :mod:`recsys.experiments.report`)."""

    share: float = Field(0.0, ge=0, le=1)
    # None: each experiment draws a secret salt when it starts. A salt written here is public (the file is in
    # git), and a public salt lets anyone compute which arm a listener is in.
    salt: str | None = Field(None, min_length=1, max_length=64)
    horizon_hours: float = Field(24.0, gt=0)
    alpha: float = Field(0.05, gt=0, lt=1)
    min_units: int = Field(200, ge=1)
    metric: Literal["hit_rate", "like_rate"] = "hit_rate"


class SessionParams(_Section):
    """Session adaptation at request time (``recsys.serving.session``; README "Within the session").

    A listener's events since their model was packaged move their vector: each event adds its weight times
    the item's unit embedding to the listener's unit vector (likes and plays toward, skips and dislikes
    away), an event weighing like ``step`` of the items the vector stands for (a known listener's listened
    items, a new listener's favourites), and the result keeps the vector's norm (the balance of taste and
    item popularity the model learnt). Chosen on the real data by ``python -m benchmarks.session_tuning``.
    """

    enabled: bool = True
    like: float = 1.0
    play: float = 0.5
    skip: float = -0.3
    dislike: float = -1.0
    step: float = Field(2.0, ge=0)
    # The newest events of a listener that count (older ones are the retraining's to learn); the service's
    # workers hold 50 a listener, so more would not count.
    max_events: int = Field(50, ge=1, le=50)
    # Items with an event in the session leave the listener's next lists (a dislike always does).
    exclude_shown: bool = True
    # A session-aware two-stage ranker ranks with the session's features (every generator and the booster
    # once per session state: 16-19 ms a listener on the artists). Off: it keeps its order and only the items
    # reacted to leave the list (a cached list read). Measured (README "Within the session"): the same
    # next-session hit rate either way (0.551), at 194 against ~3,000 req/s in `make bench-serve`.
    ranker_features: bool = False

    def weight(self, event: str) -> float:
        """The weight of an event kind (0 for a kind without one)."""
        return float(getattr(self, event, 0.0)) if event in {"like", "play", "skip", "dislike"} else 0.0


class ExploreParams(_Section):
    """Exploration with logged propensities (:mod:`recsys.serving.exploration`; README "Exploring with
    evidence").

    A ``share`` of known listeners' lists show ``slots`` long-tail artists drawn from the model's best
    ``pool_depth`` for the listener in their last places; every shown artist's probability of being shown is
    logged, so ``recsys experiment replay`` can estimate a challenger's like rate from the served log.
    """

    share: float = Field(0.1, ge=0, le=1)
    slots: int = Field(1, ge=1, le=10)
    pool_depth: int = Field(100, ge=1, le=200)


class Params(_Section):
    """All settings of the pipeline; one attribute per ``params.yaml`` section."""

    seed: int = 42
    dataset: DatasetParams = DatasetParams()
    ingest: IngestParams = IngestParams()
    prepare: PrepareParams = PrepareParams()
    features: FeaturesParams = FeaturesParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    gate: GateParams = GateParams()
    monitoring: MonitoringParams = MonitoringParams()
    bias: BiasParams = BiasParams()
    retrain: RetrainParams = RetrainParams()
    experiment: ExperimentParams = ExperimentParams()
    session: SessionParams = SessionParams()
    explore: ExploreParams = ExploreParams()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; a bad value raises :class:`ConfigError` naming its field."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: parameters file not found (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{path}: invalid parameters: {fields}") from exc


def data_dir_from_env() -> Path | None:
    """The local raw-data folder named by ``RECSYS_DATA_DIR``, or None when it is unset."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None
