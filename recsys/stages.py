"""Stage entry points: the only place where pipeline stages read and write files.

Each function is what one ``dvc.yaml`` stage runs (through the ``recsys`` CLI). It reads its inputs,
calls the pure library code, and writes its outputs atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.columns import Col
from recsys.config import Params, data_dir_from_env
from recsys.io import write_json

log = logging.getLogger(__name__)

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
FEATURES_DIR = Path("data/features")
SPLIT_DIR = Path("data/split")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")


def ingest(params: Params, out_dir: Path = RAW_DIR, local_dir: Path | None = None) -> dict[str, Any]:
    """Copy or download every configured source into ``out_dir``, verified."""
    from recsys.data.sources import ingest_all, summarize

    reports = ingest_all(
        params.ingest.sources,
        out_dir,
        local_dir if local_dir is not None else data_dir_from_env(),
        retries=params.ingest.download_retries,
        timeout_s=params.ingest.download_timeout_s,
    )
    summary = summarize(reports)
    write_json(out_dir / "ingest.json", summary)
    return summary


def prepare(params: Params, raw_dir: Path = RAW_DIR, out_dir: Path = PREPARED_DIR) -> dict[str, Any]:
    """Validate, clean and join the raw tables; write the prepared tables and the quality report."""
    from recsys.data.prepare import prepare as run_prepare
    from recsys.data.prepare import write_prepared

    prepared = run_prepare(raw_dir, params.prepare)
    write_prepared(prepared, out_dir)
    return prepared.quality


def eda(prepared_dir: Path = PREPARED_DIR, out_dir: Path = REPORTS_DIR / "eda") -> dict[str, Any]:
    """Plots, the HTML report and the bias signals of the prepared data."""
    from recsys.eda import write_eda

    return write_eda(prepared_dir, out_dir)


def features(
    params: Params, prepared_dir: Path = PREPARED_DIR, out_dir: Path = FEATURES_DIR
) -> dict[str, Any]:
    """Item-feature matrix (tags, audio, lyrics, genre, identity) with its column names."""
    from recsys.features import build_item_features, feature_summary, save_item_features

    items = pd.read_parquet(prepared_dir / "items.parquet")
    item_tags = pd.read_parquet(prepared_dir / "item_tags.parquet")
    built = build_item_features(items, item_tags, params.features, params.seed)
    save_item_features(built, out_dir)
    summary = feature_summary(built)
    write_json(out_dir / "summary.json", summary)
    return summary


def split(params: Params, prepared_dir: Path = PREPARED_DIR, out_dir: Path = SPLIT_DIR) -> dict[str, Any]:
    """Per-user train/valid/test holdout plus held-out cold-start artists."""
    from recsys.split import make_split, save_split, split_summary

    interactions = pd.read_parquet(prepared_dir / "interactions.parquet")
    items = pd.read_parquet(prepared_dir / "items.parquet", columns=[Col.ITEM])
    made = make_split(interactions, params.split, params.seed, items[Col.ITEM].tolist())
    save_split(made, out_dir)
    return split_summary(made)
