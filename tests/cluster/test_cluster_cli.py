"""``recsys cluster`` without a topology: clear refusals, and the load balancer's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys import cluster as topology
from recsys.cli.main import app


def test_status_of_no_cluster_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["cluster", "status", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "no cluster in" in result.output and "Traceback" not in result.output


def test_up_without_a_champion_to_publish_refuses_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "empty-store"))
    result = CliRunner().invoke(app, ["cluster", "up", "--dir", str(tmp_path / "cluster")])
    assert result.exit_code == 2 and "make run` first, or --no-seed" in result.output
    assert not (tmp_path / "cluster").exists()


def test_haproxy_checks_readiness_and_retries_a_failed_connection_on_the_other_replica() -> None:
    config = topology.haproxy_config()
    for host in topology.REPLICAS:
        assert f"server {host} {topology.address(host)}:{topology.SERVICE_PORT} check" in config
    assert "option httpchk GET /readyz" in config and "option redispatch" in config
    assert "retry-on conn-failure" in config
    assert len({topology.address(host) for host in topology.HOSTS}) == len(topology.HOSTS)
