"""Offline: from prepared tables to a measured, gated model (the DVC stages after ``prepare``).

Modules, in the order of the data flow
--------------------------------------
features
    Item-feature matrix: tags, audio, lyric topics, genres, identity (``features`` stage).
split
    Cold-start items, then a per-user train / valid / test holdout (``split`` stage).
train
    The hybrid's trial loop (search, refit) and the baselines (``train`` stage).
tune
    The seeded hyperparameter search of LightFM on the validation part, for review.
evaluation
    Every user ranked, then the metrics overall, per user group and cold start (``evaluate`` stage).
ranking, batches
    Every evaluated user's top-k and AUC from one scoring pass; users scored in batches on threads.
sharding
    Evaluation sharded over users: the same numbers from several processes or machines.
metrics
    Ranking, accuracy and beyond-accuracy metrics of top-k arrays.
metrics_files
    Evaluation results -> ``metrics/offline.json``, ``summary.json`` and the DVC plot tables.
popularity
    Item popularity, user mainstreaminess and groups, popularity lift, popularity re-ranking.
bias
    The re-ranking trade-off curve and its default strength (``bias`` stage).
calibration
    Calibrated re-ranking (Steck 2018): each list keeps the genre and popularity mix of the listener's own.
mitigation
    Which bias mitigation is served (none, popularity, calibration): the rule weighing accuracy and groups.
served
    A model measured as listeners get it: re-ranked at its served strength, then every metric.
uncertainty
    How sure a comparison is: a paired bootstrap over listeners of one metric of two models.
cross_validation
    Every model trained and measured on several splits drawn with their own seeds (``recsys cv``).
gate
    May a challenger replace the champion? Pure rules, plus measuring the champion on a split.
new_listener
    Offline check of the new-listener path (favourites folded in vs most-popular).

Nothing here imports Prefect or BentoML; stage I/O is in :mod:`recsys.stages`.
"""

__all__ = [
    "batches",
    "bias",
    "calibration",
    "cross_validation",
    "evaluation",
    "features",
    "gate",
    "metrics",
    "metrics_files",
    "mitigation",
    "new_listener",
    "popularity",
    "ranking",
    "served",
    "sharding",
    "split",
    "train",
    "tune",
    "uncertainty",
]
