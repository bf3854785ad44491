"""Item feature matrix for the LightFM hybrid: tags, audio profile, lyric topics, genres and identity.

Every group is built as a non-negative block whose non-empty rows sum (L1) to the group's weight, so the
weights in ``params.yaml`` are the groups' relative shares of an item's row; with ``normalize_rows`` the
whole row is then scaled to unit L1 norm (LightFM sums the feature embeddings weighted by these values).

Examples
--------
>>> from recsys.config import FeaturesParams
>>> items = pd.DataFrame({Col.ITEM: ["a", "b"], Col.GENRES: ["pop|rock", ""]})
>>> item_tags = pd.DataFrame({Col.ITEM: ["a", "b"], Col.TAG: ["indie", "indie"], Col.COUNT: [3, 1]})
>>> params = FeaturesParams.model_validate(
...     {"tags": {"min_artists": 2}, "audio": {"enabled": False}, "lyrics": {"enabled": False}}
... )
>>> features = build_item_features(items, item_tags, params, seed=0)
>>> features.names
['tag:indie', 'genre:pop', 'genre:rock', 'id:a', 'id:b']
>>> features.matrix.toarray().astype(float).round(2).tolist()
[[0.5, 0.12, 0.12, 0.25, 0.0], [0.67, 0.0, 0.0, 0.0, 0.33]]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.columns import AUDIO_FEATURES, Col
from recsys.config import AudioFeatures, FeatureGroup, FeaturesParams, LyricsFeatures, TagFeatures
from recsys.errors import DataError
from recsys.io import atomic_open, write_json, write_parquet

GROUPS: tuple[str, ...] = ("tags", "audio", "lyrics", "genre", "identity")
"""Column blocks of the feature matrix, in column order."""

MATRIX_FILE = "item_features.npz"
NAMES_FILE = "item_feature_names.json"
ITEMS_FILE = "item_feature_items.parquet"
SUMMARY_FILE = "features_summary.json"

# Genius section headers ("[Chorus]", "[Verse 1: X & Y]") carry no lyric content but would become the most
# frequent terms of every song.
_SECTION_HEADER = re.compile(r"\[[^\]\n]*\]")

_Block = tuple[sp.csr_matrix, list[str]]


@dataclass(frozen=True)
class ItemFeatures:
    """An item-feature matrix with its column names and row ids.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix
        Shape (n_items, n_features), float32, non-negative.
    names : list of str
        Column names such as ``"tag:rock"``, ``"audio:energy=q3"``, ``"lyrics:svd7+"``, ``"genre:pop"``,
        ``"id:<item_id>"``.
    item_ids : list of str
        External item id of each row (the order of the items table).
    group_slices : dict of str to slice
        Columns of each group in :data:`GROUPS` (an empty slice when the group is disabled or has no data).
    """

    matrix: sp.csr_matrix
    names: list[str]
    item_ids: list[str]
    group_slices: dict[str, slice]

    def group_sizes(self) -> dict[str, int]:
        """Number of columns of each group."""
        return {group: cols.stop - cols.start for group, cols in self.group_slices.items()}


def build_item_features(
    items: pd.DataFrame, item_tags: pd.DataFrame, params: FeaturesParams, seed: int
) -> ItemFeatures:
    """Build the item-feature matrix from the prepared items and item-tag tables.

    Parameters
    ----------
    items : pandas.DataFrame
        ``items.parquet``: one row per item; the row order becomes the matrix row order.
    item_tags : pandas.DataFrame
        ``item_tags.parquet`` (item, tag, count). Tags of items missing from ``items`` are ignored.
    params : FeaturesParams
        Which groups to build, their weights and sizes.
    seed : int
        Random state of the lyric SVD.

    Returns
    -------
    ItemFeatures
        float32 CSR matrix; groups in the order of :data:`GROUPS`.
    """
    index = _item_index(items)
    builders = {
        "tags": lambda: _tag_block(index, item_tags, params.tags),
        "audio": lambda: _audio_block(items, params.audio),
        "lyrics": lambda: _lyrics_block(items, params.lyrics, seed),
        "genre": lambda: _genre_block(items),
        "identity": lambda: _identity_block(index),
    }
    blocks: dict[str, _Block] = {}
    for group in GROUPS:
        settings: FeatureGroup = getattr(params, group)
        if settings.enabled and settings.weight > 0:
            matrix, names = _drop_empty_columns(*builders[group]())
            blocks[group] = (_scale_rows(matrix, settings.weight), names)
        else:
            blocks[group] = (sp.csr_matrix((len(index), 0), dtype=np.float32), [])
    features = _assemble(blocks, list(index))
    if params.normalize_rows:
        features = ItemFeatures(_scale_rows(features.matrix, 1.0), *_meta(features))
    return features


def without_identity(features: ItemFeatures, item_mask: np.ndarray) -> ItemFeatures:
    """Zero the identity column of the given items and rescale their rows to their former L1 total.

    Cold-start items never had their identity embedding trained, so it must not contribute to their score.
    The column is zeroed rather than dropped so the matrix still matches the model's feature count. With
    ``normalize_rows`` the rescaled rows keep unit L1 norm; an item with nothing but identity ends up empty.

    Parameters
    ----------
    features : ItemFeatures
        Features built by :func:`build_item_features`.
    item_mask : numpy.ndarray
        Boolean mask over rows, or integer row indices (e.g. ``Split.cold_items``).

    Returns
    -------
    ItemFeatures
        A copy; ``features`` is left unchanged.
    """
    n_items = features.matrix.shape[0]
    rows_masked = _as_row_mask(item_mask, n_items)
    identity = features.group_slices["identity"]
    coo = features.matrix.tocoo()
    drop = rows_masked[coo.row] & (coo.col >= identity.start) & (coo.col < identity.stop)
    kept = sp.csr_matrix((np.where(drop, 0, coo.data), (coo.row, coo.col)), shape=coo.shape)
    kept.eliminate_zeros()
    before = _row_sums(features.matrix)
    after = _row_sums(kept)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(rows_masked & (after > 0), before / after, 1.0)
    matrix = sp.csr_matrix(sp.diags(scale) @ kept, dtype=np.float32)
    return ItemFeatures(matrix, *_meta(features))


def feature_summary(features: ItemFeatures) -> dict[str, object]:
    """Sizes for reports: columns, non-zeros and covered items per group, and empty rows."""
    binary = features.matrix.astype(bool).tocsc()
    covered = {
        group: int(np.count_nonzero(np.asarray(binary[:, cols].sum(axis=1)).ravel()))
        for group, cols in features.group_slices.items()
    }
    return {
        "n_items": int(features.matrix.shape[0]),
        "n_features": int(features.matrix.shape[1]),
        "nnz": int(features.matrix.nnz),
        "columns_per_group": features.group_sizes(),
        "items_per_group": covered,
        "empty_rows": int(np.count_nonzero(np.diff(features.matrix.indptr) == 0)),
    }


def save_item_features(features: ItemFeatures, out_dir: str | Path) -> None:
    """Write matrix (``.npz``), names and groups (JSON), row ids (Parquet) and a summary, atomically."""
    out_dir = Path(out_dir)
    with atomic_open(out_dir / MATRIX_FILE, "wb") as handle:
        sp.save_npz(handle, features.matrix)
    groups = {group: [cols.start, cols.stop] for group, cols in features.group_slices.items()}
    write_json(out_dir / NAMES_FILE, {"names": features.names, "groups": groups})
    write_parquet(out_dir / ITEMS_FILE, pd.DataFrame({Col.ITEM: features.item_ids}))
    write_json(out_dir / SUMMARY_FILE, feature_summary(features))


def load_item_features(out_dir: str | Path) -> ItemFeatures:
    """Read features written by :func:`save_item_features`; inconsistent files raise :class:`DataError`."""
    out_dir = Path(out_dir)
    matrix = sp.csr_matrix(sp.load_npz(out_dir / MATRIX_FILE), dtype=np.float32)
    meta = json.loads((out_dir / NAMES_FILE).read_text(encoding="utf-8"))
    item_ids = pd.read_parquet(out_dir / ITEMS_FILE)[Col.ITEM].astype(str).tolist()
    names = [str(name) for name in meta["names"]]
    if matrix.shape != (len(item_ids), len(names)):
        raise DataError(
            f"matrix shape {matrix.shape} does not match {len(item_ids)} items x {len(names)} names",
            file=str(out_dir / MATRIX_FILE),
        )
    slices = {group: slice(int(start), int(stop)) for group, (start, stop) in meta["groups"].items()}
    return ItemFeatures(matrix, names, item_ids, slices)


def strip_section_headers(text: str) -> str:
    """Remove Genius section headers such as ``[Chorus: X]`` from lyrics.

    Examples
    --------
    >>> strip_section_headers("[Verse 1: A & B]\\nla la\\n[Chorus]\\nhey")
    '\\nla la\\n\\nhey'
    """
    return _SECTION_HEADER.sub("", text)


def _item_index(items: pd.DataFrame) -> pd.Index:
    if Col.ITEM not in items.columns:
        raise DataError("items table has no item id column", column=Col.ITEM)
    index = pd.Index(items[Col.ITEM].astype(str))
    duplicated = index.duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise DataError(f"duplicate item id {index[row]!r}", row=row, column=Col.ITEM)
    return index


def _require(frame: pd.DataFrame, columns: tuple[str, ...], table: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(f"{table} table lacks column(s) {missing}", column=missing[0])


def _tag_block(index: pd.Index, item_tags: pd.DataFrame, params: TagFeatures) -> _Block:
    """Count share of each artist's top-n tags among tags applied to at least ``min_artists`` artists.

    The vocabulary is filtered before taking the top n, so an artist whose favourite tags are idiosyncratic
    still gets its most-used shared tags. Shares (not tf-idf) because LightFM learns one embedding per tag,
    whose norm can already express how informative a tag is; down-weighting broad tags such as "rock" would
    mostly take signal away from cold-start items described only by them.
    """
    _require(item_tags, (Col.ITEM, Col.TAG, Col.COUNT), "item_tags")
    tags = item_tags[[Col.ITEM, Col.TAG, Col.COUNT]].astype({Col.ITEM: str, Col.TAG: str})
    tags = tags[(tags[Col.COUNT] > 0) & tags[Col.ITEM].isin(index)]
    tags = tags.groupby([Col.ITEM, Col.TAG], as_index=False)[Col.COUNT].sum()
    n_artists = tags.groupby(Col.TAG)[Col.ITEM].transform("size")
    tags = tags[n_artists >= params.min_artists]
    tags = tags.sort_values([Col.ITEM, Col.COUNT, Col.TAG], ascending=[True, False, True])
    tags = tags[tags.groupby(Col.ITEM).cumcount() < params.top_n]
    vocabulary = pd.Index(sorted(tags[Col.TAG].unique()))
    rows = index.get_indexer(tags[Col.ITEM])
    cols = vocabulary.get_indexer(tags[Col.TAG])
    shape = (len(index), len(vocabulary))
    matrix = sp.csr_matrix((tags[Col.COUNT].to_numpy(np.float32), (rows, cols)), shape=shape)
    return matrix, [f"tag:{tag}" for tag in vocabulary]


def quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin index (0-based) of each value by the quantiles of the values themselves; NaN gives -1.

    Intervals are right-closed like :func:`pandas.qcut`; tied quantile edges leave some bins empty.

    Examples
    --------
    >>> quantile_bins(np.array([1.0, 2.0, 3.0, 4.0, np.nan]), 2).tolist()
    [0, 0, 1, 1, -1]
    """
    present = ~np.isnan(values)
    codes = np.full(len(values), -1, dtype=np.int64)
    if present.any():
        edges = np.quantile(values[present], np.linspace(0.0, 1.0, bins + 1)[1:-1])
        codes[present] = np.searchsorted(edges, values[present], side="left")
    return codes


def _audio_block(items: pd.DataFrame, params: AudioFeatures) -> _Block:
    """One-hot quantile bin per audio feature, bins fitted on the items that have that feature."""
    _require(items, AUDIO_FEATURES, "items")
    blocks, names = [], []
    for feature in AUDIO_FEATURES:
        codes = quantile_bins(items[feature].to_numpy(np.float64), params.bins)
        rows = np.flatnonzero(codes >= 0)
        shape = (len(items), params.bins)
        blocks.append(sp.csr_matrix((np.ones(len(rows), np.float32), (rows, codes[rows])), shape=shape))
        names += [f"audio:{feature}=q{b + 1}" for b in range(params.bins)]
    return sp.csr_matrix(sp.hstack(blocks)), names


def _lyrics_block(items: pd.DataFrame, params: LyricsFeatures, seed: int) -> _Block:
    """TF-IDF then truncated SVD of each artist's lyrics, split into positive and negative parts.

    LightFM adds feature embeddings scaled by the feature values, and the row normalisation is an L1 one:
    a negative value would cancel other groups' mass. Each SVD coordinate ``z`` becomes two non-negative
    columns ``svd{i}+ = max(z, 0)`` and ``svd{i}- = max(-z, 0)``, which keep all of it (z = plus - minus).
    The number of components is capped by the number of documents and of terms (a small corpus cannot
    support more); fewer than two documents give no lyric features.
    """
    _require(items, (Col.LYRICS,), "items")
    texts = items[Col.LYRICS].fillna("").astype(str).map(strip_section_headers).str.strip()
    rows = np.flatnonzero(texts.to_numpy() != "")
    empty: _Block = (sp.csr_matrix((len(items), 0), dtype=np.float32), [])
    if len(rows) < 2:
        return empty
    topics = _lyric_topics(texts.iloc[rows].tolist(), params, seed)
    if topics is None:
        return empty
    signed = np.stack([np.maximum(topics, 0.0), np.maximum(-topics, 0.0)], axis=2).reshape(len(rows), -1)
    matrix = sp.coo_matrix(signed.astype(np.float32))
    matrix = sp.csr_matrix((matrix.data, (rows[matrix.row], matrix.col)), shape=(len(items), signed.shape[1]))
    names = [f"lyrics:svd{i}{sign}" for i in range(topics.shape[1]) for sign in "+-"]
    return matrix, names


def _lyric_topics(docs: list[str], params: LyricsFeatures, seed: int) -> np.ndarray | None:
    # scikit-learn is imported here so that loading saved features (the service) does not pay for it.
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(max_features=params.max_features, sublinear_tf=True, stop_words="english")
    try:
        tfidf = vectorizer.fit_transform(docs)
    except ValueError:  # only stop words or no word tokens at all
        return None
    n_components = min(params.svd_components, len(docs), tfidf.shape[1] - 1)
    if n_components < 1:
        return None
    svd = TruncatedSVD(n_components=n_components, random_state=seed)
    return np.asarray(svd.fit_transform(tfidf), dtype=np.float64)


def _genre_block(items: pd.DataFrame) -> _Block:
    """One-hot over every Spotify playlist genre listed in ``genres``."""
    _require(items, (Col.GENRES,), "items")
    listed = pd.Series(items[Col.GENRES].to_numpy(), index=np.arange(len(items)), dtype=object)
    genres = listed.fillna("").astype(str).str.split("|").explode().str.strip()
    genres = genres[genres != ""]
    vocabulary = pd.Index(sorted(genres.unique()))
    positions = genres.index.to_numpy(np.int64)
    cols = vocabulary.get_indexer(genres.to_numpy())
    shape = (len(items), len(vocabulary))
    matrix = sp.csr_matrix((np.ones(len(cols), np.float32), (positions, cols)), shape=shape)
    return matrix, [f"genre:{genre}" for genre in vocabulary]


def _identity_block(index: pd.Index) -> _Block:
    return sp.identity(len(index), dtype=np.float32, format="csr"), [f"id:{item}" for item in index]


def _drop_empty_columns(matrix: sp.csr_matrix, names: list[str]) -> _Block:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    used = np.flatnonzero(np.diff(matrix.tocsc().indptr) > 0)
    if len(used) == matrix.shape[1]:
        return matrix, names
    return sp.csr_matrix(matrix[:, used]), [names[i] for i in used]


def _row_sums(matrix: sp.csr_matrix) -> np.ndarray:
    return np.asarray(abs(matrix).sum(axis=1), dtype=np.float64).ravel()


def _scale_rows(matrix: sp.csr_matrix, total: float) -> sp.csr_matrix:
    """Scale each non-empty row to L1 norm ``total``; empty rows stay empty (no division by zero)."""
    sums = _row_sums(matrix)
    scale = np.divide(total, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(scale) @ matrix, dtype=np.float32)


def _as_row_mask(item_mask: np.ndarray, n_items: int) -> np.ndarray:
    item_mask = np.asarray(item_mask)
    if item_mask.dtype == bool:
        if item_mask.shape != (n_items,):
            raise ValueError(f"item mask has shape {item_mask.shape}, expected ({n_items},)")
        return item_mask
    mask = np.zeros(n_items, dtype=bool)
    mask[item_mask.astype(np.int64)] = True
    return mask


def _assemble(blocks: dict[str, _Block], item_ids: list[str]) -> ItemFeatures:
    slices, names, start = {}, [], 0
    for group in GROUPS:
        group_names = blocks[group][1]
        slices[group] = slice(start, start + len(group_names))
        names += group_names
        start += len(group_names)
    matrix = sp.csr_matrix(sp.hstack([blocks[group][0] for group in GROUPS]), dtype=np.float32)
    if matrix.shape[1] == 0:
        matrix = sp.csr_matrix((len(item_ids), 0), dtype=np.float32)
    return ItemFeatures(matrix, names, item_ids, slices)


def _meta(features: ItemFeatures) -> tuple[list[str], list[str], dict[str, slice]]:
    return list(features.names), list(features.item_ids), dict(features.group_slices)
