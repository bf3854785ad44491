"""The synthetic data set: seeded, shaped as asked, read through the files contract, and learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys import stages
from recsys.columns import Col
from recsys.config import Params, SyntheticParams
from recsys.data.prepare import Prepared, check_contract
from recsys.data.synthetic import SIZES, generate, shape
from recsys.offline.split import load_split
from recsys.offline.tune import validation_scorer

SMALL = SyntheticParams(users=400, items=1_500, pairs=16_000, genres=8, tags=160, tags_per_item=6)


def synthetic_params(synthetic: SyntheticParams) -> Params:
    return Params.model_validate({"dataset": {"name": "synthetic", "synthetic": synthetic.model_dump()}})


def test_the_same_parameters_give_the_same_tables_and_another_seed_others() -> None:
    first, again = generate(SMALL), generate(SMALL)
    for name in ("interactions", "items"):
        pd.testing.assert_frame_equal(first[name], again[name])
    other = generate(SMALL.model_copy(update={"seed": 1}))
    assert not first["interactions"].equals(other["interactions"])


def test_the_tables_have_the_asked_shape() -> None:
    tables = generate(SMALL)
    listens, items = tables["interactions"], tables["items"]
    per_user = listens.groupby("user").size()
    assert len(per_user) == SMALL.users and per_user.min() >= 5
    # Heavy listeners of small genres run out of distinct items: a few per cent short at this size.
    assert abs(len(listens) - SMALL.pairs) / SMALL.pairs < 0.05
    assert not listens[["user", "item"]].duplicated().any() and (listens["plays"] >= 1).all()
    assert len(items) == SMALL.items and items["item"].is_unique
    # A long tail: the most popular 5 % of items hold several times their share of the listens.
    counts = listens.groupby("item").size().sort_values(ascending=False)
    assert counts.iloc[: SMALL.items // 20].sum() / counts.sum() > 0.2
    # Taste: a listener's items concentrate in few genres (random picks would spread over all 8).
    genre = listens["item"].map(items.set_index("item")["genre"])
    top_two = genre.groupby(listens["user"]).agg(lambda g: g.value_counts().iloc[:2].sum() / len(g))
    assert top_two.median() > 0.6
    tags = items["tags"].str.split("|")
    assert tags.map(len).between(1, SMALL.tags_per_item).all()
    assert items["energy"].between(0, 1).all() and items["loudness"].between(-30, 0).all()


def test_a_named_size_sets_the_three_counts() -> None:
    assert shape(SyntheticParams(size="S50")) == SIZES["S50"] == (100_000, 150_000, 4_600_000)
    assert shape(SMALL) == (400, 1_500, 16_000)


def test_stages_read_the_generated_files_through_the_contract(tmp_path: Path) -> None:
    params = synthetic_params(SMALL)
    summary = stages.ingest(params, tmp_path / "raw")
    assert summary["dataset"] == "synthetic" and summary["shape"]["users"] == SMALL.users
    quality = stages.prepare(params, tmp_path / "raw", tmp_path / "prepared")
    assert quality["dataset"] == "synthetic"
    interactions = pd.read_parquet(tmp_path / "prepared" / "interactions.parquet")
    items = pd.read_parquet(tmp_path / "prepared" / "items.parquet")
    assert len(interactions) == summary["sources"][0]["files"][0]["rows"]
    assert set(items[Col.KIND]) == {"artist"} and items[Col.GENRE].notna().all()
    assert (interactions[Col.SOURCE] == "synthetic").all()
    tags = pd.read_parquet(tmp_path / "prepared" / "item_tags.parquet")
    assert tags[Col.ITEM].nunique() == SMALL.items
    # What the later stages rely on holds for the generated data as written.
    check_contract(Prepared(interactions, items, tags, pd.DataFrame()))


@pytest.mark.parametrize("bad", [{"users": 0}, {"taste": 1.5}, {"size": "S7"}])
def test_bad_shape_parameters_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SyntheticParams.model_validate(bad)


def test_a_model_learns_the_generated_structure(tmp_path: Path) -> None:
    """Item-kNN beats most-popular on held-out generated listens: the data carry taste, not just noise."""
    from recsys.config import ItemKNNParams
    from recsys.models import ItemKNN, MostPopular

    params = synthetic_params(SMALL)
    stages.ingest(params, tmp_path / "raw")
    stages.prepare(params, tmp_path / "raw", tmp_path / "prepared")
    stages.split(params, tmp_path / "prepared", tmp_path / "split")
    loaded = load_split(tmp_path / "split")
    score = validation_scorer(loaded.train, loaded.valid, "ndcg@10")
    knn = score(ItemKNN(ItemKNNParams(neighbours=100, shrink=10.0)).fit(loaded.train))
    popular = score(MostPopular().fit(loaded.train))
    assert np.isfinite(knn) and knn > 1.5 * popular
