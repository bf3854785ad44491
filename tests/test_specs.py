"""The contract of the two tables (``recsys/specs.py``): every registered model builds from its settings,
fits, ranks and comes back from its file under its name; every registered data set goes through its own
ingest and prepare to the canonical tables, with the kind of items the table says. An entry added to either
table is run here with nothing else to write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys import stages
from recsys.columns import Col
from recsys.config import Params, TrainParams, competitor_params, item_kind
from recsys.data.prepare import Prepared, check_contract
from recsys.data.synthetic import write
from recsys.models import load_recommender
from recsys.reporting.formatting import label as model_label
from recsys.specs import (
    DATASETS,
    DEFAULT_DATASET,
    GRID_MODELS,
    MODEL_NAMES,
    MODELS,
    DatasetSpec,
    ModelSpec,
    dataset_spec,
    model_spec,
    resolve,
)
from tests.models.conftest import N_ITEMS, N_USERS, make_interactions, make_item_features

SMALL = {"users": 300, "items": 900, "pairs": 9_000, "genres": 6, "tags": 80, "tags_per_item": 5}


@pytest.mark.parametrize("spec", MODELS, ids=MODEL_NAMES)
def test_every_registered_model_builds_fits_ranks_and_round_trips(spec: ModelSpec, tmp_path: Path) -> None:
    params = Params.model_validate({"train": {"lightfm": {"epochs": 3}, "lightfm_cf": {"epochs": 3}}})
    model = spec.configured(params, threads=1)
    assert model.name == spec.name
    features = make_item_features() if spec.takes_features else None
    model.fit(make_interactions(), features)
    scores = model.score(np.arange(N_USERS))
    assert scores.shape == (N_USERS, N_ITEMS) and np.isfinite(scores).all()
    path = tmp_path / f"{spec.name}.npz"
    model.save(path)
    loaded = load_recommender(path)
    assert loaded.name == spec.name and type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.score(np.arange(N_USERS)), scores)
    assert model_label(spec.name) == spec.label != spec.name


def test_the_model_table_names_real_settings_and_is_read_by_the_tuning_grids() -> None:
    sections = {spec.section for spec in MODELS} - {None}
    assert sections <= set(TrainParams.model_fields)
    assert set(competitor_params()) == set(GRID_MODELS)
    for name, settings in competitor_params().items():
        assert isinstance(getattr(Params().train, str(model_spec(name).section)), settings)
    with pytest.raises(KeyError, match="known models: lightfm_hybrid"):
        model_spec("bpr")


@pytest.mark.parametrize("spec", DATASETS, ids=[spec.name for spec in DATASETS])
def test_every_registered_data_set_ingests_and_prepares_to_the_contract(
    spec: DatasetSpec, tmp_path: Path, real_data_dir: Path
) -> None:
    settings: dict[str, object] = {"name": spec.name}
    if spec.name == "synthetic":
        settings["synthetic"] = SMALL
    if spec.kind == "files":  # a team's own files: here generated ones, named like a team would
        params = Params.model_validate({"dataset": {"name": "synthetic", "synthetic": SMALL}})
        written = write(params.dataset.synthetic, tmp_path / "team")
        folder = tmp_path / "team" / written["sources"][0]["path"].rsplit("/", 1)[-1]
        settings["files"] = {
            "interactions": str(folder / "interactions.parquet"),
            "items": str(folder / "items.parquet"),
            "kind": "artist",
        }
    params = Params.model_validate({"dataset": settings})
    for reference in (spec.ingest, spec.prepare, spec.fingerprint):
        assert callable(resolve(reference)), reference

    summary = stages.ingest(params, tmp_path / "raw", real_data_dir)
    assert summary["dataset"] == spec.name
    assert stages.sources(params, tmp_path / "sources.json", real_data_dir)["dataset"] == spec.name
    stages.prepare(params, tmp_path / "raw", tmp_path / "prepared")

    tables = {
        name: pd.read_parquet(tmp_path / "prepared" / f"{name}.parquet")
        for name in ("interactions", "items", "item_tags")
    }
    check_contract(Prepared(tables["interactions"], tables["items"], tables["item_tags"], pd.DataFrame()))
    kind = item_kind(params.model_dump())
    assert kind == spec.item_kind(params.dataset.model_dump())
    assert set(tables["items"][Col.KIND]) == {kind}


def test_the_data_set_table_is_the_one_params_accepts() -> None:
    assert Params().dataset.name == DEFAULT_DATASET == DATASETS[0].name
    with pytest.raises(ValueError, match="use one of lastfm-artists, spotify-songs, files, synthetic"):
        Params.model_validate({"dataset": {"name": "movielens"}})
    with pytest.raises(KeyError, match="known data sets"):
        dataset_spec("movielens")


def test_a_new_entry_needs_no_other_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model added to the table (here a second most-popular) is trained, named and labelled by the
    places that read the table, with nothing else edited."""
    from recsys import specs
    from recsys.offline import train

    extra = ModelSpec("popular_again", "recsys.models.baselines:MostPopular", None, "most popular, again")
    monkeypatch.setattr(specs, "MODELS", (*specs.MODELS, extra))
    monkeypatch.setattr(train, "MODELS", specs.MODELS)
    assert "popular_again" in [model.name for model in train.baselines(Params())]
