"""The model card (``docs/model_card.md``), rendered from the latest run's metrics and ``params.yaml``.

Every number in the card comes from a JSON file of the run, so the card cannot drift from the metrics:
``tests/reporting/test_model_card.py`` re-renders it and compares. Required input: ``metrics/offline.json``.
Optional inputs, each adding or filling a section when present: ``data/prepared/quality.json`` (join
match rates), ``reports/eda/bias_signals.json`` (popularity skew of the data), ``metrics/bias.json``
(popularity-bias mitigation).

The card never contains lyrics: its inputs are metrics and settings only.

Shared formats and readers are :mod:`recsys.reporting.formatting`; the result sections
:mod:`recsys.reporting.card_sections`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import Params, RankerParams, item_kind, load_params
from recsys.io import read_json, write_text
from recsys.paths import EDA_DIR, METRICS_DIR, MODEL_CARD, PARAMS_FILE, PREPARED_DIR, QUALITY_JSON
from recsys.reporting.card_sections import (
    calibration_section,
    fairness_section,
    mitigation_section,
    ranker_section,
    results_section,
    served_model_section,
)
from recsys.reporting.formatting import fmt, load_offline, markdown_table, pct
from recsys.reporting.song_card import SONG_LIMITATIONS, SONG_USES, about_tracks, song_data_section
from recsys.specs import DEFAULT_DATASET, HYBRID, challenger_model


@dataclass(frozen=True)
class CardInputs:
    """Everything the card is rendered from; the optional parts are ``None`` when their file is absent."""

    offline: Mapping[str, Any]
    params: Params
    quality: Mapping[str, Any] | None = None
    bias_signals: Mapping[str, Any] | None = None
    bias: Mapping[str, Any] | None = None


def load_card_inputs(
    params_path: Path = PARAMS_FILE,
    metrics_dir: Path = METRICS_DIR,
    prepared_dir: Path = PREPARED_DIR,
    eda_dir: Path = EDA_DIR,
) -> CardInputs:
    """Read the card's inputs from a workspace; only ``metrics/offline.json`` is required."""
    return CardInputs(
        offline=load_offline(metrics_dir),
        params=load_params(params_path),
        quality=read_json(prepared_dir / QUALITY_JSON),
        bias_signals=read_json(eda_dir / "bias_signals.json"),
        bias=read_json(metrics_dir / "bias.json"),
    )


def _model_details(inputs: CardInputs) -> str:
    params = inputs.params
    hyper = params.train.lightfm.model_dump()
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
        "Hyperparameters from `params.yaml`, tuned on the validation part by `recsys tune` "
        f"({params.train.search.n_trials} seeded trials on {params.train.search.metric}, each early-stopped; "
        "the best epoch is kept as `epochs`): "
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
        + _members_sentence(params.train.lightfm.members, params.seed)
        + f" Trained once, single-threaded ({params.train.final_threads} thread per member), so a rerun "
        "gives the same model and metrics.",
        "",
    ]
    return "\n".join(lines)


def _members_sentence(members: int, seed: int) -> str:
    """How many seeds the served hybrid averages (nothing to say for one)."""
    if members == 1:
        return "."
    seeds = ", ".join(str(seed + member) for member in range(members))
    return (
        f". A seed ensemble of {members} such models (seeds {seeds}), trained side by side and scored by "
        "their mean score (one dot product of their embeddings side by side)."
    )


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
        lines += [markdown_table(["measure", "value"], rows), ""]
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
        markdown_table(["part", "users", "interactions"], rows),
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


def _session_section(params: Params, ranker: bool = False) -> str:
    """How a listener's feedback changes their next list before any retraining (``params.session``); with
    ``ranker`` (the run has one), what the two-stage ranker does within a session too."""
    session = params.session
    if not session.enabled:
        return "## Within the session\n\nOff (`session.enabled: false`): lists change with the model.\n"
    return (
        "## Within the session\n\n"
        "A listener's feedback since the model was packaged changes their next list on every replica, before "
        "any retraining: the items they reacted to leave the list"
        + ("" if session.exclude_shown else " (dislikes only: `exclude_shown` is off)")
        + f", and their vector moves toward liked ({session.like:+g}) and played ({session.play:+g}) artists "
        f"and away from skipped ({session.skip:+g}) and disliked ({session.dislike:+g}) ones, an event "
        f"weighing like {session.step:g} of the artists the vector stands for, at most {session.max_events} "
        "events. The settings were chosen offline on the test listeners (`benchmarks.session_tuning`) and "
        'measured in the closed loop; README "Within the session" has the numbers. A request can ask for '
        'the list as trained (`"session": false`).\n'
        + (_ranker_session_sentence(params.train.ranker, session.ranker_features) if ranker else "")
    )


def _ranker_session_sentence(ranker: RankerParams, features: bool) -> str:
    """What a two-stage ranker does within a session (``train.ranker.session_*``; ``features``:
    ``session.ranker_features``, whether it is served with its session features)."""
    if not ranker.enabled:
        return ""
    if ranker.session_share == 0:
        return (
            "\nA listener served by the two-stage ranker keeps its order within a session (`train.ranker."
            "session_share: 0`): only the items they reacted to leave the list.\n"
        )
    if not features:
        return (
            "\nA listener served by the two-stage ranker keeps its order within a session, only the items "
            "they reacted to left out (`session.ranker_features: false`): its session features gave the same "
            "next-session hit rate for a new ranking of every session state (16-19 ms of model work a "
            'listener on the artists) instead of a cached list; README "Within the session" has the '
            "numbers.\n"
        )
    more = (
        f"; the {ranker.session_candidates} artists most listened with the session's likes join its "
        "candidates"
        if ranker.session_candidates
        else ""
    )
    return (
        "\nA listener served by the two-stage ranker gets its order with session features (how often each "
        "candidate is listened with the session's liked and with its skipped artists, and how like the liked "
        f"ones its features are){more}. It learned them from simulated sessions of "
        f"{ranker.session_share:.0%} of the listeners it learned from (their first generator's best "
        f"{ranker.session_shown} candidates shown, "
        'the validation artists among them liked, the rest skipped); README "Within the session" has the '
        "numbers.\n"
    )


def _exploration_section(params: Params) -> str:
    """How the service explores and what its log then allows (``params.explore``)."""
    explore = params.explore
    if explore.share <= 0:
        return (
            "## Exploring with evidence\n\nOff (`explore.share: 0`): every list is the model's, so the "
            "served log cannot estimate another model.\n"
        )
    return (
        "## Exploring with evidence\n\n"
        f"{explore.share:.0%} of a known listener's lists show {explore.slots} long-tail "
        f"artist{'s' if explore.slots > 1 else ''} in their last place{'s' if explore.slots > 1 else ''}, "
        f"drawn uniformly from the long-tail artists among the model's best {explore.pool_depth} for them "
        "(marked `explored` and explained in the answer; the page's new-listener lists never explore); every "
        "shown artist's probability of being shown "
        "is logged beside the arm. `recsys experiment replay --challenger TAG` estimates a challenger's like "
        "rate from that log (IPS and self-normalised IPS with 95 % intervals per listener), without showing "
        "it to anybody, and says how much of its lists the log supports; the monitoring report and dashboard "
        "show the explored share and its like rate. The cost is the explored slots' lower like rate; "
        'README "Exploring with evidence" has the replay checked against the truth in the closed loop.\n'
    )


def render_model_card(inputs: CardInputs) -> str:
    """The card as Markdown; deterministic (no dates) so re-rendering the same inputs gives the same text.

    A song catalogue (``dataset.name`` other than ``lastfm-artists`` with track items) gets its own intended
    use, data and limitation sections; the model, protocol and result sections are shared.
    """
    params, offline = inputs.params, inputs.offline
    if item_kind(params.model_dump()) == "track":
        return _render_song_card(inputs)
    k = params.evaluate.primary_k
    served = challenger_model(params)
    title = "LightFM hybrid" if served == HYBRID else "two-stage ranker over a LightFM hybrid"
    header = (
        f"# Model card: {title} music recommender\n\n"
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
        ranker_section(offline, k),
        served_model_section(offline, inputs.bias, served, k, params.bias.serve),
        fairness_section(offline, k, params.evaluate.groups),
        mitigation_section(inputs.bias),
        calibration_section(inputs.bias),
        _session_section(params, ranker="ranker" in offline.get("models", {})),
        _exploration_section(params),
        _LIMITATIONS,
        _ETHICS,
    ]
    return "\n".join(section.rstrip("\n") + "\n" for section in sections if section)


def _render_song_card(inputs: CardInputs) -> str:
    params, offline = inputs.params, inputs.offline
    k = params.evaluate.primary_k
    header = (
        f"# Model card: LightFM hybrid song recommender ({params.dataset.name})\n\n"
        "<!-- GENERATED by `recsys model-card` from metrics/offline.json, params.yaml and the optional run "
        "outputs; do not edit by hand. -->\n\n"
        "Recommends Spotify tracks to playlists from the tracks they hold and each track's own audio "
        "features, lyric topics, genres and artist/album tags. The artist model's card is "
        "`docs/model_card.md`; serving and the registry are described in `README.md`.\n"
    )
    shared = [
        _model_details(inputs),
        _protocol_section(offline),
        results_section(offline, k),
        ranker_section(offline, k),
        fairness_section(offline, k, params.evaluate.groups),
        mitigation_section(inputs.bias),
    ]
    if params.split.cold_items == "newest":
        shared[1] += (
            "\nCold start here means new music: the held-out items are the tracks with the latest album "
            "release dates (`split.cold_items: newest`), not a random draw.\n"
        )
    sections = [
        header,
        SONG_USES,
        song_data_section(inputs.quality),
        *(about_tracks(section) for section in shared),
        SONG_LIMITATIONS,
        _ETHICS,
    ]
    return "\n".join(section.rstrip("\n") + "\n" for section in sections if section)


def card_path(params: Params) -> Path:
    """Where the data set's card lives: ``docs/model_card.md`` for the artists, else one per data set."""
    if params.dataset.name == DEFAULT_DATASET:
        return MODEL_CARD
    return MODEL_CARD.with_name(f"model_card_{params.dataset.name}.md")


def write_model_card(inputs: CardInputs, out: Path) -> Path:
    """Render and write the card atomically; returns ``out``."""
    write_text(out, render_model_card(inputs))
    return out


def refresh_model_card(project_dir: Path) -> Path:
    """The data set's card in ``project_dir`` rewritten from that workspace's run (what ``recsys
    model-card`` writes). The training flow calls it after the stages, so a run leaves the card in step with
    the ``metrics/`` it wrote: on another CPU the hybrid's numbers can differ in the fourth digit from the
    committed ones (``docs/benchmarks.md``, "Reproducibility"), and the card test compares the two."""
    inputs = load_card_inputs(
        project_dir / PARAMS_FILE,
        project_dir / METRICS_DIR,
        project_dir / PREPARED_DIR,
        project_dir / EDA_DIR,
    )
    return write_model_card(inputs, project_dir / card_path(inputs.params))
