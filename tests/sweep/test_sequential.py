"""Seeds where they decide: the group-sequential boundaries equal gsDesign's, and by simulation the
adaptive rule keeps the family-wise error rate while the naive re-test does not. No Ray, no data files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossweep.sweep.sequential import Comparison, boundaries, decide, nominal_level, simulate_compare


def test_boundaries_equal_gsdesign_for_lan_demets_obrien_fleming():
    # gsDesign::gsDesign(k = 5, test.type = 2, alpha = 0.025, sfu = sfLDOF)$upper$bound
    assert boundaries(0.05, (0.2, 0.4, 0.6, 0.8, 1.0)) == pytest.approx(
        (4.8769, 3.3569, 2.6803, 2.2898, 2.0310), abs=2e-3
    )
    # two looks: (2.9626, 1.9686); one look is the fixed design
    assert boundaries(0.05, (0.5, 1.0)) == pytest.approx((2.9626, 1.9686), abs=2e-3)
    assert boundaries(0.05, (1.0,)) == pytest.approx((1.95996,), abs=1e-4)
    levels = [nominal_level(0.05, n, 3, 8) for n in range(3, 9)]
    assert levels == sorted(levels) and levels[-1] < 0.05 and levels[0] < 1e-3


def test_holm_passes_alpha_on_within_a_look():
    # Three comparisons at the last look: the first passes at alpha/3, hands its alpha on, and the second
    # then passes at alpha/2, though it would not at alpha/3.
    final = nominal_level(0.05 / 3, 8, 3, 8)
    half = nominal_level(0.05 / 2, 8, 3, 8)
    p_second = (final + half) / 2
    comparisons = [Comparison("a", 8, final / 10), Comparison("b", 8, p_second), Comparison("c", 8, 0.5)]
    states = {c.name: c.state for c in decide(comparisons, 3, 8)}
    assert states == {"a": "different", "b": "different", "c": "undecided at max"}


# --- Simulation: compares of 4 losses with no true difference, seeds added round by round ---------------

# Seed sd, per-query loss-effect sd, residual sd: seeds dominate, so each look adds information and
# repeated looks inflate errors most (with query noise dominating, the looks are nearly the same test).
REGIME = (0.02, 0.005, 0.05)
FEWEST, MOST, LOSSES, QUERIES = 3, 12, 4, 60


def error_rates(adaptive: bool, compares: int, seed: int) -> tuple[float, float, float]:
    """Shares of null compares with a false positive vs the selected loss and vs the untrained model,
    and the mean seed runs spent."""
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(compares):
        selected = int(rng.integers(LOSSES))  # chosen on other data, so independent of these scores
        results.append(
            simulate_compare([0.0] * LOSSES, REGIME, QUERIES, FEWEST, MOST, selected, rng, adaptive=adaptive)
        )
    sel = np.mean([bool(r.different["vs selected"]) for r in results])
    base = np.mean([bool(r.different["vs untrained"]) for r in results])
    return sel, base, np.mean([r.seed_runs for r in results])


def test_adaptive_seeds_keep_the_family_wise_error_rate_and_the_naive_re_test_does_not():
    compares = 300
    slack = 3 * math.sqrt(0.05 * 0.95 / compares)  # three Monte Carlo standard errors
    sel, base, spent = error_rates(adaptive=True, compares=compares, seed=21)
    assert sel <= 0.05 + slack and base <= 0.05 + slack, (sel, base)
    assert spent < LOSSES * MOST  # stopping for futility saves seed runs even with nothing to find
    naive_sel, naive_base, _ = error_rates(adaptive=False, compares=compares, seed=21)
    assert max(naive_sel, naive_base) > 0.05 + slack, (naive_sel, naive_base)
