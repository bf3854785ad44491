"""The file catalogue: every folder and file the stages hand to each other, named once, relative to the
project root (as kedro's ``catalog.yml`` names each data set once); read by every stage, flow and report.

The DVC stages in ``dvc.yaml`` write exactly these folders; flows join them onto a project root
(``root / SPLIT_DIR``), and the CLI uses them, relative to the working directory, as defaults.
"""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")

SOURCES_RECORD = Path("data/sources.json")
"""What ingest reads, by content (:mod:`recsys.data.fingerprint`): ingest's dependency."""
RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
INTERACTIONS_TABLE = "interactions.parquet"
ITEMS_TABLE = "items.parquet"
ITEM_TAGS_TABLE = "item_tags.parquet"
QUALITY_JSON = "quality.json"
QUALITY_TEXT = "quality.txt"
"""The prepared tables and the data-quality report, files of :data:`PREPARED_DIR` (the data-set contract:
``docs/architecture.md``)."""
FEATURES_DIR = Path("data/features")
SPLIT_DIR = Path("data/split")
FEEDBACK_DIR = Path("data/feedback")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")

EDA_DIR = REPORTS_DIR / "eda"
MONITORING_DIR = REPORTS_DIR / "monitoring"
SEARCH_DIR = REPORTS_DIR / "tuning"
CV_DIR = REPORTS_DIR / "cv"
RUN_SUMMARY = REPORTS_DIR / "run.json"
OFFLINE_METRICS = METRICS_DIR / "offline.json"
BIAS_METRICS = METRICS_DIR / "bias.json"
EDA_REPORT = EDA_DIR / "eda.html"
MODEL_CARD = Path("docs/model_card.md")
FEEDBACK_CURSOR = FEEDBACK_DIR / "cursor.json"


def model_file(name: str, models_dir: Path = MODELS_DIR) -> Path:
    """``models/<name>.npz``."""
    return models_dir / f"{name}.npz"
