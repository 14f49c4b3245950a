"""The verdict's statistics on fixed inputs (closed forms, scipy) and by simulation: no Ray, no data files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lossweep.sweep.stats import (
    bootstrap_interval,
    holm,
    mean_ci,
    paired_t,
    paired_table,
    satterthwaite_df,
    two_level_bootstrap,
)

Z = stats.norm.ppf(0.975)


def test_mean_ci_is_the_t_interval():
    values = [0.41, 0.45, 0.44, 0.47]
    mean, std, half = mean_ci(values)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert (mean - half, mean + half) == pytest.approx((low, high))


def test_one_seed_bootstrap_is_the_normal_interval_over_queries():
    per_query = np.random.default_rng(0).uniform(0, 1, size=400)
    interval = bootstrap_interval(per_query[None, :], samples=20_000)
    half = Z * per_query.std(ddof=1) / math.sqrt(len(per_query))
    assert interval.value == pytest.approx(per_query.mean())
    assert interval.low == pytest.approx(per_query.mean() - half, abs=0.08 * half)
    assert interval.high == pytest.approx(per_query.mean() + half, abs=0.08 * half)


def test_seed_level_alone_gives_the_t_interval_over_seeds():
    # One item per seed: the two-level bootstrap reduces to seeds, rescaled and widened to the t-interval.
    seeds = np.array([0.40, 0.43, 0.47, 0.44, 0.39, 0.45, 0.42, 0.46])
    interval = bootstrap_interval(seeds[:, None], samples=40_000)
    low, high = stats.t.interval(0.95, len(seeds) - 1, loc=seeds.mean(), scale=stats.sem(seeds))
    assert satterthwaite_df(seeds[:, None]) == pytest.approx(len(seeds) - 1)
    assert interval.low == pytest.approx(low, abs=0.1 * (high - low))
    assert interval.high == pytest.approx(high, abs=0.1 * (high - low))


def test_satterthwaite_df_matches_the_mean_squares_by_hand():
    table = np.array([[0.1, 0.4, 0.3, 0.9], [0.2, 0.6, 0.2, 0.8], [0.0, 0.5, 0.4, 1.0]])
    s, q = table.shape
    g, rows, cols = table.mean(), table.mean(1), table.mean(0)
    ms_seed = q * ((rows - g) ** 2).sum() / (s - 1)
    ms_query = s * ((cols - g) ** 2).sum() / (q - 1)
    ms_res = ((table - rows[:, None] - cols[None, :] + g) ** 2).sum() / ((s - 1) * (q - 1))
    variance = ms_seed + ms_query - ms_res
    expected = variance**2 / (ms_seed**2 / (s - 1) + ms_query**2 / (q - 1) + ms_res**2 / ((s - 1) * (q - 1)))
    assert satterthwaite_df(table) == pytest.approx(expected)


def test_queries_are_drawn_once_per_replicate_for_all_seeds():
    # Two seeds with identical rows: a shared query draw gives both the same mean, so the bootstrap's
    # spread is the one-seed spread; separate draws per seed would shrink it by sqrt(2).
    row = np.random.default_rng(1).uniform(size=200)
    one = two_level_bootstrap(row[None, :], samples=20_000).std()
    two = two_level_bootstrap(np.stack([row, row]), samples=20_000).std()
    assert two == pytest.approx(one, rel=0.05)


def test_paired_t_equals_scipys_paired_test_and_pairs_by_seed_id():
    a = {1042: 0.51, 1043: 0.49, 1044: 0.55, 1045: 0.50}
    b = {1044: 0.50, 1042: 0.47, 1043: 0.48, 1099: 0.10}  # 1099 has no partner; order does not matter
    result = paired_t(a, b)
    seeds = [1042, 1043, 1044]
    reference = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    assert result.p == pytest.approx(reference.pvalue)
    assert (result.low, result.high) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    assert result.value == pytest.approx(np.mean([a[s] - b[s] for s in seeds]))


def test_paired_t_does_not_invent_certainty():
    assert paired_t({1: 0.5}, {1: 0.4}) is None  # one paired seed: nothing to test
    equal_gaps = paired_t({1: 0.5, 2: 0.6, 3: 0.7}, {1: 0.4, 2: 0.5, 3: 0.6})
    assert math.isnan(equal_gaps.p) and not equal_gaps.shows_difference()
    assert paired_t({1: 0.5, 2: 0.5}, {1: 0.5, 2: 0.5}).p == 1.0
    against_constant = paired_t({1: 0.5, 2: 0.6, 3: 0.4}, 0.45)
    assert against_constant.p == pytest.approx(stats.ttest_1samp([0.5, 0.6, 0.4], 0.45).pvalue)


def test_paired_table_pairs_by_seed_and_query_and_takes_a_fixed_baseline():
    a = {7: {"q1": 0.5, "q2": 1.0}, 8: {"q1": 0.0, "q2": 0.5}}
    b = {8: {"q2": 0.25, "q1": 0.0}, 9: {"q1": 1.0, "q2": 1.0}}
    table, seeds = paired_table(a, b)
    assert seeds == [8] and table.tolist() == [[0.0, 0.25]]
    table, seeds = paired_table(a, {"q1": 0.5, "q2": 0.5})
    assert seeds == [7, 8] and table.tolist() == [[0.0, 0.5], [-0.5, 0.0]]


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2, None, float("nan")]) == [0.4, None, 1.0]
    assert holm([]) == []


# --- Simulation: synthetic compares with known truth ------------------------------------------------------

# Per-query scores = query difficulty + the loss's per-query effect + its seed's effect + noise, for k
# losses x S seeds x Q queries. The reference loss is chosen independently of the verdict data (as
# lossweep chooses it on the selection set), then each other loss is tested against it, Holm-adjusted.
REGIMES = {  # (seed sd, per-query loss-effect sd, residual sd)
    "queries dominate": (0.002, 0.04, 0.05),
    "balanced": (0.006, 0.03, 0.05),
    "seeds dominate": (0.02, 0.005, 0.05),
}


def simulate(regime: str, compares: int, difference: float, seed: int, losses=4, seeds=3, queries=75) -> float:
    """Share of compares in which any loss is declared different from the reference."""
    seed_sd, effect_sd, noise_sd = REGIMES[regime]
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(compares):
        difficulty = rng.normal(0.5, 0.25, queries)
        scores = [
            difficulty
            + rng.normal(0, effect_sd, queries)
            + rng.normal(0, seed_sd, (seeds, 1))
            + rng.normal(0, noise_sd, (seeds, queries))
            + (difference if loss == 0 else 0.0)
            for loss in range(losses)
        ]
        reference = 0 if difference else int(rng.integers(losses))
        p = [
            bootstrap_interval(scores[reference] - scores[other], samples=500, seed=i).p
            for other in range(losses)
            if other != reference
        ]
        hits += any(adjusted < 0.05 for adjusted in holm(p))
    return hits / compares


@pytest.mark.parametrize("regime", list(REGIMES))
def test_no_true_difference_keeps_the_family_wise_error_rate(regime):
    compares = 500
    rate = simulate(regime, compares, difference=0.0, seed=11)
    slack = 3 * math.sqrt(0.05 * 0.95 / compares)  # three Monte Carlo standard errors
    assert rate <= 0.05 + slack, f"{regime}: false positives in {rate:.1%} of {compares} null compares"


def test_a_three_point_difference_is_detected_at_the_expected_rate():
    # 3 points of NDCG@10 over 75 queries x 3 seeds (balanced regime): the true standard error of the
    # difference is about 0.0085, so an exact test at Holm's first level (0.05 / 3) has power ~0.88.
    # The two-level bootstrap is slightly conservative; it must still find the difference in >= 75%.
    rate = simulate("balanced", 200, difference=0.03, seed=12)
    assert rate >= 0.75, f"detected in {rate:.1%}"
