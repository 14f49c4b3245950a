"""Planning a verdict: the planned power is the verdict's own, checked against independently simulated
verdicts; variance components are recovered from measured tables. No Ray, no data files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossweep.sweep.power import (
    Components,
    SimulatedPower,
    detectable,
    estimate,
    queries_needed,
    seeds_needed,
    simulated_power,
)
from lossweep.sweep.stats import bootstrap_interval, satterthwaite_df

MIXES = {  # (seed sd, per-query sd, seed x query sd) of a comparison's differences
    "queries dominate": Components(0.002, 0.04, 0.05),
    "balanced": Components(0.006, 0.03, 0.05),
    "seeds dominate": Components(0.02, 0.005, 0.05),
}
ALPHA = 0.05 / 3  # Holm's first level in a family of three comparisons


def draw(components: Components, effect: float, seeds: int, queries: int, rng) -> np.ndarray:
    return (
        effect
        + rng.normal(0, components.seed, (seeds, 1))
        + rng.normal(0, components.query, (1, queries))
        + rng.normal(0, components.residual, (seeds, queries))
    )


@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize(("seeds", "queries"), [(3, 30), (8, 100)])
def test_planned_power_is_within_five_points_of_simulated_verdicts(mix, seeds, queries):
    # Given the plan's minimum detectable difference for this design (80% power at Holm's first level)
    components = MIXES[mix]
    plan = SimulatedPower(components, seeds, queries, ALPHA, seed=7)
    effect = plan.detectable()
    assert plan.power(effect) == pytest.approx(0.8, abs=0.01)
    # When verdicts are simulated afresh at that difference, with the verdict's own interval
    rng = np.random.default_rng(1000 * seeds + queries)
    verdicts = 600
    found = sum(
        bootstrap_interval(draw(components, effect, seeds, queries, rng), samples=2000, seed=10_000 + i).p < ALPHA
        for i in range(verdicts)
    )
    # Then they find it as often as planned, within 5 points
    assert found / verdicts == pytest.approx(plan.power(effect), abs=0.05), f"{mix}: {found / verdicts:.3f}"


def test_more_seeds_or_queries_detect_smaller_differences_and_the_counts_needed_are_minimal():
    balanced = MIXES["balanced"]
    three, six = detectable(balanced, 3, 75, ALPHA), detectable(balanced, 6, 75, ALPHA)
    assert six < three
    effect = 0.5 * (three + six)  # between the two: 3 seeds miss it, 6 find it
    seeds = seeds_needed(effect, balanced, 75, ALPHA)
    assert seeds is not None and 3 < seeds <= 6
    assert simulated_power(balanced, seeds, 75, ALPHA).power(effect) >= 0.8
    assert simulated_power(balanced, seeds - 1, 75, ALPHA).power(effect) < 0.8
    queries = queries_needed(0.02, balanced, 5, ALPHA, most=5_000)
    assert queries is not None and simulated_power(balanced, 5, queries, ALPHA).power(0.02) >= 0.8
    assert simulated_power(balanced, 5, int(queries / 1.25), ALPHA).power(0.02) < 0.8
    # Seed noise alone can hide a difference from any number of queries, and query noise from any seeds
    assert queries_needed(0.01, MIXES["seeds dominate"], 3, ALPHA, most=100_000) is None
    assert seeds_needed(0.003, MIXES["queries dominate"], 30, ALPHA, most=40) is None


def test_components_are_recovered_from_measured_tables():
    truth = Components(0.01, 0.03, 0.05)
    rng = np.random.default_rng(3)
    tables = [draw(truth, 0.02, 5, 200, rng) for _ in range(20)]
    found = estimate(tables)
    assert found.seed == pytest.approx(truth.seed, rel=0.25)
    assert found.query == pytest.approx(truth.query, rel=0.1)
    assert found.residual == pytest.approx(truth.residual, rel=0.05)
    assert estimate([np.zeros((1, 10))]) is None  # one seed: no seed variance to measure


def test_the_degrees_of_freedom_are_the_verdict_s_satterthwaite_on_expected_mean_squares():
    components, seeds, queries = Components(0.01, 0.02, 0.03), 4, 50
    # A table whose mean squares equal their expectations: seed and query effects at exactly their sd
    residual = np.random.default_rng(0).normal(size=(seeds, queries))
    residual -= residual.mean(axis=1, keepdims=True) + residual.mean(axis=0, keepdims=True) - residual.mean()
    residual *= components.residual / math.sqrt((residual**2).sum() / ((seeds - 1) * (queries - 1)))
    seed_effect = np.array([-1.5, -0.5, 0.5, 1.5])
    seed_effect *= math.sqrt(components.seed**2 + components.residual**2 / queries) / seed_effect.std(ddof=1)
    query_effect = np.random.default_rng(1).normal(size=queries)
    query_effect = (query_effect - query_effect.mean()) / query_effect.std(ddof=1)
    query_effect *= math.sqrt(components.query**2 + components.residual**2 / seeds)
    table = seed_effect[:, None] + query_effect[None, :] + residual
    assert components.df(seeds, queries) == pytest.approx(satterthwaite_df(table), rel=1e-9)
    assert components.variance(seeds, queries) == pytest.approx(
        components.seed**2 / seeds + components.query**2 / queries + components.residual**2 / (seeds * queries)
    )
