"""What the model card and the stakeholder report share: model names, number formats, markdown tables and
reading the run's metrics files (a missing or bad file is a :class:`recsys.errors.DataError` naming it).

Examples
--------
>>> fmt(0.123456), fmt(1234.5), fmt(17632)
('0.1235', '1,234.5', '17,632')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recsys.errors import DataError
from recsys.io import require_json
from recsys.specs import MODEL_LABELS


def fmt(value: Any) -> str:
    """A number as the card prints it: integers with separators, floats >= 10 to 1 place, else 4 places."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.4f}"


def pct(value: float | None) -> str:
    """A share as a percentage with one decimal: ``0.3165`` -> ``31.7 %``; ``-`` when not measured (None or
    NaN: e.g. the cost relative to an nDCG of 0)."""
    if value is None or value != value:
        return "-"
    return f"{100 * value:.1f} %"


def lead_cell(offline: Mapping[str, Any], model: str) -> str:
    """The reference model's lead over ``model`` with its interval (``offline.json``'s ``uncertainty``):
    ``"+3.1 % [+1.2 %, +5.1 %]"``; ``"reference"`` for the reference itself, ``"-"`` when not measured.

    >>> lead = {"relative": 0.031, "relative_low": 0.012, "relative_high": 0.051}
    >>> lead_cell({"uncertainty": {"reference": "a", "leads": {"b": lead}}}, "b")
    '+3.1 % [+1.2 %, +5.1 %]'
    """
    uncertainty = offline.get("uncertainty") or {}
    if model == uncertainty.get("reference"):
        return "reference"
    lead = uncertainty.get("leads", {}).get(model)
    if not lead or lead.get("relative") is None or lead.get("relative_low") is None:
        return "-"
    return " ".join(
        [
            f"{100 * lead['relative']:+.1f} %",
            f"[{100 * lead['relative_low']:+.1f} %,",
            f"{100 * lead['relative_high']:+.1f} %]",
        ]
    )


def lead_header(offline: Mapping[str, Any]) -> str | None:
    """The lead column's header, e.g. ``"hybrid leads on ndcg@10 by (95 %)"``; None without leads."""
    uncertainty = offline.get("uncertainty") or {}
    if not uncertainty.get("leads"):
        return None
    confidence = float(uncertainty.get("confidence", 0.95))
    reference = label(uncertainty["reference"])
    return f"{reference} leads on {uncertainty['metric']} by ({100 * confidence:.0f} % interval)"


def label(model: str) -> str:
    """Display name of a model key of ``offline.json``."""
    return MODEL_LABELS.get(model, model)


def load_offline(metrics_dir: Path) -> dict[str, Any]:
    """``metrics/offline.json``, required and checked for its top-level sections."""
    path = metrics_dir / "offline.json"
    offline = require_json(path)
    for key in ("models", "groups", "protocol"):
        if key not in offline:
            raise DataError(f"missing key {key!r}", file=str(path))
    return offline


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ordered_models(models: Mapping[str, Any]) -> list[str]:
    """Model keys in display order: the served model first, most-popular last, unknown names after."""
    known = [name for name in MODEL_LABELS if name in models]
    return known + sorted(name for name in models if name not in MODEL_LABELS)
