"""The CLI turns bad input into one clear message, exit code 2, and no partial output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys.cli.main import app
from recsys.data.schemas import ARTISTS, USER_ARTISTS
from tests.data.raw_fixture import run_prepare, write_raw
from tests.helpers import PROJECT_ROOT

runner = CliRunner()


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "raw")


def prepare(raw: Path, out: Path, params: Path = PROJECT_ROOT / "params.yaml") -> tuple[int, str]:
    return run_prepare(raw, out, params)


def break_listens(raw: Path, line: int, replacement: str) -> None:
    path = raw / USER_ARTISTS.path
    lines = path.read_text().splitlines()
    lines[line - 1] = replacement
    path.write_text("\n".join(lines) + "\n")


def test_prepare_succeeds_on_valid_input(raw: Path, tmp_path: Path) -> None:
    code, output = prepare(raw, tmp_path / "out")
    assert code == 0, output
    assert (tmp_path / "out" / "quality.txt").exists()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda raw: break_listens(raw, 3, "1\t2\t-7"), "column 'weight'"),
        (lambda raw: break_listens(raw, 3, "1\t2\tlots"), "'lots' is not a number"),
        (lambda raw: break_listens(raw, 1, "userID,artistID,weight"), "wrong delimiter"),
        (lambda raw: break_listens(raw, 1, "userID\tartistID\tlistens"), "missing column"),
        (lambda raw: (raw / ARTISTS.path).write_bytes(b"id\tname\n1\t\xff\xfe\n"), "invalid utf-8"),
        (lambda raw: break_listens(raw, 3, "1\t1\t999"), "conflicting duplicate"),
    ],
)
def test_bad_input_exits_2_and_leaves_previous_outputs(raw: Path, tmp_path: Path, damage, expected) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    assert prepare(raw, out)[0] == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    damage(raw)
    code, output = prepare(raw, out)
    assert code == 2
    assert expected in output and "Traceback" not in output
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # nothing half-written


def test_bad_input_writes_nothing_into_an_empty_folder(raw: Path, tmp_path: Path) -> None:
    break_listens(raw, 4, "2\t3")  # truncated row
    code, output = prepare(raw, tmp_path / "fresh")
    assert code == 2 and "truncated" in output
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").iterdir())


def test_invalid_params_name_the_field(raw: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(PROJECT_ROOT / "params.yaml", params)
    params.write_text(params.read_text().replace("min_user_interactions: 5", "min_user_interactions: -1", 1))
    code, output = prepare(raw, tmp_path / "out", params)
    assert code == 2
    assert "prepare.min_user_interactions" in output


def test_ingest_offline_without_local_copy_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)
    params = tmp_path / "params.yaml"
    text = (PROJECT_ROOT / "params.yaml").read_text()
    params.write_text(
        text.replace("download_retries: 3", "download_retries: 1").replace(
            "sources: [lastfm, spotify, lyrics]", "sources: [spotify]"
        )
    )
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # a closed port: no real network is touched
    result = runner.invoke(app, ["ingest", "--params", str(params), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 2
    assert "RECSYS_DATA_DIR" in result.output
    assert not (tmp_path / "raw" / "spotify-songs-tidytuesday-2020-01-21").exists()


def test_parse_overrides_reads_yaml_scalars() -> None:
    from recsys.cli.main import parse_overrides
    from recsys.errors import RecsysError

    assert parse_overrides(["train.search.n_trials=2", "prepare.weight_transform=log", "x=1.0e-6"]) == {
        "train.search.n_trials": 2,
        "prepare.weight_transform": "log",
        "x": 1e-6,
    }
    with pytest.raises(RecsysError, match="key=value"):
        parse_overrides(["no-equals-sign"])


def test_flows_search_rejects_an_unknown_runner() -> None:
    result = runner.invoke(app, ["flows", "search", "--runner", "ray"])
    assert result.exit_code == 2 and "unknown task runner" in result.output


@pytest.mark.parametrize("name", ["spotify-songs", "large-catalogue", "lastfm-artists", "new-data"])
def test_each_preset_is_a_valid_set_of_overrides_and_unknown_presets_are_named(name: str) -> None:
    from recsys.cli.main import load_preset
    from recsys.config import Params
    from recsys.errors import RecsysError

    preset = load_preset(name)
    if name == "spotify-songs":
        assert preset["dataset.name"] == "spotify-songs" and preset["split.cold_items"] == "newest"
    settings = Params().model_dump()
    for key, value in preset.items():
        *parents, leaf = key.split(".")
        node = settings
        for part in parents:
            node = node[part]
        assert leaf in node, key  # every key names an existing setting
        node[leaf] = value
    validated = Params.model_validate(settings)
    if "train.lightfm.epochs" in preset:
        assert validated.train.lightfm.epochs == preset["train.lightfm.epochs"]
    if name == "new-data":
        assert validated.gate.challenger == "ranker" and validated.train.ranker.enabled
    known = r"\['large-catalogue', 'lastfm-artists', 'new-data', 'spotify-songs'\]"
    with pytest.raises(RecsysError, match=rf"no preset 'nope'; known presets: {known}"):
        load_preset("nope")


def test_monitor_history_prints_each_recorded_run_or_says_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    from datetime import UTC, datetime

    from recsys.monitoring.workspace import record_run

    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    missing = runner.invoke(app, ["monitor", "history"])
    assert missing.exit_code == 2 and "no monitoring run has been recorded" in missing.output
    for day, share in ((2, 0.5), (1, 0.25)):
        values = {"drift_share": share} | ({"n_events": 7.0} if day == 2 else {})
        record_run(
            Path("reports/monitoring/workspace"),
            "lastfm-artists",
            values,
            datetime(2026, 12, day, tzinfo=UTC),
        )
    printed = runner.invoke(app, ["monitor", "history"])
    assert printed.exit_code == 0, printed.output
    rows = [json.loads(line) for line in printed.output.splitlines()]
    assert rows == [
        {"timestamp": "2026-12-01T00:00:00+00:00", "drift_share": 0.25},  # n_events not measured that run
        {"timestamp": "2026-12-02T00:00:00+00:00", "drift_share": 0.5, "n_events": 7.0},
    ]


def test_ingest_generates_the_synthetic_data_set(tmp_path: Path) -> None:
    """``recsys ingest`` (what DVC runs) on generated data: the scale benchmark called the stage function,
    so a command that printed a timing only downloads had went unnoticed until a whole run at S50."""
    from flows.dvc import apply_overrides

    params = tmp_path / "params.yaml"
    shutil.copyfile(PROJECT_ROOT / "params.yaml", params)
    tiny = {"users": 40, "items": 50, "pairs": 400}
    apply_overrides(params, {"dataset.name": "synthetic", "dataset.synthetic": tiny})
    result = runner.invoke(app, ["ingest", "--params", str(params), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 0, result.output
    assert "ingested 2 files" in result.output
    summary = json.loads((tmp_path / "raw" / "ingest.json").read_text(encoding="utf-8"))
    assert summary["dataset"] == "synthetic" and summary["shape"]["users"] == 40
    assert "seconds" not in summary  # a DVC output: timings are printed, not stored


def test_monitor_ui_on_an_empty_workspace_says_how_to_fill_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr("os.execv", lambda path, argv: started.append(argv))
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["monitor", "ui", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert "no monitoring run is recorded" in result.output and "recsys monitor run" in result.output
    assert started and started[0][1:3] == ["ui", "--workspace"] and started[0][-1] == "8123"
    (tmp_path / "reports/monitoring/workspace/project").mkdir(parents=True)
    assert "no monitoring run" not in runner.invoke(app, ["monitor", "ui"]).output
