"""Planning a verdict before paying for it: the smallest difference a design can detect, and the seeds
(or queries) it would take to detect a given one.

A comparison of two losses (or of a loss and the untrained model) is a (seeds x queries) table of
differences, paired by seed id and query: d[s, q] = delta + u[s] + v[q] + w[s, q], with a seed effect
u (sd `seed`), a per-query effect v fixed across seeds (sd `query`) and seed-by-query noise w (sd
`residual`): the crossed two-way model the verdict's bootstrap resamples (`stats.py`). The mean of
S seeds and Q queries has variance seed^2 / S + query^2 / Q + residual^2 / (S Q).

The verdict's test is not a textbook one (a two-level bootstrap, widened by a t quantile whose
degrees of freedom it estimates from the table), so its power is found the way it would be met: by
drawing tables from the components and running the verdict's own test on them (`SimulatedPower`).
The test's sampling distribution does not move when the whole table shifts, so one set of draws
gives the power at every difference; a closed-form approximation (`approximate_power`) gives the
starting points of the searches.

Holm's step-down rejects the smallest p-value of a family of m comparisons at alpha / m; a single
true difference among m comparisons is found at least as often as at that level, so plans use alpha
/ m per comparison (a bound: Holm does better once something else is rejected).
`tests/sweep/test_power.py` checks the planned power against independently simulated verdicts.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .stats import ALPHA, bootstrap_deviations, t_over_z

POWER = 0.8


@dataclass(frozen=True)
class Components:
    """Standard deviations of a comparison's seed effect, per-query effect and seed x query noise."""

    seed: float
    query: float
    residual: float

    def variance(self, seeds: int, queries: int) -> float:
        """Variance of the mean difference over `seeds` x `queries`."""
        return self.seed**2 / seeds + self.query**2 / queries + self.residual**2 / (seeds * queries)

    def df(self, seeds: int, queries: int) -> float:
        """Satterthwaite's degrees of freedom of that variance, from the expected mean squares."""
        seed_ms = queries * self.seed**2 + self.residual**2
        query_ms = seeds * self.query**2 + self.residual**2
        residual_ms = self.residual**2
        terms = []
        if seeds > 1:
            terms.append((seed_ms, seeds - 1))
        if queries > 1:
            terms.append((query_ms, queries - 1))
        if seeds > 1 and queries > 1:
            terms.append((-residual_ms, (seeds - 1) * (queries - 1)))
        variance = sum(ms for ms, _ in terms)
        denominator = sum(ms**2 / df for ms, df in terms)
        return math.inf if variance <= 0 or denominator <= 0 else variance**2 / denominator


def approximate_power(effect: float, components: Components, seeds: int, queries: int, alpha: float = ALPHA) -> float:
    """A closed-form approximation of the verdict's power: a t statistic with Satterthwaite's degrees
    of freedom, whose bootstrap standard error also counts the seed x query noise once more (a crossed
    bootstrap resamples it at both levels). Close where seeds or queries are many; a starting point."""
    true = components.variance(seeds, queries)
    if true == 0:
        return 1.0 if effect else alpha
    booted = true + components.residual**2 / (seeds * queries)
    df = components.df(seeds, queries)
    widen = 1.0 if math.isinf(df) else t_over_z(df)
    threshold = stats.norm.ppf(1 - alpha / 2) * widen * math.sqrt(booted / true)
    noncentrality = abs(effect) / math.sqrt(true)
    normal = float(stats.norm.sf(threshold - noncentrality) + stats.norm.cdf(-threshold - noncentrality))
    if math.isinf(df) or df > 1e4:
        return normal
    value = float(stats.nct.sf(threshold, df, noncentrality) + stats.nct.cdf(-threshold, df, noncentrality))
    return value if math.isfinite(value) else normal  # scipy's noncentral t fails far in its tails


SIMULATIONS = 400  # tables drawn per design: the planned power's Monte Carlo error is 2 points at 80%
SAMPLES = 2000  # bootstrap replicates per table (the verdict uses 10,000): 17 beyond alpha / 3 in each tail


class SimulatedPower:
    """The verdict's power for one design (seeds x queries, level alpha), by simulation: draw noise
    tables from the components, run the verdict's bootstrap on each once, then read the power at any
    difference off those draws (the test's deviations do not depend on the difference)."""

    def __init__(
        self,
        components: Components,
        seeds: int,
        queries: int,
        alpha: float = ALPHA,
        simulations: int = SIMULATIONS,
        samples: int | None = None,
        seed: int = 0,
    ) -> None:
        self.components, self.seeds, self.queries, self.alpha = components, seeds, queries, alpha
        if samples is None:  # thousands of queries: fewer replicates, so a plan stays a matter of seconds
            samples = min(SAMPLES, max(600, 8_000_000 // (queries * seeds)))
        rng = np.random.default_rng(seed)
        self.means = np.empty(simulations)
        self.deviations = np.empty((simulations, samples))
        for i in range(simulations):
            noise = (
                rng.normal(0, components.seed, (seeds, 1))
                + rng.normal(0, components.query, (1, queries))
                + rng.normal(0, components.residual, (seeds, queries))
            )
            self.means[i] = noise.mean()
            self.deviations[i] = np.sort(bootstrap_deviations(noise, samples, seed=i))

    def power(self, effect: float) -> float:
        """The share of simulated verdicts that declare a true difference `effect` (two-sided)."""
        n = self.deviations.shape[1]
        rejected = 0
        for mean, deviations in zip(self.means, self.deviations, strict=True):
            estimate = mean + effect
            if not deviations.any():
                rejected += estimate != 0
                continue
            below = np.searchsorted(deviations, -estimate, side="right") / n  # share of estimate + dev <= 0
            above = 1 - np.searchsorted(deviations, -estimate, side="left") / n  # share of estimate + dev >= 0
            rejected += min(1.0, 2 * min(below, above)) < self.alpha
        return rejected / len(self.means)

    def half_width(self) -> float:
        """The median half-width of the verdict's 95% interval for this design."""
        n = self.deviations.shape[1]
        low, high = self.deviations[:, int(0.025 * n)], self.deviations[:, min(n - 1, int(0.975 * n))]
        return float(np.median((high - low) / 2))

    def detectable(self, target: float = POWER) -> float:
        """The smallest difference the verdict declares with probability `target` (bisection)."""
        high = max(1e-9, math.sqrt(self.components.variance(self.seeds, self.queries)))
        while self.power(high) < target:
            high *= 2
            if high > 1e3:
                return math.inf
        low = 0.0
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if self.power(middle) < target else (low, middle)
        return high


@functools.lru_cache(maxsize=16)
def simulated_power(components: Components, seeds: int, queries: int, alpha: float = ALPHA) -> SimulatedPower:
    """One design's simulation, drawn once per process: a plan and a search for the seeds needed ask
    about the same designs again (each draw is deterministic, so the cache changes no answer)."""
    return SimulatedPower(components, seeds, queries, alpha)


def detectable(components: Components, seeds: int, queries: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The minimum detectable difference of a design: detected with probability `target`."""
    return simulated_power(components, seeds, queries, alpha).detectable(target)


def seeds_needed(
    effect: float, components: Components, queries: int, alpha: float = ALPHA, target: float = POWER, most: int = 100
) -> int | None:
    """The fewest seeds (at least 3, as a compare takes) that detect `effect` with probability `target`;
    None beyond `most` (query noise alone hides it: more seeds cannot help)."""

    def enough(seeds: int) -> bool:
        return simulated_power(components, seeds, queries, alpha).power(effect) >= target

    low, high = 3, 3
    while not enough(high):  # doubling first: a design of `most` seeds is the costliest to simulate
        if high >= most:
            return None
        low, high = high + 1, min(most, 2 * high)
    while low < high:  # the power grows with the seeds: bisect
        middle = (low + high) // 2
        low, high = (middle + 1, high) if not enough(middle) else (low, middle)
    return low


def queries_needed(
    effect: float, components: Components, seeds: int, alpha: float = ALPHA, target: float = POWER, most: int = 10**5
) -> int | None:
    """The fewest queries that detect `effect` with `seeds` seeds (the closed form, checked by simulation
    at its answer and adjusted); None beyond `most` (seed noise alone hides it)."""
    if approximate_power(effect, components, seeds, most, alpha) < target:
        return None
    low, high = 2, most
    while low < high:
        middle = (low + high) // 2
        below = approximate_power(effect, components, seeds, middle, alpha) < target
        low, high = (middle + 1, high) if below else (low, middle)
    queries = low
    while queries < most and simulated_power(components, seeds, queries, alpha).power(effect) < target:
        queries = min(most, int(queries * 1.1) + 1)
    return queries


def estimate(tables: list[np.ndarray]) -> Components | None:
    """The components of comparisons measured before: (seeds x queries) difference tables of at least
    2 seeds, pooled by their degrees of freedom (method of moments: two-way ANOVA without replication)."""
    sums = np.zeros(3)
    dfs = np.zeros(3)
    for table in tables:
        table = np.asarray(table, dtype=float)
        seeds, queries = table.shape
        if seeds < 2 or queries < 2:
            continue
        grand, by_seed, by_query = table.mean(), table.mean(axis=1), table.mean(axis=0)
        residual = table - by_seed[:, None] - by_query[None, :] + grand
        ms_seed = queries * ((by_seed - grand) ** 2).sum() / (seeds - 1)
        ms_query = seeds * ((by_query - grand) ** 2).sum() / (queries - 1)
        ms_residual = (residual**2).sum() / ((seeds - 1) * (queries - 1))
        components = (
            max(0.0, (ms_seed - ms_residual) / queries),
            max(0.0, (ms_query - ms_residual) / seeds),
            ms_residual,
        )
        weights = (seeds - 1, queries - 1, (seeds - 1) * (queries - 1))
        sums += np.array(components) * weights
        dfs += weights
    if not dfs.all():
        return None
    seed, query, residual = np.sqrt(sums / dfs)
    return Components(float(seed), float(query), float(residual))
