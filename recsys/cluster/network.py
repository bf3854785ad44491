"""The cluster's network: a bridge and a namespace per host, and what the machine must have first."""

from __future__ import annotations

import os
import shutil
import subprocess

from recsys.cluster.hosts import (
    BRIDGE,
    GATEWAY,
    HOSTS,
    PROJECT_ROOT,
    address,
    namespace,
)
from recsys.errors import ConfigError


def preflight() -> None:
    """Refuse before changing anything when the machine cannot host the topology.

    Raises
    ------
    ConfigError
        Not root, or ``ip``, ``haproxy`` or the PostgreSQL server missing.
    """
    if os.geteuid() != 0:
        raise ConfigError("the cluster makes network namespaces: run it as root (CI is)")
    for tool, package in (("ip", "iproute2"), ("haproxy", "haproxy")):
        if shutil.which(tool) is None:
            raise ConfigError(f"{tool} is missing: apt-get install -y {package} (make cluster-up does)")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    if namespace("db") in listed.split():
        raise ConfigError(
            "a cluster already runs on this machine (namespace rs-db exists; they share fixed addresses): "
            "`recsys cluster down --dir <its folder>` first (any folder also removes stale namespaces)"
        )
    found = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "postgres.sh"), "bindir"], capture_output=True
    )
    if found.returncode != 0:
        raise ConfigError("the PostgreSQL server is missing: scripts/postgres.sh install")


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def make_network() -> None:
    """The bridge and one namespace per host, each with its address and loopback."""
    remove_network()
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    for host in HOSTS:
        ns, outside, inside = namespace(host), f"rs{HOSTS[host]}h", f"rs{HOSTS[host]}c"
        _ip("netns", "add", ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("link", "set", outside, "master", BRIDGE)
        _ip("link", "set", outside, "up")
        _ip("-n", ns, "addr", "add", f"{address(host)}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", GATEWAY)


def remove_network() -> None:
    """Delete the namespaces and the bridge (the veth pairs go with them); what is missing is skipped."""
    for host in HOSTS:
        _ip("netns", "delete", namespace(host), check=False)
        _ip("link", "delete", f"rs{HOSTS[host]}h", check=False)
    _ip("link", "delete", BRIDGE, check=False)
