"""The model card (``docs/model_card.md``), rendered from the latest run's metrics and ``params.yaml``.

Every number in the card comes from a JSON file of the run, so the card cannot drift from the metrics:
``tests/test_model_card.py`` re-renders it and compares. Required input: ``metrics/offline.json``.
Optional inputs, each adding or filling a section when present: ``data/prepared/quality.json`` (join
match rates), ``reports/eda/bias_signals.json`` (popularity skew of the data), ``metrics/bias.json``
(popularity-bias mitigation) and ``models/train_summary.json`` (the selected hyperparameters).

The card never contains lyrics: its inputs are metrics and settings only.

Examples
--------
>>> fmt(0.123456), fmt(1234.5), fmt(17632)
('0.1235', '1,234.5', '17,632')
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import Params, load_params
from recsys.errors import DataError
from recsys.io import write_text

CHALLENGER = "lightfm_hybrid"
POPULAR = "most_popular"
MODEL_LABELS: dict[str, str] = {
    "lightfm_hybrid": "LightFM hybrid (served)",
    "lightfm_cf": "LightFM without features",
    "ease": "EASE",
    "itemknn": "item-kNN",
    "most_popular": "most popular",
}
TABLE_METRICS = (
    "precision",
    "recall",
    "ndcg",
    "map",
    "hit_rate",
    "coverage",
    "arp",
    "long_tail_share",
    "novelty",
)


@dataclass(frozen=True)
class CardInputs:
    """Everything the card is rendered from; the optional parts are ``None`` when their file is absent."""

    offline: Mapping[str, Any]
    params: Params
    quality: Mapping[str, Any] | None = None
    bias_signals: Mapping[str, Any] | None = None
    bias: Mapping[str, Any] | None = None
    train_summary: Mapping[str, Any] | None = None


def fmt(value: Any) -> str:
    """A number as the card prints it: integers with separators, floats >= 10 to 1 place, else 4 places."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.4f}"


def pct(value: float) -> str:
    """A share as a percentage with one decimal: ``0.3165`` -> ``31.7 %``."""
    return f"{100 * value:.1f} %"


def label(model: str) -> str:
    """Display name of a model key of ``offline.json``."""
    return MODEL_LABELS.get(model, model)


def read_json(path: Path) -> dict[str, Any] | None:
    """An optional JSON object: ``None`` when the file is absent, :class:`DataError` when it is bad."""
    return require_json(path) if path.exists() else None


def require_json(path: Path) -> dict[str, Any]:
    """A required JSON object; :class:`DataError` names the file when it is absent or bad."""
    if not path.exists():
        raise DataError("not found: run the pipeline first (`recsys run` or `dvc repro`)", file=str(path))
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc}", file=str(path)) from exc
    if not isinstance(payload, dict):
        raise DataError("expected a JSON object", file=str(path))
    return payload


def load_offline(metrics_dir: Path) -> dict[str, Any]:
    """``metrics/offline.json``, required and checked for its top-level sections."""
    path = metrics_dir / "offline.json"
    offline = require_json(path)
    for key in ("models", "groups", "protocol"):
        if key not in offline:
            raise DataError(f"missing key {key!r}", file=str(path))
    return offline


def load_card_inputs(
    params_path: Path = Path("params.yaml"),
    metrics_dir: Path = Path("metrics"),
    prepared_dir: Path = Path("data/prepared"),
    eda_dir: Path = Path("reports/eda"),
    models_dir: Path = Path("models"),
) -> CardInputs:
    """Read the card's inputs from a workspace; only ``metrics/offline.json`` is required."""
    return CardInputs(
        offline=load_offline(metrics_dir),
        params=load_params(params_path),
        quality=read_json(prepared_dir / "quality.json"),
        bias_signals=read_json(eda_dir / "bias_signals.json"),
        bias=read_json(metrics_dir / "bias.json"),
        train_summary=read_json(models_dir / "train_summary.json"),
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ordered_models(models: Mapping[str, Any]) -> list[str]:
    """Model keys in display order: the served model first, most-popular last, unknown names after."""
    known = [name for name in MODEL_LABELS if name in models]
    return known + sorted(name for name in models if name not in MODEL_LABELS)


def results_section(offline: Mapping[str, Any], k: int) -> str:
    """Test metrics of every model at ``k``, cold-start metrics, and the gain over most-popular."""
    models = offline["models"]
    header = ["model", *(f"{m}@{k}" for m in TABLE_METRICS), "AUC"]
    rows = [
        [
            label(name),
            *(fmt(models[name].get(f"{m}@{k}", "-")) for m in TABLE_METRICS),
            fmt(models[name]["auc"]),
        ]
        for name in ordered_models(models)
    ]
    parts = [f"## Results on the test split (k = {k})", "", _table(header, rows), ""]
    if CHALLENGER in models and POPULAR in models:
        ours, popular = models[CHALLENGER][f"ndcg@{k}"], models[POPULAR][f"ndcg@{k}"]
        best_other = max(
            (name for name in models if name != CHALLENGER), key=lambda name: models[name][f"ndcg@{k}"]
        )
        parts += [
            f"nDCG@{k} of the hybrid is {fmt(ours)} against {fmt(popular)} for most-popular "
            f"({ours / popular:.1f} times) and {fmt(models[best_other][f'ndcg@{k}'])} for the best other "
            f"model ({label(best_other)}).",
            "",
        ]
    cold = offline.get("cold_start") or {}
    if cold:
        cold_rows = [
            [
                label(name),
                fmt(cold[name]["auc"]),
                fmt(cold[name][f"ndcg@{k}"]),
                fmt(cold[name][f"recall@{k}"]),
            ]
            for name in ordered_models(cold)
        ]
        parts += [
            "### Cold start (artists never seen in training)",
            "",
            _table(["model", "AUC", f"ndcg@{k}", f"recall@{k}"], cold_rows),
            "",
            "Only item features can rank an artist never seen in training, so models without features are "
            "expected near chance (AUC 0.5).",
            "",
        ]
    return "\n".join(parts)


def fairness_section(offline: Mapping[str, Any], k: int, groups: Sequence[str]) -> str:
    """nDCG, ARP and long-tail share at ``k`` per user group and model, and the niche/mainstream gap."""
    by_model = offline["groups"]
    present = [g for g in groups if any(g in by_model[name] for name in by_model)]
    header = ["model", *(f"{m}@{k} {g}" for m in ("ndcg", "arp") for g in present)]
    rows = [
        [
            label(name),
            *(fmt(by_model[name].get(g, {}).get(f"{m}@{k}", "-")) for m in ("ndcg", "arp") for g in present),
        ]
        for name in ordered_models(by_model)
    ]
    sizes = ", ".join(
        f"{g}: {fmt(by_model[CHALLENGER][g]['n_users'])} users"
        for g in present
        if g in by_model.get(CHALLENGER, {})
    )
    parts = [
        "## Fairness across listener groups",
        "",
        f"User groups: {offline['protocol'].get('user_groups', 'by mainstreaminess')} ({sizes}). "
        "ARP is the average popularity (training listeners) of the recommended artists.",
        "",
        _table(header, rows),
        "",
    ]
    hybrid = by_model.get(CHALLENGER, {})
    if "niche" in hybrid and "mainstream" in hybrid:
        niche, main = hybrid["niche"][f"ndcg@{k}"], hybrid["mainstream"][f"ndcg@{k}"]
        parts += [
            f"The hybrid serves niche listeners less well: nDCG@{k} {fmt(niche)} against {fmt(main)} for "
            f"mainstream listeners ({niche / main:.0%} of it). {_gap_note(by_model, k)}",
            "",
        ]
    return "\n".join(parts)


def _group_effect(bias: Mapping[str, Any], k: int) -> list[str]:
    """Per-group nDCG and popularity lift without and with the chosen strength, when bias.json has them."""
    by_strength = {point["strength"]: point for point in bias.get("strengths", [])}
    before, after = by_strength.get(0.0), by_strength.get(bias["chosen"]["strength"])
    if not before or not after or before is after:
        return []
    ndcg, lift = f"ndcg@{k}/{{}}", "popularity_lift/{}"
    changes = [
        f"{group}: nDCG@{k} {fmt(before[ndcg.format(group)])} -> {fmt(after[ndcg.format(group)])}, "
        f"popularity lift {fmt(before[lift.format(group)])} -> {fmt(after[lift.format(group)])}"
        for group in ("niche", "medium", "mainstream")
        if ndcg.format(group) in before and lift.format(group) in after
    ]
    if not changes:
        return []
    intro = "Effect per listener group (popularity lift: recommended popularity over the listener's own):"
    return [intro, "", *(f"- {change}" for change in changes), ""]


def _gap_note(by_model: Mapping[str, Any], k: int) -> str:
    """Whether the niche/mainstream gap is shared by every model or specific to some."""
    narrower = [
        label(name)
        for name, groups in by_model.items()
        if "niche" in groups
        and "mainstream" in groups
        and groups["niche"][f"ndcg@{k}"] >= groups["mainstream"][f"ndcg@{k}"]
    ]
    if narrower:
        return f"Models without this gap: {', '.join(narrower)}."
    return (
        "Every model shows this gap: niche listeners' held-out artists are rarer, so they are harder to "
        "rank from sparse signals."
    )


def mitigation_section(bias: Mapping[str, Any] | None) -> str:
    """The popularity re-ranking trade-off from ``metrics/bias.json``, or a note that it is not measured."""
    parts = ["## Mitigation of popularity bias", ""]
    if not bias:
        return "\n".join(
            [*parts, "Not measured yet: `metrics/bias.json` is absent (run the `bias` stage).", ""]
        )
    k = bias.get("k", 10)
    chosen = bias["chosen"]
    rows = [
        [
            f"{point['strength']:g}",
            fmt(point[f"ndcg@{k}"]),
            pct(point.get("ndcg_cost", 0.0)),
            fmt(point[f"long_tail_share@{k}"]),
            fmt(point[f"arp@{k}"]),
            fmt(point.get("popularity_lift", "-")),
        ]
        for point in bias.get("strengths", [])
    ]
    parts += [
        "Popularity re-ranking lowers each artist's score in proportion to its popularity; every strength "
        f"is evaluated with the offline protocol. Rule: {bias.get('rule', '-')}.",
        "",
        _table(
            ["strength", f"ndcg@{k}", "nDCG cost", f"long_tail_share@{k}", f"arp@{k}", "popularity lift"],
            rows,
        ),
        "",
        f"Chosen strength: {chosen['strength']:g} (nDCG@{k} {fmt(chosen[f'ndcg@{k}'])}, long-tail share "
        f"{fmt(chosen[f'long_tail_share@{k}'])}, cost {pct(chosen.get('ndcg_cost', 0.0))}).",
        "",
    ]
    parts += _group_effect(bias, k)
    if chosen["strength"] == 0:
        parts += [
            "No strength stays within the allowed nDCG cost, so recommendations are served without "
            "re-ranking; the curve is kept to show what fairer ranking would cost.",
            "",
        ]
    return "\n".join(parts)


def _model_details(inputs: CardInputs) -> str:
    params = inputs.params
    lfm = params.train.lightfm
    chosen = dict((inputs.train_summary or {}).get("best_params") or {})
    best_epoch = (inputs.train_summary or {}).get("best_trial", {}).get("best_epoch")
    hyper = {**lfm.model_dump(), **chosen}
    feats = params.features
    groups = [
        f"tags (top {feats.tags.top_n} per artist, tags used by >= {feats.tags.min_artists} artists), "
        f"weight {feats.tags.weight:g}"
        if feats.tags.enabled
        else "",
        f"audio profile ({feats.audio.bins} quantile bins per Spotify audio feature), "
        f"weight {feats.audio.weight:g}"
        if feats.audio.enabled
        else "",
        f"lyric topics (TF-IDF, {feats.lyrics.max_features} terms, SVD to {feats.lyrics.svd_components} "
        f"topics), weight {feats.lyrics.weight:g}"
        if feats.lyrics.enabled
        else "",
        f"Spotify playlist genres, weight {feats.genre.weight:g}" if feats.genre.enabled else "",
        f"identity (one feature per artist; dropped for cold-start artists), weight {feats.identity.weight:g}"
        if feats.identity.enabled
        else "",
    ]
    source = "`models/train_summary.json` (search winner)" if chosen else "`params.yaml` (base configuration)"
    lines = [
        "## Model",
        "",
        "LightFM hybrid matrix factorisation: an artist's embedding is the sum of the embeddings of its "
        "features, a listener's is learned from their listening. Listen counts become confidence weights "
        f"(`{params.prepare.weight_transform}` transform) passed as sample weights.",
        "",
        "Item features (each artist's row L1-normalised; the weights are each group's share):",
        "",
        *(f"- {g}" for g in groups if g),
        "",
        f"Hyperparameters from {source}: "
        + ", ".join(
            f"{key} = {hyper[key]}"
            for key in (
                "loss",
                "no_components",
                "learning_rate",
                "item_alpha",
                "user_alpha",
                "max_sampled",
                "epochs",
            )
            if key in hyper
        )
        + (f"; early stopping chose epoch {best_epoch}" if best_epoch else "")
        + f". Search: {params.train.search.n_trials} seeded trials on validation "
        f"{params.train.search.metric}.",
        "",
    ]
    return "\n".join(lines)


def _data_section(inputs: CardInputs) -> str:
    lines = [
        "## Data",
        "",
        "| source | role | licence and terms |",
        "| --- | --- | --- |",
        "| Last.fm HetRec 2011 (`hetrec2011-lastfm-2k`, GroupLens) | listen counts of users x artists; "
        "tags | "
        "non-commercial use only (commercial use needs Last.fm's permission); cite Last.fm and Cantador, "
        "Brusilovsky and Kuflik, 2nd Workshop on Information Heterogeneity and Fusion in Recommender Systems "
        "(HetRec 2011), ACM RecSys 2011 |",
        "| Spotify songs, TidyTuesday 2020-01-21 | audio features and playlist genres of tracks | repository "
        "licence MIT (collected from the Spotify Web API) |",
        "| PopLyrics-1K (`ashuwhy/poplyrics-1k`, Genius) | lyrics of 1,000 songs | repository MIT, but the "
        "lyrics are copyrighted: used only to compute topic features, never stored in models, reports or "
        "responses |",
        "",
        "Because of the Last.fm terms, this model and its recommendations are for research and "
        "demonstration, not for commercial use.",
        "",
        "### Preparation and the join",
        "",
        "Every table is validated against its schema; repairs are counted in `data/prepared/quality.json`. "
        'Sources are joined by normalised names (accents, case, "&"/"and", leading "The" and '
        "punctuation removed): Spotify x Genius on artist + title, then onto Last.fm artists by name.",
        "",
    ]
    if inputs.quality:
        joins, summary = inputs.quality.get("joins", {}), inputs.quality.get("summary", {})
        n_artists = joins.get("lastfm_artists", 0) or 1
        rows = [
            ["interactions after cleaning", fmt(summary.get("interactions", "-"))],
            ["users / artists", f"{fmt(summary.get('users', '-'))} / {fmt(summary.get('items', '-'))}"],
            [
                "lyric rows matched to Spotify tracks",
                f"{fmt(joins.get('lyrics_rows_matched', '-'))} of {fmt(joins.get('lyrics_rows', '-'))}",
            ],
            ["Spotify tracks with lyrics", fmt(joins.get("spotify_tracks_matched", "-"))],
            [
                "Last.fm artists with an audio profile",
                f"{fmt(joins.get('lastfm_artists_with_spotify', 0))} of {fmt(n_artists)} "
                f"({pct(joins.get('lastfm_artists_with_spotify', 0) / n_artists)})",
            ],
            ["Last.fm artists with lyrics", fmt(joins.get("lastfm_artists_with_lyrics", "-"))],
            ["listens of artists with an audio profile", fmt(joins.get("listens_with_spotify", "-"))],
        ]
        lines += [_table(["measure", "value"], rows), ""]
    else:
        lines += [
            "Join match rates: not available (`data/prepared/quality.json` absent; run `recsys prepare`).",
            "",
        ]
    if inputs.bias_signals:
        sig = inputs.bias_signals
        top = f"the top 1 % of artists ({fmt(sig['top1pct_n_items'])})"
        shares = (
            f"{pct(sig['top1pct_interaction_share'])} of listener-artist pairs and "
            f"{pct(sig['top1pct_play_share'])} of plays"
        )
        gini = fmt(sig["gini_item_popularity"])
        lines += [
            f"The data is strongly popularity-skewed: {top} hold {shares}; Gini of artist popularity {gini}.",
            "",
        ]
    return "\n".join(lines)


def _protocol_section(offline: Mapping[str, Any]) -> str:
    protocol = offline["protocol"]
    split, sizes = protocol.get("split", {}), protocol.get("sizes", {})
    parts = sizes.get("parts", {})
    rows = [[name, fmt(part["users"]), fmt(part["interactions"])] for name, part in parts.items()]
    holdout = (
        f"Seed {protocol.get('seed')}. Users with >= {split.get('min_user_interactions')} artists hold out "
        f"{pct(split.get('test_fraction', 0))} of their artists for test and "
        f"{pct(split.get('valid_fraction', 0))} of the rest for validation (early stopping, search); "
    )
    cold = (
        f"{pct(split.get('cold_item_fraction', 0))} of artists ({fmt(sizes.get('n_cold_items', '-'))}) are "
        "held out entirely for cold start. "
    )
    ranking = (
        "Training items are excluded from each user's ranking; candidates: "
        f"{protocol.get('candidates')}. Metrics at k = {', '.join(str(k) for k in protocol.get('ks', []))}; "
        "the long tail is everything outside the head artists holding "
        f"{pct(protocol.get('head_share', 0))} of training interactions."
    )
    lines = [
        "## Evaluation protocol",
        "",
        holdout + cold + ranking,
        "",
        _table(["part", "users", "interactions"], rows),
        "",
    ]
    return "\n".join(lines)


_USES = """## Intended use

- Recommending artists to listeners of the Last.fm HetRec 2011 population, to new listeners from a few
  favourite artists, and similar artists, through the BentoML service, for research and demonstration.
- Comparing recommenders and studying popularity bias on a fixed, reproducible protocol.

## Out of scope

- Commercial use (the Last.fm data is licensed for non-commercial use only).
- Recommending songs or tracks (the model ranks artists), or any decision about people.
- Populations unlike 2011 Last.fm users, without re-evaluation; displaying or distributing lyrics.
"""

_LIMITATIONS = """## Limitations

- Small, old data: about 1,900 Last.fm users from 2011, no listen timestamps, so the holdout is random,
  not temporal, and offline metrics overstate how well the model predicts future listening.
- Content features are thin: only a minority of artists have Spotify audio profiles and very few have
  lyrics, so cold-start quality rests mostly on tags.
- Joins by normalised names can merge different artists of the same name or miss spellings.
- Offline metrics count only held-out artists as relevant; good but unheard recommendations score zero.
"""

_ETHICS = """## Ethical considerations

- Privacy and deletion: listeners are pseudonymous ids and no profile data is used. `DELETE
  /users/{id}/feedback` erases a listener's feedback and served-list log (audited under an HMAC pseudonym
  keyed by the feedback store's own secret salt); the next retraining purges it from the exported files
  and their older versions in the DVC cache, retrains without it even when no new feedback arrived, and
  then deletes every older model version (a rollback could serve it again). Served lists are kept for
  `monitoring.served_retention_days` (30). A Last.fm listener leaves the model only when removed from the
  prepared data and retrained; older model versions in the store keep what they were trained on.
- Transparency: every recommendation carries a reason (e.g. shared tags) so listeners can see why it appears.
- Feedback loops and filter bubbles: training on the service's own feedback reinforces what it already
  recommends. In the closed-loop simulation on the real data, likes of what the champion itself ranked
  first taught the retrained model little (unseen held-out artists found: 0.683 -> 0.713). Monitoring
  watches the popularity lift of the lists the service actually served and data drift; the gates refuse
  a model that raises ARP or lowers any group's nDCG beyond its tolerance.
- Copyrighted lyrics are used only as numeric topic features; they never appear in model artifacts,
  reports, logs or API responses.
"""


def render_model_card(inputs: CardInputs) -> str:
    """The card as Markdown; deterministic (no dates) so re-rendering the same inputs gives the same text."""
    params, offline = inputs.params, inputs.offline
    k = params.evaluate.primary_k
    header = (
        "# Model card: LightFM hybrid music recommender\n\n"
        "<!-- GENERATED by `recsys model-card` from metrics/offline.json, params.yaml and the optional run "
        "outputs; do not edit by hand. -->\n\n"
        "Recommends Last.fm artists to listeners from their listening history and the artists' tags, "
        "Spotify audio profile, lyric topics and genres. Champion selection, packaging and serving are "
        "described in `README.md` and `docs/architecture.md`.\n"
    )
    sections = [
        header,
        _USES,
        _data_section(inputs),
        _model_details(inputs),
        _protocol_section(offline),
        results_section(offline, k),
        fairness_section(offline, k, params.evaluate.groups),
        mitigation_section(inputs.bias),
        _LIMITATIONS,
        _ETHICS,
    ]
    return "\n".join(section.rstrip("\n") + "\n" for section in sections)


def write_model_card(inputs: CardInputs, out: Path) -> Path:
    """Render and write the card atomically; returns ``out``."""
    write_text(out, render_model_card(inputs))
    return out
