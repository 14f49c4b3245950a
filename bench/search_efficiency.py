"""Search efficiency: how many trial-steps TPE+ASHA, random search and the full grid spend to reach a
configuration within 1 NDCG@10 point of the grid's best, on a fixed small problem.

The problem: a tiny BERT trained on Cranfield's (query, abstract) pairs, NDCG@10 on Cranfield's test
queries, over a grid of 3 in-batch losses x their scale or margin x 3 learning rates. Every grid
configuration is trained once, with an evaluation every `RUNG` steps, by the same building blocks the
Ray Train worker uses (registry loss, sampler, `train_step`, `RetrievalEvaluator`); that gives a table
of learning curves (a tabular benchmark, as in HPOBench). The searches are then replayed through Ray
Tune with lossweep's own searcher and scheduler (`OptunaSearch` with the conditional define-by-run
space and seeded TPE, `ASHAScheduler`), one trial at a time so the spend is well defined; a trial
reads its curve from the table instead of training. Each search runs with several seeds.

Spend = the steps of every trial started up to and including the first one to report a score within
1 point of the grid's best (its pruned trials counted at the step ASHA stopped them). The grid's
spend is all its trials to the end: only then does it know which is best.
Target: TPE+ASHA <= 40% of the grid's spend.

    python bench/search_efficiency.py
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import DATA_DIR, parser, summary, table, write
from ray.tune.stopper import Stopper
from transformers import get_scheduler

from lossweep.losses import LossConfig, build_loss, get_entry
from lossweep.sweep.data import beir_pairs, load_beir
from lossweep.sweep.evaluate import RetrievalEvaluator
from lossweep.sweep.models import load_model, tiny_model
from lossweep.sweep.sampler import batches
from lossweep.sweep.space import build_space, decode_config, grid_configs
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.step import collate, train_step, trainable_parameters

METRIC = "eval/cranfield/ndcg_at_10"
TOLERANCE = 0.01  # one NDCG@10 point
# Parameters held at their defaults, so the grid stays small: the searched ones are in main().
FIXED = {
    "MultipleNegativesRankingLoss": {
        "similarity_fct": "cos_sim",
        "directions": ["query_to_doc"],
        "partition_mode": "joint",
        "hardness_mode": None,
        "hardness_strength": 0.0,
    },
    "MultipleNegativesSymmetricRankingLoss": {"similarity_fct": "cos_sim"},
    "MegaBatchMarginLoss": {"negative_margin": 0.3},
}


def sweep_spec(model: str, steps: int, rung: int, losses: dict[str, dict], rates: list[float], **sweep: Any) -> dict:
    return {
        "name": "search-efficiency",
        "data_dir": str(DATA_DIR),
        "model": model,
        "max_seq_length": 64,
        "train": {"path": "cranfield", "split": "train"},
        "eval": [{"type": "retrieval", "path": "cranfield", "split": "test", "name": "cranfield"}],
        "loss": {"name": next(iter(losses))},
        "training": {"batch_size": 32, "steps": steps, "warmup_ratio": 0.0},
        "evaluation": {"every_steps": rung, "at_start": False},
        "sweep": {
            "mode": "search",
            "losses": [{"name": loss, "params": FIXED.get(loss, {})} for loss in losses],
            "params": {loss: {k: {"choices": v} for k, v in params.items()} for loss, params in losses.items()},
            "shared": {"learning_rate": {"choices": rates}},
            "scheduler": "asha",
            "grace_steps": rung,
            "reduction_factor": 2,
            **sweep,
        },
    }


def key(config: dict[str, Any]) -> str:
    """One grid point, however Tune or the grid wrote it."""
    config = decode_config(config)
    loss = config["loss"]
    return json.dumps([loss, config.get(loss) or {}, config["shared"]["learning_rate"]], sort_keys=True)


def learning_curve(config: dict[str, Any], model_dir: str, steps: int, rung: int, evaluator, pairs) -> list[float]:
    """Train one grid point from the same seed; NDCG@10 at every rung."""
    config = decode_config(config)
    name, lr = config["loss"], config["shared"]["learning_rate"]
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    model = load_model(model_dir)
    model.max_seq_length = 64
    loss = build_loss(LossConfig(name, config.get(name) or {}), model, distributed=False)
    parameters = trainable_parameters(loss)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    curve = []
    for step, rows in batches(pairs, 32, get_entry(name).sampler, 0, 0):
        if step >= steps:
            break
        features, labels = collate(model, pairs[rows])
        train_step(loss, optimizer, features, labels, parameters, scheduler=scheduler, max_grad_norm=1.0)
        if (step + 1) % rung == 0:
            model.eval()
            with torch.no_grad():
                curve.append(evaluator(model).metrics[METRIC])
            model.train()
    return curve


class Reached(Stopper):
    """A Tune stopper: the search ends once a trial reports a score at or above `target`."""

    def __init__(self, target: float) -> None:
        self.target, self.done = target, False

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.done = self.done or result.get(METRIC, float("-inf")) >= self.target
        return False

    def stop_all(self) -> bool:
        return self.done


def replay(
    spec_dict: dict, curves: dict[str, list[float]], rung: int, trials: int, seed: int, sampler: str, target: float
) -> list:
    """One search through Ray Tune with lossweep's searcher and scheduler; trials read their curves."""
    from ray import tune

    from lossweep.sweep.space import build_space as space_of
    from lossweep.sweep.tuning import SEARCH_STUDY, search_args

    scheduler = "asha" if sampler == "tpe" else "none"
    spec = parse_spec(
        spec_dict
        | {"sweep": spec_dict["sweep"] | {"seed": seed, "sampler": sampler, "scheduler": scheduler, "trials": trials}}
    )
    space, _ = space_of(spec, None)

    def trainable(config: dict) -> None:
        for i, value in enumerate(curves[key(config["trial"])]):
            tune.report({"step": (i + 1) * rung, METRIC: value})

    args, _ = search_args(spec, {SEARCH_STUDY: space}, METRIC)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            **(args["tune_config"] | {"num_samples": trials, "max_concurrent_trials": 1}), reuse_actors=True
        ),
        run_config=tune.RunConfig(
            storage_path=tempfile.mkdtemp(prefix="bench-tune-"),
            stop=Reached(target),
            verbose=0,
        ),
    )
    results = tuner.fit()
    # One trial at a time: Tune numbers them in the order it started them.
    ordered = sorted((r for r in results if r.metrics), key=lambda r: r.metrics["trial_id"].rsplit("_", 1)[-1])
    return [(r.metrics["step"], max(r.metrics_dataframe[METRIC])) for r in ordered]


def spend_to_reach(trials: list[tuple[int, float]], target: float) -> int | None:
    spent = 0
    for steps, best in trials:
        spent += steps
        if best >= target:
            return spent
    return None


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--seeds", type=int, default=5, help="seeds per search method (default 5)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-search-"))
    model = tiny_model(root / "tiny", hidden=64, layers=2)
    if args.smoke:
        steps, rung, seeds, trials = 4, 2, 1, 4
        losses = {"MultipleNegativesRankingLoss": {"scale": [10.0, 20.0]}}
        rates = [1e-3]
    else:
        steps, rung, seeds, trials = 80, 20, args.seeds, 24
        losses = {
            "MultipleNegativesRankingLoss": {"scale": [5.0, 20.0, 50.0]},
            "MultipleNegativesSymmetricRankingLoss": {"scale": [5.0, 20.0, 50.0]},
            "MegaBatchMarginLoss": {"positive_margin": [0.5, 0.8]},
        }
        rates = [3e-4, 1e-3, 3e-3]
    spec_dict = sweep_spec(model, steps, rung, losses, rates)
    space, _ = build_space(parse_spec(spec_dict), None)
    grid = grid_configs(space)

    # 1. The table: every grid point's learning curve.
    pairs = beir_pairs(DATA_DIR / "cranfield", "train")
    test = load_beir(DATA_DIR / "cranfield", "test")
    if args.smoke:
        test = type(test)(dict(list(test.corpus.items())[:200]), test.queries, test.qrels)
    evaluator = RetrievalEvaluator("cranfield", test, dims=None, batch_size=128)
    started = time.perf_counter()
    curves = {key(c): learning_curve(c, model, steps, rung, evaluator, pairs) for c in grid}
    table_seconds = time.perf_counter() - started
    finals = {k: c[-1] for k, c in curves.items()}
    best = max(finals.values())
    target = best - TOLERANCE
    grid_spend = steps * len(grid)

    # 2. The searches, replayed with lossweep's searcher and scheduler.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no per-search banner
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    spends: dict[str, list[float]] = {"tpe+asha": [], "random": []}
    reached: dict[str, int] = {"tpe+asha": 0, "random": 0}
    for method, sampler in (("tpe+asha", "tpe"), ("random", "random")):
        for seed in range(seeds):
            trials_run = replay(spec_dict, curves, rung, trials, seed, sampler, target)
            spent = spend_to_reach(trials_run, target)
            reached[method] += spent is not None
            spends[method].append(spent if spent is not None else sum(s for s, _ in trials_run))
    ray.shutdown()

    results = {
        "grid_points": len(grid),
        "steps_per_trial": steps,
        "rung_steps": rung,
        "table_seconds": table_seconds,
        "grid_best_ndcg@10": best,
        "grid_worst_ndcg@10": min(finals.values()),
        "grid_spend_trial_steps": grid_spend,
        "spend_trial_steps": {m: summary(v) for m, v in spends.items()},
        "reached": {m: f"{reached[m]}/{seeds}" for m in spends},
        "fraction_of_grid": {m: statistics.median(v) / grid_spend for m, v in spends.items()},
        "curves": curves,
        "target": "tpe+asha median spend <= 0.40 x grid spend",
    }
    results["met"] = results["fraction_of_grid"]["tpe+asha"] <= 0.40 and reached["tpe+asha"] == seeds
    rows = [["grid (every point, to the end)", grid_spend, "1.00", "-"]]
    for method, values in spends.items():
        s = summary(values)
        rows.append(
            [
                f"{method} ({seeds} seeds)",
                f"{s['median']:.0f} [{s['min']:.0f}..{s['max']:.0f}]",
                f"{s['median'] / grid_spend:.2f}",
                results["reached"][method],
            ]
        )
    print(f"grid: {len(grid)} points, best NDCG@10 {best:.4f}, worst {min(finals.values()):.4f}; target {target:.4f}")
    table(rows, ["search", "trial-steps to within 1 point of best", "fraction of grid", "reached"])
    write("search_efficiency", results, args.out, args.smoke)


if __name__ == "__main__":
    main()
