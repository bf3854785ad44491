"""``recsys cluster up|down|seed|status``: the reference topology of :mod:`recsys.cluster`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.support import guarded

cluster_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The several-host topology.")
DirOpt = Annotated[Path, typer.Option("--dir", help="The cluster's folder (state, each host's folders).")]
DEFAULT_DIR = Path("/tmp/recsys-cluster")


@cluster_app.command("up")
def up_command(
    folder: DirOpt = DEFAULT_DIR,
    project: Annotated[Path, typer.Option(help="The checkout the worker host runs flows in.")] = Path("."),
    seed: Annotated[
        bool,
        typer.Option(help="Publish this checkout's champion (.bentoml, after make run) to the replicas."),
    ] = True,
) -> None:
    """Start every host (root: network namespaces); prints where each answers."""
    from recsys import cluster as topology
    from recsys.errors import ConfigError
    from recsys.registry import bentoml_home, champion

    home = bentoml_home()
    if seed and guarded(lambda: champion(home)) is None:
        guarded(
            lambda: _refuse(ConfigError(f"no champion in {home} to publish: `make run` first, or --no-seed"))
        )
    running = guarded(lambda: topology.up(folder, project))
    if seed:
        tag = guarded(lambda: topology.seed(running, home))
        guarded(
            lambda: topology.wait_for(
                lambda: topology.answers(f"{running.lb_url}/readyz"), "a ready replica behind HAProxy"
            )
        )
        typer.echo(f"serving {tag}")
    typer.echo(_status(running))


@cluster_app.command("down")
def down_command(folder: DirOpt = DEFAULT_DIR) -> None:
    """Stop every process, the database, and remove the namespaces and the folder."""
    from recsys import cluster as topology

    topology.down(folder)
    typer.echo(f"cluster in {folder} stopped and removed")


@cluster_app.command("status")
def status_command(folder: DirOpt = DEFAULT_DIR) -> None:
    """Where each host answers, and the replicas' readiness."""
    from recsys import cluster as topology

    typer.echo(_status(guarded(lambda: topology.Cluster.load(folder))))


def _refuse(error: Exception) -> None:
    raise error


def _status(running: object) -> str:
    from recsys import cluster as topology

    assert isinstance(running, topology.Cluster)
    ready = {}
    for host in topology.REPLICAS:
        try:
            ready[host] = topology.answers(f"{running.replica_url(host)}/readyz")
        except Exception:
            ready[host] = False
    return json.dumps(
        {
            "service (HAProxy)": running.lb_url,
            "replicas": {host: running.replica_url(host) for host in topology.REPLICAS},
            "ready": ready,
            "prefect": running.prefect_api.removesuffix("/api"),
            "dask": running.dask_address,
            "feedback store": running.feedback_url.split("@")[-1],
            "model exchange": str(running.exchange),
            "admin token": f"in {running.root / topology.STATE_FILE}",
        },
        indent=2,
    )
