"""``recsys model list|show|promote|rollback`` against a real BentoML store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys.cli.registry import model_app
from recsys.registry import CHAMPION, RETIRED
from tests.helpers import Project


def test_cli_lists_shows_promotes_and_rolls_back(
    project: Project, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Away from a checkout whose own service left a feedback store (data/feedback), which a promotion
    # announces to: here no service runs, so nothing is announced.
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert "no music_recommender models" in runner.invoke(model_app, ["list"]).output
    first, second = project.save(0.2, home), project.save(0.3, home)

    promoted = runner.invoke(model_app, ["promote", first])
    assert promoted.exit_code == 0, promoted.output
    assert promoted.output.strip() == f"promoted {first} to champion (first champion)"
    promoted = runner.invoke(model_app, ["promote", second, "--home", str(home)])
    assert promoted.output.strip() == f"promoted {second} to champion; {first} retired"

    listing = runner.invoke(model_app, ["list"]).output.splitlines()
    assert listing[0].split()[:2] == ["tag", "stage"]
    assert [line.split()[:2] for line in listing[1:3]] == [[first, RETIRED], [second, CHAMPION]]
    assert "0.3000" in listing[2] and listing[0].split()[4:6] == ["served", "at"]
    assert listing[3].startswith("metrics as served: re-ranked against popularity")

    shown = json.loads(runner.invoke(model_app, ["show"]).output)
    assert shown["tag"] == second and shown["metadata"]["git_commit"].startswith("0123")
    assert shown["size_bytes"] > 0

    rolled = runner.invoke(model_app, ["rollback"])
    assert rolled.output.strip() == f"rolled back: {second} is rolled_back; {first} is the champion again"
    failed = runner.invoke(model_app, ["rollback"])
    assert failed.exit_code == 2
    assert "error: nothing to roll back to" in failed.output
    missing = runner.invoke(model_app, ["show", "nosuchversion"])
    assert missing.exit_code == 2 and "no model music_recommender:nosuchversion" in missing.output
