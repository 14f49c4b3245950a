"""Seeds where they decide: a group-sequential rule that adds seed runs only to undecided comparisons.

With `sweep.seeds: {min, max}` every loss first gets `min` seed runs; then, round by round, one more
for each loss whose comparison with the selected loss or with the untrained model is still
undecided, up to `max`. Looking at the data after every round and stopping as soon as a test passes
would reject a true null far more often than 5% (the simulation in `tests/sweep/test_sequential.py`
shows the naive re-test doing so), so each comparison is a group-sequential test:

- its looks are at n = min, min + 1, ..., max paired seeds, information time t = n / max;
- alpha is spent over the looks with Lan and DeMets' O'Brien-Fleming-type function, alpha / 2 a side
  (as gsDesign's sfLDOF): a(t) = 2 (2 - 2 Phi(z_{1-alpha/4} / sqrt(t))): little at the first looks,
  most of it at the last;
- look k's boundary c_k leaves exactly a(t_k) - a(t_{k-1}) of new crossing probability, for the joint
  law of the looks' statistics (Brownian motion in information time: corr(Z_j, Z_k) = sqrt(t_j / t_k)),
  found by integrating the statistic's density over the looks on a grid (`boundaries`); a comparison
  is *different* at look k when its p-value is below the nominal level 2 (1 - Phi(c_k));
- a comparison whose chance of becoming different by `max` (conditional power under its current
  estimate) is below `FUTILITY` stops as *not different*: stopping early for futility never adds
  false positives (the boundaries do not count on continuing);
- within a family (vs selected, vs untrained) the comparisons share alpha as Holm's procedure does,
  in its group-sequential form (Maurer and Bretz, 2013): each starts with alpha / m; when one is
  declared different, its alpha passes to the others, which are tested again at the same look.

Information grows more slowly than the seed count where query noise weighs (the variance keeps a
query term that more seeds do not shrink); then the looks' statistics are more correlated than the
rule assumes, which only makes it more conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache, partial

import numpy as np
from scipy import stats

from .stats import ALPHA

FUTILITY = 0.20  # stop adding seeds when the chance to detect by `max` falls below this


def spent(alpha: float, t: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type alpha spent by information time t: two-sided, alpha / 2 a side,
    each side 2 - 2 Phi(z_{1 - alpha/4} / sqrt(t)) (the convention of gsDesign's sfLDOF)."""
    if t <= 0:
        return 0.0
    side = 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 4) / math.sqrt(t))
    return float(min(alpha, 2 * side))


@lru_cache(maxsize=512)
def boundaries(alpha: float, times: tuple[float, ...], points: int = 801) -> tuple[float, ...]:
    """The two-sided z boundaries c_1..c_K of the looks at information times `times` (increasing, the
    last 1), each spending its share of `alpha`. The score W(t) = Z(t) sqrt(t) has independent normal
    increments; its density on the paths that crossed no earlier boundary is carried from look to look
    on a Simpson grid, and each look's crossing probability is integrated exactly from it."""
    found: list[float] = []
    nodes = weights = None  # the previous look's continuation region: grid and density x Simpson weight
    previous = 0.0
    for k, t in enumerate(times):
        target = spent(alpha, t) - spent(alpha, previous)
        step_sd = math.sqrt(t - (times[k - 1] if k else 0.0))

        crossing = partial(_crossing, t=t, step_sd=step_sd, nodes=nodes, weights=weights)
        if target <= 0:
            c = math.inf
        elif crossing(0.0) <= target:
            c = 0.0
        else:
            low, high = 0.0, 40.0
            for _ in range(80):
                middle = (low + high) / 2
                low, high = (middle, high) if crossing(middle) > target else (low, middle)
            c = high
        found.append(c)
        previous = t
        edge = min(c, 12.0) * math.sqrt(t)
        grid = np.linspace(-edge, edge, points)
        simpson = np.ones(points)
        simpson[1:-1:2], simpson[2:-1:2] = 4, 2
        simpson *= (grid[1] - grid[0]) / 3
        if nodes is None:
            density = stats.norm.pdf(grid, scale=step_sd)
        else:
            density = stats.norm.pdf(grid[:, None] - nodes[None, :], scale=step_sd) @ weights
        nodes, weights = grid, density * simpson
    return tuple(found)


def _crossing(c: float, t: float, step_sd: float, nodes, weights) -> float:
    """The probability of first crossing the boundary c at information time t, from the previous look's
    continuation density (None at the first look: the plain normal tails)."""
    edge = c * math.sqrt(t)
    if nodes is None:
        return float(2 * stats.norm.sf(edge / step_sd))
    return float(weights @ (stats.norm.cdf((-edge - nodes) / step_sd) + stats.norm.sf((edge - nodes) / step_sd)))


def look_times(fewest: int, most: int) -> tuple[float, ...]:
    """Information times of the looks at fewest, fewest + 1, ..., most seeds."""
    return tuple(n / most for n in range(fewest, most + 1))


def nominal_level(alpha: float, seeds: int, fewest: int, most: int) -> float:
    """The p-value below which a comparison of `seeds` paired seeds is declared different."""
    if seeds < fewest:
        return 0.0
    c = boundaries(round(alpha, 12), look_times(fewest, most))[min(seeds, most) - fewest]
    return 0.0 if math.isinf(c) else float(2 * stats.norm.sf(c))


def conditional_power(p: float, seeds: int, fewest: int, most: int, alpha: float) -> float:
    """The chance of crossing the last look's boundary if the current estimate is the truth."""
    if seeds >= most:
        return 0.0
    t = seeds / most
    z = stats.norm.isf(max(p, 1e-300) / 2)  # |Z| now
    c_last = boundaries(round(alpha, 12), look_times(fewest, most))[-1]
    drift = z / math.sqrt(t)  # the current trend, per unit information
    return float(stats.norm.sf((c_last - z * math.sqrt(t) - drift * (1 - t)) / math.sqrt(1 - t)))


@dataclass
class Comparison:
    """One comparison of a family at its latest look: its paired seeds and its (unadjusted) p-value."""

    name: str
    seeds: int
    p: float | None
    state: str = "undecided"  # undecided | different | not different | undecided at max
    level: float = 0.0  # the nominal level it was last tested at
    alpha: float = 0.0  # its share of the family's alpha


@dataclass
class FamilyLook:
    comparisons: list[Comparison] = field(default_factory=list)


def decide(
    comparisons: list[Comparison], fewest: int, most: int, alpha: float = ALPHA, decided: dict[str, str] | None = None
) -> list[Comparison]:
    """Group-sequential Holm over one family at the current look: states for every comparison.

    `decided` holds comparisons settled at earlier looks (name -> state); a comparison declared
    different passes its alpha on for good, one stopped as not different keeps it (non-binding).
    """
    decided = dict(decided or {})
    rejected = {name for name, state in decided.items() if state == "different"}
    open_ = [c for c in comparisons if c.name not in decided]
    for c in comparisons:
        if c.name in decided:
            c.state = decided[c.name]
    while True:
        share = alpha / max(1, len(comparisons) - len(rejected))
        newly = None
        for c in sorted(open_, key=lambda c: c.p if c.p is not None else 2.0):
            c.alpha = share
            c.level = nominal_level(share, c.seeds, fewest, most)
            if c.p is not None and c.p < c.level:
                newly = c
                break
        if newly is None:
            break
        newly.state = "different"
        rejected.add(newly.name)
        open_.remove(newly)
    for c in open_:
        if c.seeds >= most:
            c.state = "undecided at max"
        elif c.p is not None and conditional_power(c.p, c.seeds, fewest, most, c.alpha) < FUTILITY:
            c.state = "not different"
        else:
            c.state = "undecided"
    return comparisons


# --- Simulation: the rule on synthetic compares with a known truth -------------------------------------------


@dataclass
class Simulated:
    """One simulated compare: which comparisons the rule declared different, and the seed runs it used."""

    different: dict[str, set[int]]  # family -> losses declared different
    seed_runs: int


def simulate_compare(
    effects: list[float],
    spreads: tuple[float, float, float],
    queries: int,
    fewest: int,
    most: int,
    selected: int,
    rng: np.random.Generator,
    adaptive: bool = True,
    samples: int = 1000,
) -> Simulated:
    """A compare of len(effects) losses with these true lifts over the untrained model, each loss's
    scores = query difficulty + its lift + its per-query effect + its seed effect + noise (`spreads`:
    seed sd, per-query sd, seed x query sd of one loss), judged by the verdict's own bootstrap with
    seeds added round by round (`adaptive`: the group-sequential rule; else the naive re-test, an
    ordinary Holm test at every look). A fixed design of n seeds is fewest = most = n."""
    from .stats import bootstrap_interval, holm

    seed_sd, query_sd, noise_sd = spreads
    losses = len(effects)
    difficulty = rng.normal(0.5, 0.25, queries)
    tables = [
        difficulty
        + lift
        + rng.normal(0, query_sd, queries)
        + rng.normal(0, seed_sd, (most, 1))
        + rng.normal(0, noise_sd, (most, queries))
        for lift in effects
    ]
    base = difficulty + rng.normal(0, query_sd, queries)
    seeds = dict.fromkeys(range(losses), fewest)
    decided: dict[str, dict[str, str]] = {"vs selected": {}, "vs untrained": {}}

    def p(loss: int, reference: int | None, look: int) -> float:
        n = seeds[loss] if reference is None else min(seeds[loss], seeds[reference])
        table = tables[loss][:n] - (base if reference is None else tables[reference][:n])
        return bootstrap_interval(table, samples=samples, seed=look).p

    look = 0
    while True:
        # A comparison decided at an earlier look is never tested again: its p is not computed
        families = {
            "vs selected": [
                Comparison(
                    str(x),
                    min(seeds[x], seeds[selected]),
                    None if str(x) in decided["vs selected"] else p(x, selected, look),
                )
                for x in range(losses)
                if x != selected
            ],
            "vs untrained": [
                Comparison(str(x), seeds[x], None if str(x) in decided["vs untrained"] else p(x, None, look))
                for x in range(losses)
            ],
        }
        grow = set()
        for name, comparisons in families.items():
            if adaptive:
                decide(comparisons, fewest, most, decided=decided[name])
            else:
                adjusted = holm([c.p if c.name not in decided[name] else None for c in comparisons])
                for c, q in zip(comparisons, adjusted, strict=True):
                    c.state = decided[name].get(c.name) or ("different" if q is not None and q < ALPHA else "undecided")
            for c in comparisons:
                if c.state != "undecided":
                    decided[name].setdefault(c.name, c.state)
                else:
                    grow.add(int(c.name))
                    if name == "vs selected":
                        grow.add(selected)
        grow = {x for x in grow if seeds[x] < most}
        if not grow:
            different = {f: {int(n) for n, s in d.items() if s == "different"} for f, d in decided.items()}
            return Simulated(different, sum(seeds.values()))
        for x in grow:
            seeds[x] += 1
        look += 1
