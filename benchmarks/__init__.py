"""Benchmarks: outside the library wheel; ``make bench*`` runs them and writes ``bench/results/``.

Modules
-------
models
    Training and evaluation speed of every model on the real data (``make bench-models``).
serve
    ``/recommend`` under load beside a bare Starlette app (``make bench-serve``).
soak
    A long run at ~80 % of the measured capacity: errors, p99, worker memory (``make bench-soak``).
pacer
    The open-loop client the soak and the capacity search use.
capacity
    The capacity search (bisected paced steps, confirmed).
cpus
    CPU accounting, the CPU speed probe, pinning of load generators and service.
rss
    The workers' resident memory, sampled during the soak.
abuse
    ``/recommend`` latency with anonymous callers hammering ``/search`` and erasures (``make bench-abuse``).
cluster
    The several-host topology: coordination delay, failover, two replicas (``make bench-cluster``).
experiments
    Listening sessions an A/B and an interleaving test need to decide (``make bench-experiments``).
profile
    The hybrid's validation quality per training minute on generated data (``make bench-profile``).
scale, scale_run, scale_retrain, scale_ann
    Every step of the loop at generated sizes, time and peak memory (``make bench-scale``).
scale_ranker
    The two-stage ranker at a generated size: learning, ranking per listener, peak memory.
ranker_boosters
    The ranker's booster (LightGBM settings, CatBoost YetiRank) chosen on validation listeners.
unseen_data
    Every model on a data set the project never trained on (Last.fm tag assignments through ``files``).
calibration_variants
    Serving niche listeners better on the hybrid: calibration's categories, a personal popularity penalty.
session_tuning
    The session settings (``params.yaml`` ``session``): the next session's hit rate per setting, offline.
ranker_session
    The two-stage ranker's session features beside the hybrid's fold-in: the next session, a new taste.
"""

__all__ = [
    "abuse",
    "calibration_variants",
    "capacity",
    "cluster",
    "cpus",
    "experiments",
    "models",
    "pacer",
    "profile",
    "ranker_boosters",
    "rss",
    "scale",
    "scale_ann",
    "scale_ranker",
    "scale_retrain",
    "scale_run",
    "serve",
    "session_tuning",
    "soak",
    "unseen_data",
]
