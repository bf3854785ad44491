"""The reference topology on several hosts, built on one machine from network namespaces.

``recsys cluster up`` (root: it makes namespaces) starts, each on a host of its own (a network namespace
with its own address, reached over a bridge, with its own folders and processes):

====================  =============  ================================================================
host                  address        runs
====================  =============  ================================================================
``db``                10.231.0.10    PostgreSQL: the feedback store and the announcements every replica
                                     follows (:mod:`recsys.feedback.announcements`)
``control``           10.231.0.20    the Prefect server (API and UI on port 4200)
``worker``            10.231.0.21    a Prefect process worker of the ``recsys-process`` pool: the
                                     project's deployments run here; its BentoML store is the registry
``replica-a``, ``-b`` 10.231.0.31-32 the BentoML service, one worker each, its own store and runtime
``lb``                10.231.0.40    HAProxy on port 8080: round robin over the replicas' ``/readyz``
``eval``              10.231.0.50    a Dask scheduler (port 8786) and two workers: sharded evaluation
====================  =============  ================================================================

The hosts share one disk, so nothing passes between them through a folder except the **model exchange**
(``shared/exchange``), which stands for the volume every host mounts in the documented deployment
(``docs/deployment.md``): promoted models are exported there and imported by the replicas. The project
checkout is the worker host's. ``recsys cluster down`` stops every process and removes the namespaces.

Modules
-------
hosts
    The hosts: addresses, folders, and how a process runs on one (``Cluster``).
network
    A bridge and a namespace per host, and what the machine must have first.
services
    What runs on each host: PostgreSQL, the Prefect server and worker, the replicas, HAProxy, Dask.
lifecycle
    Starting and stopping the whole topology.
"""

from recsys.cluster.hosts import (
    BIN,
    HOSTS,
    REPLICAS,
    SERVICE_PORT,
    STATE_FILE,
    Cluster,
    address,
    namespace,
)
from recsys.cluster.lifecycle import down, running, up
from recsys.cluster.network import make_network, preflight, remove_network
from recsys.cluster.services import (
    answers,
    deploy,
    haproxy_config,
    run_deployment,
    seed,
    start_balancer,
    start_replica,
    wait_for,
)

__all__ = [
    "BIN",
    "HOSTS",
    "REPLICAS",
    "SERVICE_PORT",
    "STATE_FILE",
    "Cluster",
    "address",
    "answers",
    "deploy",
    "down",
    "haproxy_config",
    "make_network",
    "namespace",
    "preflight",
    "remove_network",
    "run_deployment",
    "running",
    "seed",
    "start_balancer",
    "start_replica",
    "up",
    "wait_for",
]
