"""Prefect flows: orchestration only. Each task calls one library function or runs ``dvc``.

Modules
-------
training
    The training flow: every DVC stage as a task, then reports, the gate and packaging (``recsys run``).
tuning
    The LightFM hyperparameter search fanned out as tasks, one per trial (threads or Dask).
evaluation
    Evaluation of one model sharded over users, as tasks on Dask (or threads).
cross_validation
    Every model on several splits with their own seeds, a task per fold on Dask (``recsys cv``).
monitoring
    ``monitoring`` (refresh metrics) and ``drift-monitoring`` (Evidently, bias, events that act).
retraining
    Feedback -> challenger -> gate -> champion -> announced to every replica (nightly and on events).
erasure
    The erasure steps the retraining flow runs for pending jobs, each a task recorded in the jobs.
experiment
    Measure the running online experiment and act: promote, stop or wait.
service
    The flows' calls to the running services (reload, the admin API) and publishing a champion.
deployments
    The four deployments and their schedules (``recsys flows serve``; ``prefect.yaml`` the same).
dvc
    The one adapter to DVC: params overrides, ``dvc repro`` and its log, ``dvc add``, cache surgery.

The project's run lock is :mod:`recsys.run_lock`. Nothing here runs at import time; only
:mod:`recsys.cli` imports these modules.
"""
