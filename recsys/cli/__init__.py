"""``recsys ...``: every command line (typer); the only library code that imports ``flows``.

Modules
-------
main
    The ``recsys`` application: ``run``, ``stage``, ``flows``, ``serve``, ``report``, ``erase`` ...
support
    User errors as one line and exit code 2 (``guarded``).
registry
    ``recsys model list|show|promote|rollback``.
monitor
    ``recsys monitor run|ui|history``.
reports
    ``recsys model-card`` and ``recsys report [--slides]``.
experiment
    ``recsys experiment start|stop|report|decide``.
cluster
    ``recsys cluster up|down|status``: the reference topology on several hosts.
"""

from recsys.cli.main import app, main

__all__ = ["app", "main"]
