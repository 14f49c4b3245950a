"""Seed runs spent by adaptive seeds (`sweep.seeds: {min: 3, max: 8}`) against a fixed 8 seeds per loss,
by simulation of the verdict's own test, both designs run on the same simulated compares.

The compares are calibrated with variance components measured on real seed runs: a loss's seed sd,
per-query effect sd and seed x query sd, from a finished compare's per-query scores in an MLflow
store (`--tracking-uri`, `--sweep`), else the figures measured on Cranfield (below). Each scenario
gives the losses true lifts over the untrained model; the first loss is the selected one. A design's
power is the share of true differences it declares, its error rate the share of compares with a false
one; equal power is the condition of the comparison. Target: <= 0.6x the seed runs of fixed 8 seeds.

    python bench/adaptive_seeds.py
    python bench/adaptive_seeds.py --tracking-uri sqlite:///mlflow.db --sweep cranfield-compare
"""

from __future__ import annotations

import math

import numpy as np
from common import fmt, parser, summary, table, write

from lossweep.sweep.sequential import simulate_compare

# Measured on experiments/cranfield-decisive.yaml's seed runs (3 losses x 3-6 seeds x 75 test queries,
# all-MiniLM-L6-v2, NDCG@10, README's results): one loss's seed sd, per-query effect sd, seed x query sd.
CRANFIELD = (0.0046, 0.082, 0.039)
FEWEST, MOST, QUERIES = 3, 8, 75
SCENARIOS = {  # true lifts over the untrained model; loss 0 is selected
    "one clearly worse, two tied": [0.02, 0.02, -0.04],
    "all tied, no lift": [0.0, 0.0, 0.0],
    "a small edge and a lift": [0.03, 0.015, 0.0],
}


def measured(tracking_uri: str, sweep: str) -> tuple[float, float, float]:
    """One loss's variance components, pooled over a finished compare's losses: the two-way ANOVA of
    each loss's (seeds x queries) scores minus the untrained model's."""
    from lossweep.sweep.power import estimate
    from lossweep.sweep.report import find_sweep
    from lossweep.sweep.stats import paired_table
    from lossweep.sweep.tracking import Tracker
    from lossweep.sweep.verdict import Judge, build_leaderboard

    tracker = Tracker(tracking_uri)
    board = build_leaderboard(tracker, find_sweep(tracker, sweep).info.run_id)
    judge, metric = Judge(tracker), board.verdict_metric
    baseline = next(r for r in board.runs if r.data.tags.get("lossweep.phase") == "baseline")
    tables = []
    for row in board.rows:
        runs = [r for r in board.runs if r.data.tags.get("lossweep.phase") == "seeds"]
        by_seed = {
            int(r.data.tags["lossweep.seed"]): judge.items(r, metric)
            for r in runs
            if r.data.tags.get("lossweep.loss") == row.loss
        }
        by_seed = {seed: items for seed, items in by_seed.items() if items}
        if len(by_seed) >= 2:
            tables.append(paired_table(by_seed, judge.items(baseline, metric))[0])
    components = estimate(tables)
    return components.seed, components.query, components.residual


def run_design(scenario: list[float], spreads, fewest: int, most: int, compares: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    truth_sel = {x for x in range(1, len(scenario)) if scenario[x] != scenario[0]}
    truth_base = {x for x in range(len(scenario)) if scenario[x] != 0}
    found, false, spent = [], [], []
    for _ in range(compares):
        result = simulate_compare(scenario, spreads, QUERIES, fewest, most, 0, rng)
        hits = len(result.different["vs selected"] & truth_sel) + len(result.different["vs untrained"] & truth_base)
        wrong = bool(result.different["vs selected"] - truth_sel) or bool(result.different["vs untrained"] - truth_base)
        found.append(hits / max(1, len(truth_sel) + len(truth_base)))
        false.append(wrong)
        spent.append(result.seed_runs)
    return {
        "power": float(np.mean(found)) if truth_sel or truth_base else None,
        "error_rate": float(np.mean(false)),
        "seed_runs": summary([float(x) for x in spent]),
        "mean_seed_runs": float(np.mean(spent)),
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--tracking-uri", help="an MLflow store with a finished compare to calibrate on")
    p.add_argument("--sweep", help="that compare's name")
    p.add_argument("--compares", type=int, default=300, help="simulated compares per scenario and design")
    args = p.parse_args()
    spreads = measured(args.tracking_uri, args.sweep) if args.tracking_uri and args.sweep else CRANFIELD
    compares = 8 if args.smoke else args.compares
    rows, results = [], {}
    for name, scenario in SCENARIOS.items():
        adaptive = run_design(scenario, spreads, FEWEST, MOST, compares, seed=1)
        fixed = run_design(scenario, spreads, MOST, MOST, compares, seed=1)
        ratio = adaptive["mean_seed_runs"] / fixed["mean_seed_runs"]
        results[name] = {"lifts": scenario, "adaptive": adaptive, "fixed": fixed, "seed_run_ratio": ratio}
        power = lambda d: "-" if d["power"] is None else f"{d['power']:.2f}"  # noqa: E731
        rows.append(
            [
                name,
                fmt(adaptive["seed_runs"], digits=1),
                fmt(fixed["seed_runs"], digits=1),
                f"{ratio:.2f}x",
                f"{power(adaptive)} / {power(fixed)}",
                f"{adaptive['error_rate']:.3f} / {fixed['error_rate']:.3f}",
            ]
        )
    print(f"spreads of one loss (seed, per-query, seed x query sd): {spreads}; {compares} compares per cell")
    table(rows, ["scenario", "adaptive seed runs", f"fixed {MOST} seeds", "ratio", "power a/f", "error rate a/f"])
    overall = float(np.mean([r["seed_run_ratio"] for r in results.values()]))
    power_gap = max(
        abs(r["adaptive"]["power"] - r["fixed"]["power"])
        for r in results.values()
        if r["adaptive"]["power"] is not None
    )
    met = overall <= 0.6 and power_gap <= 0.05
    verdict = "met" if met else "missed"
    target = f"target <= 0.6x at equal power; largest power gap {power_gap:.3f}"
    print(f"\nmean seed-run ratio {overall:.2f}x ({target}): {verdict}")
    write(
        "adaptive_seeds",
        {
            "spreads": spreads,
            "fewest": FEWEST,
            "most": MOST,
            "queries": QUERIES,
            "compares": compares,
            "scenarios": results,
            "seed_run_ratio": overall,
            "largest_power_gap": power_gap if not math.isnan(power_gap) else None,
            "met": met,
        },
        args.out,
        args.smoke,
    )


if __name__ == "__main__":
    main()
