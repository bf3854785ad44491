"""Prefect flows: orchestration only. They run the DVC stages and call the ``recsys`` library.

- :mod:`flows.training`: the training flow (DVC stages -> reports -> gate -> package), plus the
  DVC-stage task, the run lock and the ``params.yaml`` overrides it shares with the other flows.
- :mod:`flows.search`: the hyperparameter search fanned out as one task per trial (threads or Dask).
- :mod:`flows.deployments`: the monitoring flow and the cron deployments (nightly retraining,
  hourly monitoring) for ``prefect.serve``; ``prefect.yaml`` declares the same for work pools.

Nothing here runs at import time.
"""
