"""The README in a newcomer's order on a fresh clone (#29): every path works as written and says what next.

One test, one clone of the working tree with ``../shared`` beside it, the installed environment shared and
nothing of the Makefile's environment set (``recsys`` must find the project's stores and data itself):
artists, songs and back, a challenger into an experiment on the running service and out, monitoring once and
its UI with data, then a team's own files with a bad row, fixed and rerun. Real data, real training with
settings that train in seconds (``QUICK``), so each ``recsys run`` is the real flow at a small cost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tests.helpers import PROJECT_ROOT, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
BIN = Path(sys.executable).parent
QUICK = [
    "train.lightfm.members=1", "train.lightfm.no_components=8", "train.lightfm.epochs=2",
    "train.lightfm_cf.no_components=8", "train.lightfm_cf.epochs=2", "train.als.iterations=2",
    "train.rp3beta.neighbours=50", "train.itemknn.neighbours=50", "bias.strengths=[0.0,0.1]",
]  # fmt: skip
"""``-S`` settings that make each run train in seconds; everything else is the README's."""
ADMIN, CLIENT = "newcomer-admin", "newcomer-backend"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Path:
    """``git clone`` of the working tree with ``shared/data`` beside it, as CI and a newcomer have it."""
    top = tmp_path_factory.mktemp("newcomer")
    (top / "shared").mkdir()
    (top / "shared" / "data").symlink_to(real_data_dir)
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(top / "main")], check=True)
    return top / "main"


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The caller's environment without what the Makefile would set: ``recsys`` must find it alone."""
    unset = {"BENTOML_HOME", "PREFECT_HOME", "RECSYS_DATA_DIR", "RECSYS_DATASET", "RECSYS_FEEDBACK_URL"}
    cleared = {
        key: value for key, value in os.environ.items() if key not in unset and not key.startswith("PREFECT_")
    }
    return cleared | {"RECSYS_ADMIN_TOKEN": ADMIN, "RECSYS_CLIENT_TOKENS": CLIENT}


def recsys(clone: Path, env: dict[str, str], *args: str, code: int = 0, **extra: str) -> str:
    """``.venv/bin/recsys ARGS`` in the clone, as the README types it; its output (stdout and stderr)."""
    done = subprocess.run(
        [str(BIN / "recsys"), *args], cwd=clone, env=env | extra, capture_output=True, text=True, timeout=1200
    )
    output = done.stdout + done.stderr
    assert done.returncode == code, f"recsys {' '.join(args)} exited {done.returncode}:\n{output[-4000:]}"
    return output


def run(clone: Path, env: dict[str, str], *args: str, code: int = 0) -> str:
    return recsys(
        clone, env, "run", *args, *(part for setting in QUICK for part in ("-S", setting)), code=code
    )


@contextmanager
def serving(clone: Path, env: dict[str, str]) -> Iterator[str]:
    """``make serve`` (``recsys serve``) in the clone, with the README's two tokens; its URL."""
    port = free_port()
    log = (clone / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "recsys"), "serve", "--port", str(port)],
        cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return process.poll() is not None or httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_for(ready, timeout_s=180, interval_s=0.5) and process.poll() is None, (
            clone / "serve.log"
        ).read_text()
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
        log.close()


def test_the_readme_in_a_newcomers_order(clone: Path, env: dict[str, str], tmp_path: Path) -> None:
    """The steps depend on each other (a champion before a challenger): one test, in the README's order."""
    artists_songs_and_back(clone, env)
    with serving(clone, env) as service:
        challenger_in_and_out(clone, env, service)
    monitoring_once_and_its_ui(clone, env)
    own_files_a_bad_row_then_the_fixed_file(clone, env, tmp_path)


def artists_songs_and_back(clone: Path, env: dict[str, str]) -> None:
    # make run: the artists, in the project's own stores (the Makefile's defaults, found by recsys itself).
    first = run(clone, env)
    assert "packaged: music_recommender:" in first and "(champion)" in first
    assert "next: make serve (serves music_recommender:" in first
    assert "Traceback" not in first and "pip install" not in first and "deploy" not in first.lower()
    assert (clone / ".bentoml" / "models" / "music_recommender").is_dir()  # the project's store

    # Songs, served from the same store, and back to the artists.
    songs = run(clone, env, "--preset", "spotify-songs")
    assert "next: RECSYS_DATASET=spotify-songs make serve" in songs
    shown = json.loads(recsys(clone, env, "model", "show", "champion", RECSYS_DATASET="spotify-songs"))
    assert shown["tag"].startswith("music_recommender_spotify_songs:") and shown["stage"] == "champion"
    back = run(clone, env, "--preset", "lastfm-artists")
    assert "next: make serve (serves music_recommender:" in back
    params = yaml.safe_load((clone / "params.yaml").read_text(encoding="utf-8"))
    committed = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert params["dataset"] == committed["dataset"] and params["split"] == committed["split"]


def challenger_in_and_out(clone: Path, env: dict[str, str], service: str) -> None:
    summary = run(clone, env, "--candidate", "-S", "bias.serve=off")
    assert "the champion is unchanged" in summary
    packaged = [line for line in summary.splitlines() if line.startswith("packaged: ")]
    assert packaged and packaged[0].endswith("(candidate)")
    candidate = packaged[0].removeprefix("packaged: ").removesuffix(" (candidate)")
    assert f"recsys experiment start --mode interleave --challenger {candidate}" in summary

    at = ("--service-url", service)  # the README's is http://127.0.0.1:3000
    started = recsys(
        clone, env, "experiment", "start", "--mode", "interleave", "--challenger", candidate, *at
    )
    assert json.loads(started)["challenger"] == candidate
    # Traffic: listeners on the page would do this; the backend's calls with its token do the same.
    with httpx.Client(base_url=service, timeout=30, headers={"X-Client-Token": CLIENT}) as backend:
        for n in range(30):
            answer = backend.post("/recommend", json={"user_id": str(2 + n), "k": 10}).json()
            first = answer["items"][0]
            event = {
                "user_id": str(2 + n),
                "item_id": first["item_id"],
                "event": "like",
                "event_id": f"nc-{n}",
            }
            assert backend.post("/feedback", json={"events": [event]}).status_code == 200
    report = json.loads(recsys(clone, env, "experiment", "report"))
    assert report["challenger"] == candidate and report["decision"] in (
        "needs more traffic",
        "challenger wins",
        "challenger loses",
    )
    assert (clone / "reports" / "experiment.json").is_file()
    decided = recsys(clone, env, "experiment", "decide", "--service-url", service)
    assert "->" in decided
    recsys(clone, env, "experiment", "stop", *at)
    with httpx.Client(base_url=service, timeout=30, headers={"X-Admin-Token": ADMIN}) as admin:
        assert admin.get("/admin/experiment").json()["mode"] == "off"


def monitoring_once_and_its_ui(clone: Path, env: dict[str, str]) -> None:
    monitored = recsys(clone, env, "monitor", "run")
    assert "drift share:" in monitored and "(threshold 0.5" in monitored and "recsys monitor ui" in monitored
    port = free_port()
    ui = subprocess.Popen(
        [str(BIN / "recsys"), "monitor", "ui", "--port", str(port)],
        cwd=clone, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:

        def projects() -> list[dict[str, str]] | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/projects", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                return None

        assert wait_for(lambda: projects() is not None, timeout_s=120, interval_s=0.5)
        assert [project["name"] for project in projects() or []] == ["recsys lastfm-artists"]
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)


def own_files_a_bad_row_then_the_fixed_file(clone: Path, env: dict[str, str], tmp_path: Path) -> None:
    listens = pd.DataFrame(
        [(f"fan{u:02d}", f"s{(u * 3 + k) % 24:02d}", 1 + (u + k) % 5) for u in range(30) for k in range(8)],
        columns=["who", "song", "n"],
    )
    songs = pd.DataFrame(
        {
            "song": [f"s{n:02d}" for n in range(24)],
            "title": [f"Song {n}" for n in range(24)],
            "singer": [f"Singer {n % 5}" for n in range(24)],
            "style": [["pop", "rock", "jazz"][n % 3] for n in range(24)],
            "labels": [f"mood{n % 4}|era{n % 3}" for n in range(24)],
        }
    )
    broken = listens.astype({"n": object})
    broken.loc[4, "n"] = "lots"
    broken.to_csv(tmp_path / "listens.csv", index=False)
    songs.to_parquet(tmp_path / "songs.parquet", index=False)
    files = [
        "-S", "dataset.name=files",
        "-S", f"dataset.files.interactions={tmp_path / 'listens.csv'}",
        "-S", f"dataset.files.items={tmp_path / 'songs.parquet'}",
        "-S", "dataset.files.columns={user: who, item: song, plays: n, name: title, artist: singer, "
        "genre: style, tags: labels}",
    ]  # fmt: skip
    failed = run(clone, env, *files, code=2)
    assert (
        failed.strip()
        .splitlines()[-1]
        .startswith(f"error: stage 'prepare': {tmp_path / 'listens.csv'}, row 5, column 'n': 'lots' is not")
    )
    assert "Traceback" not in failed
    listens.to_csv(tmp_path / "listens.csv", index=False)  # fixed
    fixed = run(clone, env, *files)
    assert "ingest ran" in fixed and "next: RECSYS_DATASET=files make serve" in fixed
    quality = json.loads((clone / "data" / "prepared" / "quality.json").read_text(encoding="utf-8"))
    assert quality["dataset"] == "files" and quality["summary"]["users"] == 30
    shutil.rmtree(
        clone / ".prefect", ignore_errors=True
    )  # the clone's own Prefect database: not needed after
