"""A map of the catalogue: what the model learned and where the long tail sits, in two dimensions.

Two views of every item, each reduced to two dimensions: the hybrid's learned item embeddings (what the
model uses to rank) and the items' audio features (Spotify's danceability, energy, ...; only items matched
to Spotify have them). Each is shown by PCA (linear, all items) and by t-SNE (neighbourhoods kept, on a
sample), coloured by genre (where known) or by popularity (log listeners), so a reader sees whether the
model groups items by genre and whether the long tail lies apart from the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from recsys.columns import AUDIO_FEATURES, Col
from recsys.paths import ITEMS_TABLE

MAX_TSNE = 2500
"""Items t-SNE places (those with a genre first, then a seeded sample): the whole map of the 17,632 artists,
loading included, took 8.5 s on the 2-core development VM."""
UNKNOWN = "unknown"


@dataclass(frozen=True)
class CatalogueMap:
    """Per item: ``genre``, ``log_listeners``, and x/y of each view (NaN where the view has no point)."""

    points: pd.DataFrame
    n_items: int
    n_audio: int
    explained: dict[str, float]  # the share of variance the two PCA axes keep, per view


def catalogue_map(
    embeddings: np.ndarray, items: pd.DataFrame, listeners: np.ndarray, seed: int = 0
) -> CatalogueMap:
    """The map of ``embeddings`` (one row per item of ``items``, in order) and of the items' audio features.

    Parameters
    ----------
    embeddings
        ``(n_items, d)`` learned item embeddings (:meth:`LightFMRecommender.item_representations`).
    items
        The prepared items table in the same order (``genre`` and the audio columns, NaN when unknown).
    listeners
        ``(n_items,)`` training listeners per item.
    """
    if len(embeddings) != len(items) or len(listeners) != len(items):
        raise ValueError(
            f"{len(embeddings)} embeddings, {len(items)} items, {len(listeners)} popularity values"
        )
    genre = (
        items[Col.GENRE].fillna(UNKNOWN).astype(str).to_numpy()
        if Col.GENRE in items
        else np.full(len(items), UNKNOWN)
    )
    points = pd.DataFrame(
        {Col.ITEM: items[Col.ITEM].to_numpy(), "genre": genre, "log_listeners": np.log1p(listeners)}
    )
    explained: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    emb = np.asarray(embeddings, dtype=np.float64)
    pca = PCA(n_components=2, random_state=seed).fit(emb)
    points[["emb_pca_x", "emb_pca_y"]] = pca.transform(emb)
    explained["embeddings"] = float(pca.explained_variance_ratio_.sum())
    chosen = _sample(genre != UNKNOWN, rng)
    points[["emb_tsne_x", "emb_tsne_y"]] = np.nan
    points.loc[chosen, ["emb_tsne_x", "emb_tsne_y"]] = _tsne(emb[chosen], seed)
    columns = [c for c in AUDIO_FEATURES if c in items]
    audio = items[columns].to_numpy(dtype=np.float64) if columns else np.empty((len(items), 0))
    has_audio = np.isfinite(audio).all(axis=1) if columns else np.zeros(len(items), dtype=bool)
    points[["audio_pca_x", "audio_pca_y"]] = np.nan
    if has_audio.sum() >= 3:
        standard = (audio[has_audio] - audio[has_audio].mean(axis=0)) / (audio[has_audio].std(axis=0) + 1e-12)
        audio_pca = PCA(n_components=2, random_state=seed).fit(standard)
        points.loc[has_audio, ["audio_pca_x", "audio_pca_y"]] = audio_pca.transform(standard)
        explained["audio"] = float(audio_pca.explained_variance_ratio_.sum())
    return CatalogueMap(points, len(items), int(has_audio.sum()), explained)


def one_map_figure(found: CatalogueMap, items_word: str = "artists") -> Figure:
    """One large panel for a slide: the learned embeddings (t-SNE of a sample) coloured by popularity, with
    a colour bar that says "few" and "many" listeners rather than a log scale."""
    points = found.points
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    ax = fig.subplots()
    x, y = points["emb_tsne_x"], points["emb_tsne_y"]
    shown = x.notna()
    order = points.loc[shown, "log_listeners"].sort_values().index  # popular items drawn last, on top
    values = points.loc[order, "log_listeners"]
    scatter = ax.scatter(x[order], y[order], s=14, c=values, cmap="viridis", rasterized=True)
    bar = fig.colorbar(scatter, ax=ax, shrink=0.7)
    bar.set_ticks([float(values.min()), float(values.max())], labels=["few listeners", "many listeners"])
    bar.ax.tick_params(labelsize=13)
    sample = f"{int(shown.sum()):,} of the {found.n_items:,} {items_word}"
    ax.set_title(f"{sample}, placed by what the model learned", fontsize=16)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def map_figure(found: CatalogueMap, items_word: str = "artists") -> Figure:
    """Four panels: embeddings by PCA (genre) and t-SNE (popularity), audio features by PCA (genre and
    popularity)."""
    points = found.points
    fig = Figure(figsize=(11, 9), layout="constrained")
    axes = fig.subplots(2, 2)
    genres = [g for g in points["genre"].value_counts().index if g != UNKNOWN][:8]
    panels = [
        (
            axes[0][0],
            "emb",
            "pca",
            "genre",
            f"Learned embeddings, PCA ({found.explained['embeddings']:.0%} of variance)",
        ),
        (axes[0][1], "emb", "tsne", "popularity", "Learned embeddings, t-SNE (a sample)"),
        (axes[1][0], "audio", "pca", "genre", "Audio features, PCA"),
        (axes[1][1], "audio", "pca", "popularity", "Audio features, PCA, by popularity"),
    ]
    scatter = None
    for ax, view, method, colour, title in panels:
        x, y = points[f"{view}_{method}_x"], points[f"{view}_{method}_y"]
        shown = x.notna()
        if not shown.any():
            ax.set_axis_off()
            ax.set_title(f"{title}: no item has them")
            continue
        if colour == "genre":
            unknown = shown & (points["genre"] == UNKNOWN)
            ax.scatter(x[unknown], y[unknown], s=2, c="#d0d0d0", label=UNKNOWN, rasterized=True)
            for name in genres:
                mask = shown & (points["genre"] == name)
                ax.scatter(x[mask], y[mask], s=4, label=name, rasterized=True)
            ax.legend(fontsize=7, markerscale=3, loc="best")
        else:
            order = points.loc[shown, "log_listeners"].sort_values().index  # popular items drawn last, on top
            scatter = ax.scatter(
                x[order], y[order], s=3, c=points.loc[order, "log_listeners"], cmap="viridis", rasterized=True
            )
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes[:, 1]), label="log(1 + listeners)", shrink=0.6)
    fig.suptitle(f"The catalogue: {found.n_items:,} {items_word}, {found.n_audio:,} with audio features")
    return fig


def load_map(
    model_path: Path, split: Any, item_features: Any, prepared_dir: Path, seed: int = 0
) -> CatalogueMap:
    """The map of a trained hybrid (``models/lightfm_hybrid.npz``) and the project's items; ``split`` and
    ``item_features`` as :func:`recsys.stages.training_inputs` returns them."""
    from recsys.models import load_recommender
    from recsys.offline.popularity import item_popularity

    model = load_recommender(model_path)
    _, embeddings = model.item_representations(item_features.matrix)  # type: ignore[attr-defined]
    items = pd.read_parquet(prepared_dir / ITEMS_TABLE).set_index(Col.ITEM)
    items = items.reindex(split.item_ids).reset_index(names=Col.ITEM)
    return catalogue_map(embeddings, items, item_popularity(split.train_full), seed)


def _sample(preferred: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to :data:`MAX_TSNE` item indices: the ``preferred`` ones first, then a random sample of the rest."""
    first = np.flatnonzero(preferred)[:MAX_TSNE]
    rest = np.flatnonzero(~preferred)
    extra = rng.choice(rest, size=min(len(rest), MAX_TSNE - len(first)), replace=False)
    return np.sort(np.concatenate([first, extra]))


def _tsne(values: np.ndarray, seed: int) -> np.ndarray:
    if len(values) < 5:
        return np.full((len(values), 2), np.nan)
    perplexity = float(min(30, (len(values) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(values)
