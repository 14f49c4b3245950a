"""The statistics of a verdict: intervals and tests that count both sources of noise, seeds and queries.

A score of a fine-tuned model varies with the training seed *and* with the queries it is judged on.
For a metric that is a mean over queries (NDCG@10, MRR@10, triplet accuracy...) the interval of a
mean, or of a difference between two losses paired by seed id and query, comes from a two-level
bootstrap over a (seeds x queries) table: draw seeds with replacement, then queries with replacement.
Queries are *crossed* with seeds (every seed run is scored on the same queries), so one query draw
serves every seed of a replicate; drawing queries anew per seed would shrink the query variance by
the number of seeds.

With three seeds a resampling interval cannot see how wide the seed distribution is (three values
give ten distinct bootstrap means, and their spread is (S-1)/S of the true one). So the seed level
is rescaled by sqrt(S / (S - 1)) and the interval widened by t_nu / z, where nu is the Satterthwaite
degrees of freedom of the crossed seeds x queries variance. With many queries and little seed noise
nu is large and the interval is the plain bootstrap one; with seed noise dominating it approaches the
t-interval over seeds. `tests/sweep/test_stats.py` checks the family-wise error rate by simulation.

For a metric that is not a mean over items (Spearman correlation of STS), losses are compared with
a paired t-test over seeds. Comparisons of a family are adjusted with Holm's step-down method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

ALPHA = 0.05
Z_975 = float(stats.norm.ppf(1 - ALPHA / 2))  # 1.95996...
BOOTSTRAP_SAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval and, for a difference, the two-sided p-value of 'no difference'."""

    value: float
    low: float
    high: float
    p: float | None = None

    def shows_difference(self, alpha: float = ALPHA) -> bool:
        return self.p is not None and not math.isnan(self.p) and self.p < alpha

    def __str__(self) -> str:
        return f"{self.value:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the 95% t-interval (NaN where undefined)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(values))
    if n == 1:
        return mean, math.nan, math.nan
    std = float(np.std(values, ddof=1))
    return mean, std, float(stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n))


def satterthwaite_df(table: np.ndarray) -> float:
    """Degrees of freedom of the variance of the grand mean of a crossed (seeds x queries) table.

    Two-way random-effects ANOVA without replication: Var(mean) ~ (MS_seed + MS_query - MS_residual)
    / (S Q), with Satterthwaite's approximation for its degrees of freedom. Infinite when the table
    has no spread to estimate.
    """
    seeds, queries = table.shape
    grand = table.mean()
    by_seed, by_query = table.mean(axis=1), table.mean(axis=0)
    terms = []
    if seeds > 1:
        terms.append((queries * ((by_seed - grand) ** 2).sum() / (seeds - 1), seeds - 1))
    if queries > 1:
        terms.append((seeds * ((by_query - grand) ** 2).sum() / (queries - 1), queries - 1))
    if seeds > 1 and queries > 1:
        residual = table - by_seed[:, None] - by_query[None, :] + grand
        terms.append((-(residual**2).sum() / ((seeds - 1) * (queries - 1)), (seeds - 1) * (queries - 1)))
    variance = sum(ms for ms, _ in terms)
    if variance <= 0:  # the subtracted residual outweighs the rest: fall back on the larger mean square
        variance = max((ms for ms, _ in terms), default=0.0)
    denominator = sum(ms**2 / df for ms, df in terms)
    return math.inf if variance <= 0 or denominator <= 0 else variance**2 / denominator


def two_level_bootstrap(table: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """Replicate means of a (seeds x queries) table: seeds drawn with replacement (their spread
    rescaled by sqrt(S / (S - 1))), then one draw of queries with replacement shared by those seeds."""
    table = np.asarray(table, dtype=float)
    seeds, queries = table.shape
    rng = np.random.default_rng(seed)
    if seeds > 1:
        by_seed = table.mean(axis=1, keepdims=True)
        grand = table.mean()
        table = grand + math.sqrt(seeds / (seeds - 1)) * (by_seed - grand) + (table - by_seed)
    seed_draws = rng.integers(0, seeds, size=(samples, seeds))
    query_draws = rng.integers(0, queries, size=(samples, queries))
    # Each seed's mean over the drawn queries is (how often each query was drawn) @ its row / Q;
    # replicates go in chunks so a table of thousands of items stays small in memory.
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // queries)
    for start in range(0, samples, chunk):
        draws = query_draws[start : start + chunk]
        cells = (draws + queries * np.arange(len(draws))[:, None]).ravel()  # each replicate's own bins
        counts = np.bincount(cells, minlength=len(draws) * queries).reshape(len(draws), queries).astype(float)
        per_seed = counts @ table.T / queries  # (replicates, seeds)
        means[start : start + chunk] = np.take_along_axis(per_seed, seed_draws[start : start + chunk], axis=1).mean(1)
    return means


def t_over_z(df: float) -> float:
    """t_df's 97.5% quantile over the normal's: how much wider few degrees of freedom make the interval.
    `special.stdtrit` is what `stats.t.ppf` calls, without its argument checks (simulations call this
    thousands of times)."""
    return float(special.stdtrit(df, 1 - ALPHA / 2)) / Z_975


def bootstrap_deviations(table: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """The verdict's sampling distribution of a (seeds x queries) table's mean, centred: the two-level
    bootstrap's replicates minus their mean, widened by t_nu / z for few seeds (module docstring).
    A shift of the whole table leaves them unchanged, which is what lets `power.py` plan by simulation."""
    table = np.asarray(table, dtype=float)
    replicates = two_level_bootstrap(table, samples, seed)
    df = satterthwaite_df(table)
    widen = 1.0 if math.isinf(df) else t_over_z(df)
    return widen * (replicates - replicates.mean())


def p_value(estimate: float, deviations: np.ndarray) -> float:
    """Two-sided p-value of 'mean = 0' for an estimate with these centred deviations (the interval inverted)."""
    if not deviations.any():
        return 1.0 if estimate == 0 else 0.0
    below, above = float((estimate + deviations <= 0).mean()), float((estimate + deviations >= 0).mean())
    return min(1.0, 2 * min(below, above))


def bootstrap_interval(table: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Interval:
    """Mean of a (seeds x queries) table with its 95% interval and the p-value of 'mean = 0'.

    The interval is the two-level bootstrap's, widened by t_nu / z for few seeds (module docstring);
    the p-value inverts the same interval.
    """
    table = np.asarray(table, dtype=float)
    estimate = float(table.mean())
    deviations = bootstrap_deviations(table, samples, seed)
    low, high = np.percentile(estimate + deviations, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(estimate, float(low), float(high), p_value(estimate, deviations))


def paired_table(
    a: Mapping[int, Mapping[str, float]], b: Mapping[int, Mapping[str, float]] | Mapping[str, float]
) -> tuple[np.ndarray, list[int]]:
    """The (seeds x queries) table of a - b, paired by seed id and query id.

    `b` may be one per-query mapping (the untrained model, the same for every seed). Seeds present in
    only one of the two are left out; the seed ids used are returned with the table.
    """
    fixed = bool(b) and not isinstance(next(iter(b.values())), Mapping)
    seeds = sorted(a) if fixed else sorted(set(a) & set(b))
    if not seeds:
        return np.zeros((0, 0)), []
    rows_b = {s: (b if fixed else b[s]) for s in seeds}
    queries = sorted(set.intersection(*(set(a[s]) & set(rows_b[s]) for s in seeds)))
    table = np.array([[a[s][q] - rows_b[s][q] for q in queries] for s in seeds], dtype=float)
    return table, seeds


def paired_t(a: Mapping[int, float], b: Mapping[int, float] | float) -> Interval | None:
    """Mean of a - b over the seeds both have (or a - constant), its 95% t-interval and p-value.

    None with fewer than two paired seeds. When every seed gives the same difference the test is
    undefined: p is NaN (the data cannot tell), not 0.
    """
    seeds = sorted(a) if isinstance(b, (int, float)) else sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = np.array([a[s] - (b if isinstance(b, (int, float)) else b[s]) for s in seeds], dtype=float)
    mean = float(diffs.mean())
    if np.allclose(diffs, diffs[0], rtol=0, atol=1e-12):
        return Interval(mean, mean, mean, 1.0 if abs(mean) < 1e-12 else math.nan)
    result = stats.ttest_1samp(diffs, 0.0)
    low, high = result.confidence_interval(1 - ALPHA)
    return Interval(mean, float(low), float(high), float(result.pvalue))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error rate); None stays None, NaN counts as 1."""
    tested = [(i, 1.0 if math.isnan(p) else p) for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(tested, key=lambda item: item[1])):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted
