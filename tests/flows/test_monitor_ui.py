"""``recsys monitor ui``: the real Evidently UI on the project's workspace, read over HTTP and in Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from recsys.monitoring import workspace as history
from tests.helpers import PROJECT_ROOT, free_port, wait_for
from tests.serving.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow
T0 = datetime(2026, 12, 1, tzinfo=UTC)
RUNS = [
    {"drift_share": 0.125, "popularity_lift": 1.5, "arp": 40.0, "like_rate_champion": 0.04},
    {"drift_share": 0.625, "popularity_lift": 1.25, "arp": 36.0, "like_rate_champion": 0.06},
]
LIMITS = {"drift_share_threshold": 0.5, "popularity_lift_threshold": 2.0}
TITLES = [title for _, title in history.COUNTERS] + [title for title, _, _ in history.PANELS]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The UI of a project with two recorded runs: its URL and the project's id."""
    project = tmp_path_factory.mktemp("monitored")
    shutil.copy(PROJECT_ROOT / "params.yaml", project / "params.yaml")
    for day, values in enumerate(RUNS):
        recorded = history.record_run(
            project / "reports/monitoring/workspace",
            "lastfm-artists",
            values | LIMITS,
            T0 + timedelta(days=day),
        )
    port = free_port()
    recsys = str(Path(sys.executable).parent / "recsys")
    log = (project / "ui.log").open("wb")
    process = subprocess.Popen(
        [recsys, "monitor", "ui", "--port", str(port)],
        cwd=project,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ | {"DO_NOT_TRACK": "1"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/api/projects", timeout=2).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None  # ended: stop waiting, the assertion below says so

    assert wait_for(answers, timeout_s=120, interval_s=0.5) and process.poll() is None, (
        project / "ui.log"
    ).read_text(encoding="utf-8", errors="replace")
    yield url, recorded["project_id"], project
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)
    log.close()


def test_the_ui_serves_the_dashboard_and_every_recorded_run(ui: tuple[str, str, Path]) -> None:
    url, project_id, project = ui
    projects = httpx.get(f"{url}/api/projects").json()
    assert [(p["id"], p["name"]) for p in projects] == [(project_id, "recsys lastfm-artists")]
    dashboard = httpx.get(f"{url}/api/v2/dashboards/{project_id}").json()
    assert [panel["title"] for panel in dashboard["panels"]] == TITLES
    # The series the dashboard's drift panel plots: one point per recorded run, in time order, and the
    # threshold as a line of its own.
    (drift_panel,) = [panel for panel in dashboard["panels"] if panel["title"] == "Data drift"]
    assert [value["legend"] for value in drift_panel["values"]] == ["drift_share", "threshold"]

    def series() -> list[list[float]]:
        wanted = [
            {"tags": [], "metadata": {}, "metric": metric["metric"], "metric_labels": metric["metric_labels"]}
            for metric in drift_panel["values"]
        ]
        answer = httpx.post(
            f"{url}/api/v2/snapshots/{project_id}/data_series_batch", json={"series_filter": wanted}
        )
        assert answer.status_code in (200, 201), answer.text
        return [line["values"] for line in answer.json()["series"]]

    assert series() == [[run["drift_share"] for run in RUNS], [0.5] * len(RUNS)]
    # A run recorded while the UI is up is in the next answer: no restart.
    later = {"drift_share": 0.75} | LIMITS
    history.record_run(
        project / "reports/monitoring/workspace", "lastfm-artists", later, T0 + timedelta(days=5)
    )
    assert series() == [[run["drift_share"] for run in RUNS] + [0.75], [0.5] * (len(RUNS) + 1)]


def test_the_dashboard_renders_in_a_browser(ui: tuple[str, str, Path]) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/chromium.sh`")
    sync_api = pytest.importorskip("playwright.sync_api")
    url, project_id, _ = ui
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{url}/projects/{project_id}")
        for title in TITLES:
            page.get_by_text(title, exact=True).first.wait_for()
        body = page.inner_text("body")
        assert "recsys lastfm-artists" in body and "2026-12-02" in body  # the second run's point
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "evidently-dashboard.png"), full_page=True)
        browser.close()
