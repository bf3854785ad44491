"""The champion's metrics for the gate: recorded on the same split, re-measured on another, kept (with a
note) when the catalogue changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from recsys import registry
from recsys.config import Params
from recsys.offline.evaluation import evaluate
from recsys.offline.popularity import item_popularity, mainstreaminess_groups, reranked_scores
from recsys.offline.split import load_split, make_split, save_split
from recsys.registry.comparison import comparable_champion
from tests.helpers import Project, build_project


@pytest.fixture
def project_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Project, Path]:
    """A tiny project and a model store of its own (``BENTOML_HOME``)."""
    home = tmp_path / "home"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    return build_project(tmp_path / "data"), home


def test_the_gate_measures_the_champion_on_this_runs_test_split(
    tmp_path: Path, project_home: tuple[Project, Path]
) -> None:
    built, home = project_home
    tag = built.save(0.1, home)
    registry.promote(tag, home=home)
    params = Params()
    champion = registry.champion()
    assert champion is not None

    same, how, _ = comparable_champion(tmp_path, params, champion)
    assert same == champion.candidate and how.startswith("recorded when")

    # Another split of the same listens: the recorded 0.1 is from another test set, so it is re-measured.
    split = load_split(built.split)
    rows, cols = split.train_full.nonzero()
    listens = pd.DataFrame(
        {
            "user_id": [split.user_ids[r] for r in rows],
            "item_id": [split.item_ids[c] for c in cols],
            "weight": split.train_full[rows, cols].A1,
        }
    )
    save_split(make_split(listens, params.split, 99, split.item_ids), built.split)
    again, how, _ = comparable_champion(tmp_path, params, champion)
    assert how == "re-measured on this test split (re-ranking strength 0)"
    assert again["metrics"]["ndcg@10"] != 0.1 and set(again["groups"]) <= {"niche", "medium", "mainstream"}

    # A catalogue the champion does not know cannot be measured: the recorded metrics, with a note.
    other = load_split(built.split)
    save_split(dataclasses.replace(other, item_ids=[f"x{i}" for i in other.item_ids]), built.split)
    kept, how, _ = comparable_champion(tmp_path, params, champion)
    assert kept == champion.candidate and "another test split" in how


def test_a_champion_packaged_with_a_reranking_strength_is_re_measured_at_it(
    tmp_path: Path, project_home: tuple[Project, Path]
) -> None:
    built, home = project_home
    plain_tag, served_tag = built.save(0.1, home), built.save(0.1, home, bias_strength=2.0)
    params = Params()
    # Recorded on another data version: both are re-measured on this split, each as it is served.
    measured = {}
    for tag in (plain_tag, served_tag):
        info = next(model for model in registry.list_models() if model.tag == tag)
        elsewhere = dataclasses.replace(info, metadata=info.metadata | {"data_version": "another"})
        measured[tag], how, _ = comparable_champion(tmp_path, params, elsewhere)
        assert how.startswith("re-measured on this test split")
    artifact = registry.load_artifact(served_tag)
    split = load_split(built.split)
    groups = mainstreaminess_groups(split.train_full, params.evaluate.groups)
    served = reranked_scores(artifact.model.score, item_popularity(split.train_full), 2.0)
    expected = evaluate(served, split.train_full, split.test, params.evaluate, groups)
    assert measured[served_tag]["bias_strength"] == 2.0 and measured[plain_tag]["bias_strength"] == 0.0
    assert measured[served_tag]["metrics"]["arp@10"] == pytest.approx(expected.metrics["arp@10"])
    assert measured[served_tag]["metrics"]["arp@10"] < measured[plain_tag]["metrics"]["arp@10"]
