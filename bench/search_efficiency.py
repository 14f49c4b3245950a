"""Search efficiency: how many trial-steps TPE+ASHA, random search and the full grid spend to reach a
configuration within 1 NDCG@10 point of the grid's best, on two fixed problems.

The problems: a tiny BERT trained on Cranfield's (query, abstract) pairs, NDCG@10 on Cranfield's test
queries. `small`: 3 in-batch losses x their scale or margin x 3 learning rates (24 points). `hard`: 4
losses, each with its own parameters (MNRL and MNSRL x scale, MegaBatchMarginLoss x both margins,
GISTEmbedLoss x temperature, guided by the untrained model), x 4 learning rates (52 points). Every grid
configuration is trained once, with an evaluation every `RUNG` steps, by the same building blocks the
Ray Train worker uses (registry loss, sampler, `train_step`, `RetrievalEvaluator`); that gives a table
of learning curves (a tabular benchmark, as in HPOBench). The searches are then replayed through Ray
Tune with lossweep's own searcher and scheduler (`OptunaSearch` with the conditional define-by-run
space and seeded TPE, `ASHAScheduler`), one trial at a time so the spend is well defined; a trial
reads its curve from the table instead of training. Each search runs with several seeds.

Spend = the steps of every trial started up to and including the first one to report a score within
1 point of the grid's best (its pruned trials counted at the step ASHA stopped them). The grid's
spend is all its trials to the end: only then does it know which is best. The searches:
`tpe+asha` (lossweep's: its first trial the spec's loss at its registry defaults, a trial ASHA stopped
told to Optuna as pruned), `no default start` (the first trial drawn too), `warm start` (told, before
its first trial and outside its spend, the 16 completed trials of an earlier random search of another
seed on the same problem, as `sweep.warm_start` tells earlier sweeps' trials), `tpe+asha, pruned as
final` (the stopped trial's truncated score told as if it were final: what Ray's OptunaSearch does),
`tpe+asha, first-rung scores` (every trial told with its score at the first rung, a step all reach),
`random` without pruning, and four diagnostics: `4 startup trials` (Optuna's default is 10 random
ones first), `independent` (one TPE per parameter instead of lossweep's multivariate, `group=True`
one), `numeric ranges` (learning rate, scale, temperature and margins searched as log ranges over the
same span, so TPE knows their order, each trial read at its nearest grid point) and `tpe, no
pruning` (TPE alone, every trial to the end).
Targets: small, TPE+ASHA <= 40% of the grid's spend; hard, TPE+ASHA <= 50% of random's.

    python bench/search_efficiency.py
"""

from __future__ import annotations

import json
import math
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
from lossweep.sweep.step import Optimisation, collate, train_step, trainable_parameters

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
    "GISTEmbedLoss": {
        "margin_strategy": "absolute",
        "margin": 0.0,
        "contrast_anchors": True,
        "contrast_positives": True,
    },
}


def problems(smoke: bool) -> dict[str, dict[str, Any]]:
    """Each problem: its losses with the values searched, its learning rates, steps, rung, trials per search."""
    if smoke:
        tiny = {"rates": [1e-3], "steps": 4, "rung": 2, "trials": 4}
        return {
            "small": tiny | {"losses": {"MultipleNegativesRankingLoss": {"scale": [10.0, 20.0]}}},
            "hard": tiny | {"losses": {"GISTEmbedLoss": {"temperature": [0.01, 0.05]}}},
        }
    scales = [5.0, 20.0, 50.0]
    return {
        "small": {
            "losses": {
                "MultipleNegativesRankingLoss": {"scale": scales},
                "MultipleNegativesSymmetricRankingLoss": {"scale": scales},
                "MegaBatchMarginLoss": {"positive_margin": [0.5, 0.8]},
            },
            "rates": [3e-4, 1e-3, 3e-3],
            "steps": 80,
            "rung": 20,
            "trials": 24,
        },
        "hard": {
            "losses": {
                "MultipleNegativesRankingLoss": {"scale": scales},
                "MultipleNegativesSymmetricRankingLoss": {"scale": scales},
                "MegaBatchMarginLoss": {"positive_margin": [0.5, 0.8], "negative_margin": [0.2, 0.4]},
                "GISTEmbedLoss": {"temperature": [0.01, 0.05, 0.1]},
            },
            "rates": [1e-4, 3e-4, 1e-3, 3e-3],
            "steps": 80,
            "rung": 20,
            "trials": 32,
        },
    }


def sweep_spec(model: str, steps: int, rung: int, losses: dict[str, dict], rates: list[float], **sweep: Any) -> dict:
    fixed = FIXED | {"GISTEmbedLoss": FIXED["GISTEmbedLoss"] | {"guide": model}}
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
            "losses": [  # a searched parameter is not also fixed (the spec refuses that)
                {"name": loss, "params": {k: v for k, v in fixed.get(loss, {}).items() if k not in searched}}
                for loss, searched in losses.items()
            ],
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
    params = dict(config.get(name) or {})
    if any(p.name == "guide" for p in get_entry(name).params):
        params["guide"] = model_dir  # GIST is guided by the untrained model (not a searched parameter)
    loss = build_loss(LossConfig(name, params), model, distributed=False)
    parameters = trainable_parameters(loss)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=steps)
    curve = []
    for step, rows in batches(pairs, 32, get_entry(name).sampler, 0, 0):
        if step >= steps:
            break
        features, labels = collate(model, pairs[rows])
        train_step(Optimisation(loss, optimizer, parameters, scheduler, max_grad_norm=1.0), features, labels)
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


def variant(told: str, tpe: dict[str, Any] | None):
    """lossweep's searcher with one change: how a trial's score reaches Optuna (`told`: "pruned", as
    lossweep does; "final", a stopped trial's last score as if final, as Ray's OptunaSearch does;
    "first rung", every trial's score at the first rung, which every trial reaches), or TPE with other
    settings than lossweep's (`tpe`: TPESampler arguments)."""
    import optuna
    from optuna.trial import TrialState

    from lossweep.sweep.studies import StudySearch

    class Variant(StudySearch):
        def __init__(self, *args: Any, rung: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.rung, self.at_rung = rung, {}
            for i, study in enumerate(self.studies.values()):
                if tpe is not None:
                    study.sampler = optuna.samplers.TPESampler(seed=kwargs["seed"] + i, **tpe)

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            super().on_trial_result(trial_id, result)
            if result.get("step") == self.rung and self.metric in result:
                self.at_rung[trial_id] = float(result[self.metric])

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            value = {"final": (result or {}).get(self.metric), "first rung": self.at_rung.get(trial_id)}.get(told)
            if value is not None and trial_id in self.live and not error:
                name, trial = self.live.pop(trial_id)
                self.studies[name].tell(trial, float(value), state=TrialState.COMPLETE)
                return
            super().on_trial_complete(trial_id, result, error)

    return Variant


LOSSWEEP_TPE = {"multivariate": True, "group": True, "constant_liar": True}  # studies.make_sampler's
# name: (sampler, ASHA, how scores reach Optuna (see `variant`), TPE settings other than lossweep's,
# numeric ranges, first trial at the registry defaults). lossweep's own searcher starts each study at the
# spec's loss with its registry defaults (`studies.StudySearch(starts=...)`); `random`, the baseline,
# and the diagnostics start with a draw, as every search did before that.
METHODS: dict[str, tuple[str, bool, str, dict[str, Any] | None, bool, bool]] = {
    "tpe+asha": ("tpe", True, "pruned", None, False, True),
    "tpe+asha, no default start": ("tpe", True, "pruned", None, False, False),
    "tpe+asha, warm start": ("tpe", True, "pruned", None, False, True),
    "tpe+asha, warm start, no default start": ("tpe", True, "pruned", None, False, False),
    "tpe+asha, pruned as final": ("tpe", True, "final", None, False, False),
    "tpe+asha, first-rung scores": ("tpe", True, "first rung", None, False, False),
    "tpe+asha, 4 startup trials": ("tpe", True, "pruned", LOSSWEEP_TPE | {"n_startup_trials": 4}, False, False),
    "tpe+asha, independent": ("tpe", True, "pruned", {"constant_liar": True}, False, False),
    "tpe+asha, numeric ranges": ("tpe", True, "pruned", None, True, False),
    "tpe, no pruning": ("tpe", False, "pruned", None, False, False),
    "random": ("random", False, "pruned", None, False, False),
}
WARM_TRIALS = 16  # the earlier sweep a warm start is told: this many random trials of another seed, to the end


def earlier_sweep(space, curves: dict[str, list[float]], sweep: dict[str, Any], seed: int) -> list:
    """What `sweep.warm_start` tells a study: the completed trials of an earlier sweep on the same data
    (here WARM_TRIALS random draws of seed 1000 + seed, with their final scores), as warmstart.Prior."""
    import optuna

    from lossweep.sweep.space import DefineByRun
    from lossweep.sweep.studies import nest
    from lossweep.sweep.warmstart import Prior, point_of

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1000 + seed))
    priors = []
    for i in range(WARM_TRIALS):
        trial = study.ask()
        constants = DefineByRun(space)(trial) or {}
        config = nest(trial.params | constants)
        value = curves[key(snapped(config, sweep))][-1]
        study.tell(trial, value)
        point = point_of(space, config)
        if point is not None:
            priors.append(Prior(config, value, f"earlier-{i}", point))
    return priors


def as_ranges(sweep: dict[str, Any]) -> dict[str, Any]:
    """The sweep's numeric choices as log ranges over the same span, so TPE models their order."""

    def span(choices: dict) -> dict:
        return {"low": min(choices["choices"]), "high": max(choices["choices"]), "log": True}

    params = {loss: {k: span(r) for k, r in ranges.items()} for loss, ranges in sweep["params"].items()}
    return sweep | {"params": params, "shared": {k: span(r) for k, r in sweep["shared"].items()}}


def snapped(config: dict[str, Any], sweep: dict[str, Any]) -> dict[str, Any]:
    """A trial drawn from `as_ranges` moved to the grid point nearest it (each value, in log space)."""
    config = decode_config(config)
    groups = {config["loss"]: sweep["params"].get(config["loss"], {}), "shared": sweep["shared"]}
    moved = dict(config)
    for group, ranges in groups.items():
        moved[group] = {
            k: min(ranges[k]["choices"], key=lambda c, v=v: abs(math.log(c / v))) if k in ranges else v
            for k, v in (config.get(group) or {}).items()
        }
    return moved


def replay(
    spec_dict: dict, curves: dict[str, list[float]], rung: int, trials: int, seed: int, method: str, target: float
) -> list:
    """One search through Ray Tune with lossweep's searcher and scheduler; trials read their curves."""
    from ray import tune

    from lossweep.sweep.space import build_space as space_of
    from lossweep.sweep.tuning import SEARCH_STUDY, search_args

    sampler, asha, told, tpe, numeric, start = METHODS[method]
    scheduler = "asha" if asha else "none"
    grid_sweep = spec_dict["sweep"]
    sweep = (as_ranges(grid_sweep) if numeric else grid_sweep) | {
        "seed": seed,
        "sampler": sampler,
        "scheduler": scheduler,
        "trials": trials,
    }
    spec = parse_spec(spec_dict | {"sweep": sweep})
    space, _ = space_of(spec, None)

    def trainable(config: dict) -> None:
        for i, value in enumerate(curves[key(snapped(config["trial"], grid_sweep))]):
            tune.report({"step": (i + 1) * rung, METRIC: value})

    priors = {SEARCH_STUDY: earlier_sweep(space, curves, grid_sweep, seed)} if "warm start" in method else None
    args, _ = search_args(spec, {SEARCH_STUDY: space}, METRIC, priors)
    if told != "pruned" or tpe is not None or not start:  # lossweep's searcher, without its default start
        searcher = args["tune_config"]["search_alg"]
        args["tune_config"]["search_alg"] = variant(told, tpe)(
            {SEARCH_STUDY: space},
            trials,
            metric=METRIC,
            total_steps=searcher.total_steps,
            sampler=sampler,
            seed=seed,
            rung=rung,
            priors=priors,
        )
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
    # One trial at a time, so the order they were created in is the order they ran: Tune numbers them in
    # their folder names (trainable_<random id>_<number>_<params>); the ids alone are random.
    ordered = sorted((r for r in results if r.metrics), key=lambda r: int(Path(r.path).name.split("_")[2]))
    return [(r.metrics["step"], max(r.metrics_dataframe[METRIC])) for r in ordered]


def spend_to_reach(trials: list[tuple[int, float]], target: float) -> int | None:
    spent = 0
    for steps, best in trials:
        spent += steps
        if best >= target:
            return spent
    return None


def run_problem(
    name: str,
    problem: dict,
    model: str,
    seeds: int,
    smoke: bool,
    earlier: dict[str, list[float]],
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Train the problem's grid (its table of learning curves; `earlier`: curves already trained, by
    point), then replay each search `seeds` times."""
    steps, rung, trials = problem["steps"], problem["rung"], problem["trials"]
    spec_dict = sweep_spec(model, steps, rung, problem["losses"], problem["rates"])
    space, _ = build_space(parse_spec(spec_dict), None)
    grid = grid_configs(space)

    pairs = beir_pairs(DATA_DIR / "cranfield", "train")
    test = load_beir(DATA_DIR / "cranfield", "test")
    if smoke:
        test = type(test)(dict(list(test.corpus.items())[:200]), test.queries, test.qrels)
    evaluator = RetrievalEvaluator("cranfield", test, dims=None, batch_size=128)
    started = time.perf_counter()
    curves = {
        key(c): earlier[key(c)] if key(c) in earlier else learning_curve(c, model, steps, rung, evaluator, pairs)
        for c in grid
    }
    table_seconds = time.perf_counter() - started
    reused = sum(key(c) in earlier for c in grid)
    finals = {k: c[-1] for k, c in curves.items()}
    best = max(finals.values())
    target = best - TOLERANCE
    grid_spend = steps * len(grid)

    # The smoke run replays every method once on the hard problem, and two on the small one (time)
    methods = ["tpe+asha", "random"] if smoke and name == "small" else (only or list(METHODS))
    spends: dict[str, list[float]] = {m: [] for m in methods}
    reached = dict.fromkeys(methods, 0)
    for method in methods:
        for seed in range(seeds):
            trials_run = replay(spec_dict, curves, rung, trials, seed, method, target)
            spent = spend_to_reach(trials_run, target)
            # The stopper ends a search at its first trial on target: that trial must come last
            assert spent in (None, sum(s for s, _ in trials_run)), f"{method}, seed {seed}: trials out of order"
            reached[method] += spent is not None
            spends[method].append(spent if spent is not None else sum(s for s, _ in trials_run))
    medians = {m: statistics.median(v) for m, v in spends.items()}
    # Seeds where a search spent less than random search with the same seed (ties count half)
    wins = {m: sum((a < b) + (a == b) / 2 for a, b in zip(v, spends["random"], strict=True)) for m, v in spends.items()}
    result = {
        "grid_points": len(grid),
        "within_1_point": sum(v >= target for v in finals.values()),
        "steps_per_trial": steps,
        "rung_steps": rung,
        "trials_per_search": trials,
        "table_seconds": table_seconds,
        "curves_reused": reused,
        "grid_best_ndcg@10": best,
        "grid_worst_ndcg@10": min(finals.values()),
        "grid_spend_trial_steps": grid_spend,
        "spend_trial_steps": {m: summary(v) for m, v in spends.items()},
        "spend_by_seed": spends,
        "seeds_below_random": wins,
        "reached": {m: f"{reached[m]}/{seeds}" for m in spends},
        "fraction_of_grid": {m: medians[m] / grid_spend for m in spends},
        "tpe_asha_over_random": medians["tpe+asha"] / medians["random"],
        "curves": curves,
    }
    rows = [["grid (every point, to the end)", grid_spend, "1.00", "-", "-", "-"]]
    for method, values in spends.items():
        s = summary(values)
        rows.append(
            [
                f"{method} ({seeds} seeds)",
                f"{s['median']:.0f} [{s['min']:.0f}..{s['max']:.0f}]",
                f"{s['median'] / grid_spend:.2f}",
                f"{s['median'] / medians['random']:.2f}",
                f"{wins[method]:g}/{seeds}" if method != "random" else "-",
                result["reached"][method],
            ]
        )
    print(
        f"\n{name}: {len(grid)} points ({result['within_1_point']} within 1 point of the best), best NDCG@10 "
        f"{best:.4f}, worst {min(finals.values()):.4f}; target {target:.4f}; up to {trials} trials per search"
    )
    table(rows, ["search", "trial-steps to within 1 point of best", "÷ grid", "÷ random", "below random", "reached"])
    return result


def earlier_curves(path: Path | None, name: str, problem: dict) -> dict[str, list[float]]:
    """The learning curves an earlier run of this problem trained with the same steps and rung."""
    if path is None:
        return {}
    earlier = json.loads(path.read_text())["problems"].get(name, {})
    if (earlier.get("steps_per_trial"), earlier.get("rung_steps")) != (problem["steps"], problem["rung"]):
        return {}
    return earlier["curves"]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--seeds", type=int, default=20, help="seeds per search method (default 20)")
    p.add_argument(
        "--curves",
        type=Path,
        help="an earlier results file of this script: reuse its learning curves (same steps and rung) and "
        "train only the points it lacks; the table is deterministic, so only the time is saved",
    )
    p.add_argument("--problem", choices=["small", "hard", "both"], default="both")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="replay only these searches (random always)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-search-"))
    model = tiny_model(root / "tiny", hidden=64, layers=2)
    seeds = 1 if args.smoke else args.seeds
    chosen = {n: pr for n, pr in problems(args.smoke).items() if args.problem in (n, "both")}

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no per-search banner
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    only = None if not args.methods else list(dict.fromkeys([*args.methods, "tpe+asha", "random"]))
    results = {
        name: run_problem(name, problem, model, seeds, args.smoke, earlier_curves(args.curves, name, problem), only)
        for name, problem in chosen.items()
    }
    ray.shutdown()

    out: dict[str, Any] = {"problems": results, "target": "small: tpe+asha <= 0.40 x grid; hard: <= 0.5 x random"}
    met = []
    if "small" in results:
        small = results["small"]
        out["fraction_of_grid"] = small["fraction_of_grid"]
        met.append(small["fraction_of_grid"]["tpe+asha"] <= 0.40 and small["reached"]["tpe+asha"] == f"{seeds}/{seeds}")
    if "hard" in results:
        out["hard_tpe_asha_over_random"] = results["hard"]["tpe_asha_over_random"]
        met.append(results["hard"]["tpe_asha_over_random"] <= 0.5)
    out["met"] = all(met)
    write("search_efficiency", out, args.out, args.smoke)


if __name__ == "__main__":
    main()
