"""The model card's result sections: metrics against the baselines, fairness per user group, mitigation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from recsys.offline.bias import measured_model
from recsys.reporting.formatting import (
    fmt,
    label,
    lead_cell,
    lead_header,
    markdown_table,
    ordered_models,
    pct,
)
from recsys.specs import HYBRID, MOST_POPULAR

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


def results_section(offline: Mapping[str, Any], k: int) -> str:
    """Test metrics of every model at ``k``, cold-start metrics, and the gain over most-popular."""
    models = offline["models"]
    lead_column = lead_header(offline)
    header = ["model", *(f"{m}@{k}" for m in TABLE_METRICS), "AUC", *([lead_column] if lead_column else [])]
    rows = [
        [
            label(name),
            *(fmt(models[name].get(f"{m}@{k}", "-")) for m in TABLE_METRICS),
            fmt(models[name]["auc"]),
            *([lead_cell(offline, name)] if lead_column else []),
        ]
        for name in ordered_models(models)
    ]
    parts = [f"## Results on the test split (k = {k})", "", markdown_table(header, rows), ""]
    if lead_column:
        parts += [_uncertainty_note(offline), ""]
    if HYBRID in models and MOST_POPULAR in models:
        ours, popular = models[HYBRID][f"ndcg@{k}"], models[MOST_POPULAR][f"ndcg@{k}"]
        best_other = max(
            (name for name in models if name != HYBRID), key=lambda name: models[name][f"ndcg@{k}"]
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
            markdown_table(["model", "AUC", f"ndcg@{k}", f"recall@{k}"], cold_rows),
            "",
            "Only item features can rank an artist never seen in training, so models without features are "
            "expected near chance (AUC 0.5).",
            "",
        ]
    return "\n".join(parts)


def _uncertainty_note(offline: Mapping[str, Any]) -> str:
    """How sure the leads are: the method and the closest competitor's lead in words."""
    uncertainty = offline["uncertainty"]
    leads = uncertainty["leads"]
    reference = uncertainty["reference"]
    measured = [name for name in leads if leads[name].get("delta") is not None]
    if not measured:
        return "Leads are paired per listener: none could be measured on this split."
    closest = min(measured, key=lambda name: leads[name]["delta"])
    lead = leads[closest]
    verb = "leads" if lead["delta"] >= 0 else "trails"
    sure = (
        "the whole interval is above zero"
        if (lead["delta_low"] or 0) > 0
        else "the interval includes zero: not a sure lead"
        if lead["delta"] >= 0
        else "it trails"
    )
    return (
        f"Leads are paired per listener: {uncertainty['resamples']:,} bootstrap resamples of the "
        f"{lead['n_users']:,} test listeners, the same draw for both models (seed {uncertainty['seed']}). "
        f"The closest competitor: {label(reference)} {verb} {label(closest)} by "
        f"{lead_cell(offline, closest)} on {uncertainty['metric']} "
        f"({fmt(lead['new'])} against {fmt(lead['old'])}; {sure})."
    )


def served_model_section(
    offline: Mapping[str, Any], bias: Mapping[str, Any] | None, served: str, k: int, serve: str = "chosen"
) -> str:
    """Which model known listeners get once it passes the gate (``served``: the run's challenger,
    ``gate.challenger``) and why, when it is not the hybrid: its nDCG and niche / mainstream ratio beside the
    hybrid's, and its mitigation (``serve``: ``bias.serve``)."""
    models, groups = offline.get("models", {}), offline.get("groups", {})
    if served == HYBRID or served not in models or HYBRID not in models:
        return ""
    ours, hybrid = models[served].get(f"ndcg@{k}"), models[HYBRID].get(f"ndcg@{k}")
    if not ours or not hybrid:
        return ""
    ratios = [_niche_ratio(groups.get(name, {}), k) for name in (served, HYBRID)]
    why = f"nDCG@{k} {fmt(ours)} against the hybrid's {fmt(hybrid)} ({ours / hybrid - 1:+.1%})"
    if None not in ratios:
        why += f", niche / mainstream nDCG@{k} {ratios[0]:.3f} against {ratios[1]:.3f}"
    mitigation = (bias or {}).get("mitigation") or {}
    measured = bool(bias) and measured_model(bias or {}) == served and mitigation.get("served")
    if serve != "chosen":
        how = f"Served unmitigated (`bias.serve: {serve}`)."
    elif measured:
        how = (
            f"The mitigation it is served with ({mitigation['served']}) was chosen on its own lists "
            "(next sections)."
        )
    else:
        how = "Served unmitigated: `metrics/bias.json` holds no mitigation chosen on its lists."
    return "\n".join(
        [
            "## The served model",
            "",
            f"The run offers the {label(served)} to the gate (`gate.challenger: {served}`); once it passes, "
            f"known listeners get its lists: {why}. {how} "
            "New listeners (favourites on the page), similar artists and the reasons given stay the "
            "hybrid's.",
            "",
        ]
    )


def _niche_ratio(by_group: Mapping[str, Any], k: int) -> float | None:
    """Niche over mainstream nDCG@k of one model's groups; None when either is missing or mainstream is 0."""
    niche, main = (by_group.get(g, {}).get(f"ndcg@{k}") for g in ("niche", "mainstream"))
    return niche / main if niche is not None and main else None


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
        f"{g}: {fmt(by_model[HYBRID][g]['n_users'])} users" for g in present if g in by_model.get(HYBRID, {})
    )
    parts = [
        "## Fairness across listener groups",
        "",
        f"User groups: {offline['protocol'].get('user_groups', 'by mainstreaminess')} ({sizes}). "
        "ARP is the average popularity (training listeners) of the recommended artists.",
        "",
        markdown_table(header, rows),
        "",
    ]
    hybrid = by_model.get(HYBRID, {})
    if "niche" in hybrid and "mainstream" in hybrid:
        niche, main = hybrid["niche"][f"ndcg@{k}"], hybrid["mainstream"][f"ndcg@{k}"]
        if niche < main:
            summary = (
                f"The hybrid serves niche listeners less well: nDCG@{k} {fmt(niche)} against {fmt(main)} for "
                f"mainstream listeners ({niche / main:.0%} of it). {_gap_note(by_model, k)}"
            )
        elif main > 0:
            summary = (
                f"The hybrid serves niche listeners at least as well: nDCG@{k} {fmt(niche)} against "
                f"{fmt(main)} for mainstream listeners ({niche / main:.0%} of it)."
            )
        else:  # a model that finds nothing for either group (trained for seconds): no ratio to give
            summary = f"The hybrid finds no held-out item for mainstream listeners (nDCG@{k} {fmt(main)})."
        parts += [summary, ""]
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
    measured = f" Measured on the {label(bias['model'])}'s lists." if "model" in bias else ""
    parts += [
        "Popularity re-ranking lowers each artist's score in proportion to its popularity; every strength "
        f"is evaluated with the offline protocol.{measured} Rule: {bias.get('rule', '-')}.",
        "",
        markdown_table(
            ["strength", f"ndcg@{k}", "nDCG cost", f"long_tail_share@{k}", f"arp@{k}", "popularity lift"],
            rows,
        ),
        "",
        f"Chosen strength: {chosen['strength']:g} (nDCG@{k} {fmt(chosen[f'ndcg@{k}'])}, long-tail share "
        f"{fmt(chosen[f'long_tail_share@{k}'])}, cost {pct(chosen.get('ndcg_cost', 0.0))}).",
        "",
    ]
    parts += _group_effect(bias, k)
    served = (bias.get("mitigation") or {}).get("served", "popularity")
    if served != "popularity":
        parts += [
            f"Listeners do not get this re-ranking: the served mitigation is {served} (next section).",
            "",
        ]
    elif chosen["strength"] == 0:
        parts += [
            "No strength stays within the allowed nDCG cost, so recommendations are served without "
            "re-ranking; the curve is kept to show what fairer ranking would cost.",
            "",
        ]
    return "\n".join(parts)


def ranker_section(offline: Mapping[str, Any], k: int, top: int = 8) -> str:
    """The two-stage rankers of the run: candidate recall per generator and for the union (the ceiling of
    what a ranker can reach), the boosting rounds and the features with the largest share of the gain."""
    rankers = offline.get("rankers") or {}
    parts: list[str] = []
    for name, info in rankers.items():
        models = offline["models"]
        recall = info.get("recall", {})
        rows = [
            [label(generator) if generator != "union" else "**union**", fmt(value)]
            for generator, value in recall.items()
        ]
        importance = sorted(info.get("importance", {}).items(), key=lambda item: -item[1])[:top]
        gain_rows = [[feature, pct(share)] for feature, share in importance]
        ours = models.get(name, {}).get(f"ndcg@{k}")
        hybrid = models.get(HYBRID, {}).get(f"ndcg@{k}")
        ratio = f" ({ours / hybrid:.3f} times the hybrid's)" if ours and hybrid else ""
        parts += [
            f"## {label(name)}",
            "",
            f"Candidates: each generator's top {info.get('candidates')} unplayed items, "
            f"{fmt(info.get('mean_candidates', 0.0))} per listener on average; LightGBM lambdarank learned "
            f"from the validation part with generators fitted without it ({info.get('rounds')} rounds), and "
            f"ranks the test listeners' candidates from the models above. Items nobody played in training "
            f"are no candidates (offline they are mostly someone's held-out items): they keep the hybrid's "
            f"order below the candidates. nDCG@{k} {fmt(ours or 0.0)}{ratio}. Served with "
            f"`gate.challenger: ranker`: packaged with its generators and every known listener's list ranked "
            f"ahead; new listeners and similar items stay the hybrid's.",
            "",
            f"Candidate recall (the share of a test listener's items among their candidates, over "
            f"{fmt(info.get('listeners', 0))} listeners): the ceiling of the ranker's recall.",
            "",
            markdown_table(["generator", f"recall@{info.get('candidates')}"], rows),
            "",
            "Features by share of the ranker's gain:",
            "",
            markdown_table(["feature", "share of gain"], gain_rows),
            "",
        ]
    return "\n".join(parts)


def calibration_section(bias: Mapping[str, Any] | None) -> str:
    """Calibrated re-ranking per listener group and the served mitigation with the rule's reasons
    (``metrics/bias.json``'s ``calibration`` and ``mitigation``); empty when not measured."""
    if not bias or "mitigation" not in bias:
        return ""
    k = bias.get("k", 10)
    calibration, mitigation = bias.get("calibration") or {}, bias["mitigation"]
    groups = ("niche", "medium", "mainstream")
    rows = [
        [
            f"{row['strength']:g}" + (" (chosen)" if row["strength"] == calibration.get("chosen") else ""),
            fmt(row["all"].get(f"ndcg@{k}")),
            *(fmt(row["all"].get(f"ndcg@{k}/{group}")) for group in groups),
            fmt(row["all"].get("niche_ratio")),
            fmt(row["all"].get("miscalibration")),
            fmt(row["all"].get("popularity_lift/niche")),
        ]
        for row in calibration.get("strengths", [])
    ]
    options = [
        [
            option["kind"] if option["kind"] == "none" else f"{option['kind']} {option['strength']:g}",
            fmt(option.get(f"ndcg@{k}")),
            fmt(option.get(f"ndcg@{k}/niche")),
            fmt(option.get("niche_ratio")),
            fmt(option.get("miscalibration")),
            fmt(option.get("popularity_lift/niche")),
        ]
        for option in mitigation.get("options", [])
    ]
    listeners = calibration.get("listeners", {})
    genres = ", ".join(name.split(":", 1)[1] for name in calibration.get("genres", [])[:8])
    served = mitigation["served"]
    label = served if served == "none" else f"{served} at strength {mitigation['strength']:g}"
    return "\n".join(
        [
            "## Fair to niche listeners: calibration and the served mitigation",
            "",
            "Calibrated re-ranking (Steck, RecSys 2018) picks each list greedily from the model's best "
            "unlistened artists so that its genre mix (the most common genre and tag columns: "
            f"{genres}, ...) follows the listener's own; miscalibration is the KL divergence of the list's "
            "mix from theirs (genres and popularity tiers), popularity lift the list's mean popularity over "
            "their own. All test listeners:",
            "",
            markdown_table(
                [
                    "strength",
                    f"ndcg@{k}",
                    *(f"ndcg@{k} {group}" for group in groups),
                    "niche / mainstream",
                    "miscalibration",
                    "popularity lift (niche)",
                ],
                rows,
            ),
            "",
            f"The strength is chosen on {listeners.get('tuning', '-')} of the test listeners (drawn by the "
            f"seed); the served mitigation on the other {listeners.get('report', '-')}:",
            "",
            markdown_table(
                ["served as", f"ndcg@{k}", "niche", "niche / mainstream", "miscalibration", "lift (niche)"],
                options,
            ),
            "",
            f"Rule: {mitigation.get('rule', '-')}",
            "",
            f"**Served: {label}.** Why: {mitigation.get('why', '-')}",
            "",
        ]
    )
