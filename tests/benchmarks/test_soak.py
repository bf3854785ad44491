"""The soak's own parts: the verdict against its targets and the service's environment."""

from __future__ import annotations

from pathlib import Path

from benchmarks.soak import service_env, verdict


def test_verdict_checks_each_target() -> None:
    good = verdict({"errors": 0, "p99_ms": 7.9}, unloaded_p99_ms=4.0, rss_growth=0.02)
    assert good["meets_targets"]
    assert good["p99_ratio"] == 1.98
    bad = verdict({"errors": 1, "p99_ms": 8.1}, unloaded_p99_ms=4.0, rss_growth=0.10)
    assert bad["checks"] == {
        "zero_errors": False,
        "p99_within_2x_unloaded": False,
        "rss_growth_below_10pct": False,
    }
    assert not bad["meets_targets"]


def test_the_service_gets_one_worker_per_cpu_after_any_configured_overrides(tmp_path: Path) -> None:
    base = {"BENTOML_CONFIG_OPTIONS": "services.Recommender.traffic.timeout=5", "PATH": "/bin"}
    env = service_env(base, tmp_path / "home", tmp_path, workers=3)
    assert env["BENTOML_CONFIG_OPTIONS"].split() == [
        "services.Recommender.traffic.timeout=5",
        "services.Recommender.workers=3",
    ]
    assert env["BENTOML_HOME"] == str(tmp_path / "home") and env["PATH"] == "/bin"
    assert env["RECSYS_FEEDBACK_URL"] == f"sqlite:///{tmp_path / 'feedback.db'}"
    assert "BENTOML_CONFIG_OPTIONS" not in service_env({}, tmp_path, tmp_path, workers=None)
