"""The paired bootstrap behind every comparison's interval: right where the answer is known, paired,
seeded, bounded in memory."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.config import BootstrapParams
from recsys.offline import uncertainty
from recsys.offline.evaluation import EvaluationResult
from recsys.offline.uncertainty import aligned, lead_of, paired_bootstrap


def test_the_interval_matches_the_normal_approximation_of_a_mean_difference() -> None:
    rng = np.random.default_rng(3)
    old = rng.random(4000)
    new = old + rng.normal(0.01, 0.1, 4000)
    lead = paired_bootstrap(new, old, "ndcg@10", resamples=4000, seed=7)
    differences = new - old
    half = 1.96 * differences.std(ddof=1) / np.sqrt(len(differences))
    assert lead.delta == pytest.approx(differences.mean())
    assert lead.delta_low == pytest.approx(differences.mean() - half, abs=0.15 * half)
    assert lead.delta_high == pytest.approx(differences.mean() + half, abs=0.15 * half)
    assert lead.relative == pytest.approx(new.mean() / old.mean() - 1)
    assert lead.relative_low < lead.relative < lead.relative_high


def test_pairing_removes_what_the_listeners_share() -> None:
    rng = np.random.default_rng(0)
    ease = rng.random(2000)  # how easy each listener is, shared by both models
    new, old = ease + 0.01 + rng.normal(0, 0.01, 2000), ease + rng.normal(0, 0.01, 2000)
    paired = paired_bootstrap(new, old, resamples=1000)
    # The same draw for both models: the interval excludes 0; resampling each model on its own would not.
    assert paired.delta_low > 0
    unpaired = paired_bootstrap(new, np.random.default_rng(1).permutation(old), resamples=1000)
    assert unpaired.delta_low < 0 < unpaired.delta_high


def test_the_same_seed_gives_the_same_interval_and_chunks_do_not_change_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    new, old = rng.random(300), rng.random(300)
    first = paired_bootstrap(new, old, resamples=500, seed=11)
    assert paired_bootstrap(new, old, resamples=500, seed=11) == first
    assert paired_bootstrap(new, old, resamples=500, seed=12) != first
    monkeypatch.setattr(uncertainty, "CHUNK_CELLS", 300 * 7)  # 7 resamples a chunk
    assert paired_bootstrap(new, old, resamples=500, seed=11) == first


def test_listeners_without_a_value_are_left_out_and_none_left_is_nan() -> None:
    lead = paired_bootstrap(np.array([0.5, np.nan, 0.2]), np.array([0.4, 0.3, np.nan]), resamples=100)
    assert lead.n_users == 1 and lead.delta == pytest.approx(0.1)
    empty = paired_bootstrap(np.array([np.nan]), np.array([0.1]), resamples=100)
    assert empty.n_users == 0 and np.isnan(empty.delta)
    assert empty.to_dict()["delta_low"] is None  # JSON gets null, not NaN
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap(np.ones(3), np.ones(3), resamples=0)


def test_a_lead_over_zero_has_no_relative_value_and_says_it_absolutely() -> None:
    lead = paired_bootstrap(np.full(50, 0.2), np.zeros(50), "ndcg@10", resamples=100)
    assert lead.relative_low is not None and np.isnan(lead.relative)
    assert "(absolute)" in lead.interval()
    assert lead.sentence("hybrid", "nothing").startswith("hybrid leads nothing on ndcg@10 by +0.2000")


def test_lead_of_pairs_two_evaluations_on_the_listeners_both_measured() -> None:
    new = EvaluationResult(
        {}, users=np.array([0, 1, 2, 3]), per_user={"ndcg@10": np.array([1.0, 0.5, 0.0, 1.0])}
    )
    old = EvaluationResult({}, users=np.array([3, 1, 0]), per_user={"ndcg@10": np.array([0.0, 0.5, 1.0])})
    lead = lead_of(new, old, "ndcg@10", BootstrapParams(resamples=200))
    assert lead.n_users == 3 and lead.delta == pytest.approx((1.0 + 0.5 + 1.0 - 1.0 - 0.5 - 0.0) / 3)
    assert aligned(new.users, new.per_user["ndcg@10"], old.users, old.per_user["ndcg@10"])[1].tolist() == [
        1.0,
        0.5,
        0.0,
    ]
    with pytest.raises(KeyError, match="recall@10"):
        lead_of(new, old, "recall@10")
