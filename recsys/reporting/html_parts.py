"""Pieces of the self-contained HTML documents (the stakeholder report, the deck): figures as inline PNGs,
tables.

>>> data_uri(b"png").startswith("data:image/png;base64,")
True
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

from matplotlib.figure import Figure

_DPI = 100


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (Agg, through ``savefig``; no pyplot state)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(png: bytes, caption: str) -> str:
    alt = html.escape(caption)
    return f'<figure><img src="{data_uri(png)}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
