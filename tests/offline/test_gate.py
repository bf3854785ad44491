"""The promotion gate on hand-built metric dicts: every rule, its tolerance and its reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from recsys.config import GateParams
from recsys.offline.gate import (
    GateError,
    candidate_from_report,
    decide,
    decide_feedback,
    metric_k,
    relative_increase,
    render_markdown,
)
from recsys.offline.uncertainty import Lead

PARAMS = GateParams(
    primary_metric="ndcg@10",
    min_improvement=0.0,
    max_coverage_drop=0.02,
    max_arp_increase_ratio=0.05,
    max_group_ndcg_drop=0.01,
    min_improvement_on="point",  # the rules on the point estimate; the bound's tests below
)


def candidate(
    ndcg: float = 0.30,
    coverage: float = 0.20,
    arp: float = 100.0,
    groups: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A gate input; group ndcg defaults to the overall ndcg for the three groups."""
    group_ndcg = groups if groups is not None else {"niche": ndcg, "medium": ndcg, "mainstream": ndcg}
    return {
        "metrics": {"ndcg@10": ndcg, "coverage@10": coverage, "arp@10": arp, "auc": 0.9},
        "groups": {name: {"ndcg@10": value, "n_users": 10} for name, value in group_ndcg.items()},
    }


def test_first_model_is_promoted() -> None:
    decision = decide(candidate(), None, PARAMS)
    assert decision.promote
    assert "first model" in decision.reasons[0]
    assert decision.comparison["ndcg@10"]["champion"] is None
    assert decision.comparison["ndcg@10[niche]"]["challenger"] == pytest.approx(0.30)


def test_clear_win_is_promoted_with_the_numbers() -> None:
    decision = decide(candidate(ndcg=0.35), candidate(ndcg=0.30), PARAMS)
    assert decision.promote
    assert decision.reasons == [decision.reasons[0]]
    assert "0.3000 -> 0.3500" in decision.reasons[0]
    assert all(row["ok"] for row in decision.comparison.values())
    assert decision.comparison["ndcg@10"]["delta"] == pytest.approx(0.05)


def test_tie_does_not_replace_the_champion() -> None:
    decision = decide(candidate(), candidate(), PARAMS)
    assert not decision.promote
    assert decision.reasons == [
        "ndcg@10 does not improve: 0.3000 -> 0.3000 (delta +0.0000; needs to be > 0 and >= +0.0000)"
    ]


def test_float_noise_is_not_a_win() -> None:
    assert not decide(candidate(ndcg=0.3 + 1e-15), candidate(ndcg=0.3), PARAMS).promote


def test_min_improvement_is_respected() -> None:
    params = PARAMS.model_copy(update={"min_improvement": 0.02})
    assert not decide(candidate(ndcg=0.31), candidate(ndcg=0.30), params).promote
    # 0.30 - 0.28 is 0.01999999999999996 in floating point: exactly the required gain still counts.
    assert decide(candidate(ndcg=0.30), candidate(ndcg=0.28), params).promote
    refused = decide(candidate(ndcg=0.31), candidate(ndcg=0.30), params)
    assert ">= +0.0200" in refused.reasons[0]
    assert refused.comparison["ndcg@10"]["tolerance"] == pytest.approx(0.02)


def test_win_with_coverage_regression_is_refused() -> None:
    decision = decide(candidate(ndcg=0.40, coverage=0.15), candidate(coverage=0.20), PARAMS)
    assert not decision.promote
    assert decision.comparison["ndcg@10"]["ok"]
    assert not decision.comparison["coverage@10"]["ok"]
    assert decision.reasons == ["coverage@10 drops too much: 0.2000 -> 0.1500 (drop 0.0500 > allowed 0.0200)"]


def test_coverage_drop_within_tolerance_passes() -> None:
    assert decide(candidate(ndcg=0.40, coverage=0.19), candidate(coverage=0.20), PARAMS).promote


def test_win_with_popularity_bias_regression_is_refused() -> None:
    decision = decide(candidate(ndcg=0.40, arp=110.0), candidate(arp=100.0), PARAMS)
    assert not decision.promote
    (reason,) = decision.reasons
    assert reason.startswith("arp@10 (popularity bias) grows too much: 100.0000 -> 110.0000")
    assert "+10.0% > allowed +5.0%" in reason
    assert decide(candidate(ndcg=0.40, arp=104.0), candidate(arp=100.0), PARAMS).promote


def test_one_group_regression_is_refused() -> None:
    challenger = candidate(ndcg=0.40, groups={"niche": 0.10, "medium": 0.45, "mainstream": 0.50})
    champion = candidate(groups={"niche": 0.15, "medium": 0.30, "mainstream": 0.30})
    decision = decide(challenger, champion, PARAMS)
    assert not decision.promote
    assert decision.reasons == [
        "ndcg@10 of the 'niche' users drops too much: 0.1500 -> 0.1000 (drop 0.0500 > allowed 0.0100)"
    ]
    assert decision.comparison["ndcg@10[medium]"]["ok"]


def test_every_failed_rule_gives_a_reason() -> None:
    challenger = candidate(ndcg=0.30, coverage=0.10, arp=200.0, groups={"niche": 0.0})
    decision = decide(challenger, candidate(groups={"niche": 0.3}), PARAMS)
    assert not decision.promote
    assert [reason.split(" ")[0] for reason in decision.reasons] == [
        "ndcg@10",
        "coverage@10",
        "arp@10",
        "ndcg@10",
    ]


def test_group_without_users_is_not_compared() -> None:
    challenger = candidate(ndcg=0.40)
    champion = candidate()
    champion["groups"]["niche"] = {"n_users": 0}
    decision = decide(challenger, champion, PARAMS)
    assert decision.promote
    assert "ndcg@10[niche]" not in decision.comparison


def test_missing_guard_metric_fails_closed() -> None:
    challenger = candidate(ndcg=0.40)
    del challenger["metrics"]["arp@10"]
    decision = decide(challenger, candidate(), PARAMS)
    assert not decision.promote
    assert "arp@10 is missing" in decision.reasons[0]


def test_nan_primary_metric_is_refused() -> None:
    assert not decide(candidate(ndcg=float("nan")), candidate(), PARAMS).promote


def test_missing_primary_metric_raises() -> None:
    challenger = candidate()
    del challenger["metrics"]["ndcg@10"]
    with pytest.raises(GateError, match="challenger has no 'ndcg@10'"):
        decide(challenger, candidate(), PARAMS)
    with pytest.raises(GateError, match="champion has no"):
        decide(candidate(), challenger, PARAMS)


def test_primary_metric_sets_the_guard_cut_off() -> None:
    params = PARAMS.model_copy(update={"primary_metric": "ndcg@5"})
    challenger = {"metrics": {"ndcg@5": 0.5, "coverage@5": 0.1, "arp@5": 10.0}, "groups": {}}
    champion = {"metrics": {"ndcg@5": 0.4, "coverage@5": 0.2, "arp@5": 10.0}, "groups": {}}
    decision = decide(challenger, champion, params)
    assert not decision.promote
    assert set(decision.comparison) == {"ndcg@5", "coverage@5", "arp@5"}
    assert metric_k("auc") == 10
    assert metric_k("precision@20") == 20


def test_relative_increase_from_zero() -> None:
    assert relative_increase(0.0, 0.0) == 0.0
    assert relative_increase(1.0, 0.0) == float("inf")
    assert relative_increase(1.5, 1.0) == pytest.approx(0.5)


def test_candidate_from_report_and_decision_round_trip() -> None:
    report = {
        "protocol": {},
        "models": {"lightfm_hybrid": {"ndcg@10": 0.3, "coverage@10": 0.2, "arp@10": 90.0, "n_users": 5}},
        "cold_start": {},
        "groups": {"lightfm_hybrid": {"niche": {"ndcg@10": 0.2}, "medium": {"n_users": 0}}},
    }
    chosen = candidate_from_report(report, "lightfm_hybrid")
    assert chosen["metrics"]["ndcg@10"] == 0.3
    assert chosen["groups"] == {"niche": {"ndcg@10": 0.2}, "medium": {"n_users": 0.0}}
    with pytest.raises(GateError, match="'ease' is not in the offline report"):
        candidate_from_report(report, "ease")
    payload = decide(chosen, None, PARAMS).to_dict()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["promote"] is True


def test_render_markdown_has_a_row_per_compared_metric() -> None:
    decision = decide(candidate(ndcg=0.40, coverage=0.10), candidate(), PARAMS)
    text = render_markdown(decision)
    assert text.startswith("## Gate decision: keep the champion")
    assert "| coverage@10 | 0.1000 | 0.2000 | -0.1000 | 0.0200 | **no** |" in text
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table_rows) == 1 + len(decision.comparison)
    assert f"- {decision.reasons[0]}" in text


FEEDBACK = PARAMS.model_copy(
    update={
        "feedback_max_primary_drop": 0.005,
        "feedback_metric": "feedback_hit_rate@10",
        "feedback_max_drop": 0.05,
    }
)


def with_feedback(base: dict[str, Any], hit_rate: float | None) -> dict[str, Any]:
    """``base`` plus a held-out feedback hit rate (none: no held-out like)."""
    if hit_rate is None:
        return base
    return base | {"metrics": base["metrics"] | {"feedback_hit_rate@10": hit_rate}}


@pytest.mark.parametrize(
    ("ndcg", "hit_rate", "promote", "failed"),
    [
        (0.297, 0.93, True, None),  # within both tolerances: fresher model wins
        (0.300, None, True, None),  # no held-out like: the test split alone decides
        (0.294, 0.95, False, "ndcg@10 drops too much"),
        (0.300, 0.89, False, "feedback_hit_rate@10 drops too much"),
    ],
)
def test_feedback_challenger_needs_non_inferiority_not_a_win(
    ndcg: float, hit_rate: float | None, promote: bool, failed: str | None
) -> None:
    champion = with_feedback(candidate(0.30), None if hit_rate is None else 0.95)
    decision = decide_feedback(with_feedback(candidate(ndcg), hit_rate), champion, FEEDBACK)
    assert decision.promote is promote
    if failed:
        assert any(reason.startswith(failed) for reason in decision.reasons), decision.reasons
    assert ("feedback_hit_rate@10" in decision.comparison) is (hit_rate is not None)


def test_feedback_gate_keeps_the_guards() -> None:
    decision = decide_feedback(candidate(0.31, arp=120.0), candidate(0.30), FEEDBACK)
    assert not decision.promote
    assert any("popularity bias" in reason for reason in decision.reasons)
    with pytest.raises(GateError, match="champion has no"):
        decide_feedback(candidate(), {"metrics": {}}, FEEDBACK)


def lead(delta: float, low: float, high: float, metric: str = "ndcg@10") -> Lead:
    """A paired lead of ``delta`` with the interval [low, high]."""
    return Lead(
        metric, 0.3 + delta, 0.3, delta, low, high, delta / 0.3, low / 0.3, high / 0.3, 500, 2000, 0.95
    )


BOUND = PARAMS.model_copy(update={"min_improvement_on": "bound"})


def test_a_win_inside_the_noise_does_not_promote_on_the_bound() -> None:
    challenger, champion = candidate(0.31), candidate(0.30)
    assert decide(challenger, champion, PARAMS, lead(0.01, -0.002, 0.02)).promote  # point: the lead wins
    refused = decide(challenger, champion, BOUND, lead(0.01, -0.002, 0.02))
    assert not refused.promote
    assert "95% interval [-0.0020, +0.0200]" in refused.reasons[0]
    assert refused.comparison["ndcg@10"]["delta_low"] == -0.002
    assert decide(challenger, champion, BOUND, lead(0.01, 0.001, 0.02)).promote


def test_min_improvement_applies_to_the_lower_bound() -> None:
    challenger, champion = candidate(0.33), candidate(0.30)
    wanted = BOUND.model_copy(update={"min_improvement": 0.01})
    assert not decide(challenger, champion, wanted, lead(0.03, 0.005, 0.05)).promote
    assert decide(challenger, champion, wanted, lead(0.03, 0.012, 0.05)).promote


def test_without_a_paired_measurement_the_bound_falls_back_to_the_point_and_says_so() -> None:
    decision = decide(candidate(0.31), candidate(0.30), BOUND)
    assert decision.promote
    assert "point estimate: no paired measurement" in decision.reasons[0]


def test_a_lead_on_another_metric_is_refused() -> None:
    with pytest.raises(GateError, match="recall@10"):
        decide(candidate(0.31), candidate(0.30), BOUND, lead(0.01, 0.005, 0.02, metric="recall@10"))


def test_the_feedback_gate_holds_its_margin_at_the_bound() -> None:
    challenger, champion = candidate(0.298), candidate(0.30)
    # A drop of 0.002 within the 0.005 margin, but the interval reaches a drop of 0.008.
    assert decide_feedback(challenger, champion, FEEDBACK, lead(-0.002, -0.008, 0.004)).promote
    bound = FEEDBACK.model_copy(update={"min_improvement_on": "bound"})
    refused = decide_feedback(challenger, champion, bound, lead(-0.002, -0.008, 0.004))
    assert not refused.promote and "at most +0.0080 at the 95% bound" in refused.reasons[0]
    assert decide_feedback(challenger, champion, bound, lead(-0.002, -0.004, 0.001)).promote


def test_a_bound_that_is_not_a_number_fails_the_feedback_rule() -> None:
    bound = FEEDBACK.model_copy(update={"min_improvement_on": "bound"})
    refused = decide_feedback(candidate(0.30), candidate(0.30), bound, lead(0.0, float("nan"), float("nan")))
    assert not refused.promote and refused.reasons[0].startswith("ndcg@10 drops too much")
