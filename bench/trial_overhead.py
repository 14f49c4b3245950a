"""What a sweep pays per trial beyond training, before and after trials trained in their own process.

A sweep of short trials (all-MiniLM-L6-v2, Cranfield pairs, MNRL, batch 16, 10 steps, one trial at a
time, random learning rates), run as a user runs it (`lossweep sweep`, local Ray, SQLite MLflow store)
three ways in one run:

- `worker group` (before: `resources.in_trial: false`): every 1-worker trial starts a Ray Train
  controller and a worker process that imports torch and sentence-transformers and loads the model;
- `in trial` (after, the default): a 1-worker trial trains in its Tune trial's process, which the next
  trial reuses with its imports, model and data;
- `2 workers`: a worker group of two (the path is the same before and after).

Per trial, lossweep logs `trial/startup_seconds` (Tune started the trial -> the end of its first step)
and `trial/teardown_seconds` (its last logged loss, after its final evaluation -> its MLflow run
closed). Tune calls a trial "started" once its actor is up, so the first number leaves out starting
the trial's process; with one trial at a time the bench also takes the gap from one trial's run
closed to the next trial's first step, which includes it. A trial's fixed cost is that gap plus its
teardown. The first trial of a sweep pays Ray's and the imports' cold start; the others are "warm"
(every trial but the first). Then the quickstart (experiments/quickstart.yaml) runs whole, before and
after, for its wall time.

Targets: median warm fixed cost of a 1-worker trial <= 5 s; quickstart wall time after <= 0.5 x before.

    python bench/trial_overhead.py
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from common import DATA_DIR, parser, summary, table, write
from mlflow.tracking import MlflowClient

from lossweep.sweep.models import tiny_model

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"


def sweep_spec(root: Path, model: str, trials: int, steps: int, workers: int, in_trial: bool) -> dict:
    return {
        "name": "trial-overhead",
        "data_dir": str(DATA_DIR),
        "model": model,
        "max_seq_length": 64,
        "train": {"path": "cranfield", "split": "train"},
        "eval": [{"type": "sts", "path": "stsbenchmark", "split": "dev", "limit": 100, "name": "sts"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 16, "steps": steps, "learning_rate": 2e-5, "log_every_steps": 5},
        "evaluation": {"every_steps": 0, "at_start": False},
        "resources": {"workers": workers, "cpus_per_worker": 2 // workers, "in_trial": in_trial},
        "output_dir": str(root / "runs"),
        "sweep": {
            "mode": "search",
            "losses": ["MultipleNegativesRankingLoss"],
            "sampler": "random",
            "scheduler": "none",
            "trials": trials,
            "max_concurrent": 1,
            "shared": {"learning_rate": {"low": 1e-5, "high": 1e-4, "log": True}},
        },
    }


def run_sweep(spec: dict, root: Path) -> tuple[float, str]:
    """`lossweep sweep` on a spec in a fresh folder and store; its wall time and tracking URI."""
    root.mkdir(parents=True)
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{root}/mlflow.db"
    env = dict(os.environ, LOSSWEEP_DATA_DIR=str(DATA_DIR))
    started = time.perf_counter()
    done = subprocess.run(
        ["lossweep", "sweep", str(path), "--tracking-uri", uri], capture_output=True, text=True, env=env, cwd=root
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"lossweep sweep failed in {root}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, uri


def trial_costs(uri: str) -> list[dict[str, float]]:
    """Each trial's startup and teardown seconds, in the order the trials started."""
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`lossweep.phase` = 'search'",
    )
    costs = [
        {
            "first_step": min(m.timestamp for m in client.get_metric_history(run.info.run_id, "train/loss")) / 1000,
            "closed": run.info.end_time / 1000,
            "startup": run.data.metrics["trial/startup_seconds"],
            "teardown": run.data.metrics["trial/teardown_seconds"],
        }
        for run in runs
    ]
    costs.sort(key=lambda c: c["first_step"])
    for before, cost in zip(costs, costs[1:], strict=False):
        cost["gap"] = cost["first_step"] - before["closed"]  # one trial at a time: nothing else runs
    return costs


def measure(name: str, spec: dict, root: Path) -> dict:
    seconds, uri = run_sweep(spec, root)
    costs = trial_costs(uri)
    warm = costs[1:]
    return {
        "name": name,
        "sweep_seconds": seconds,
        "trials": len(costs),
        "first_trial_startup_seconds": costs[0]["startup"],
        "warm_startup_seconds": summary([c["startup"] for c in warm]),
        "warm_gap_seconds": summary([c["gap"] for c in warm]),
        "warm_teardown_seconds": summary([c["teardown"] for c in warm]),
        "warm_fixed_seconds": summary([c["gap"] + c["teardown"] for c in warm]),
    }


def quickstart(root: Path, in_trial: bool) -> float:
    spec = yaml.safe_load(QUICKSTART.read_text())
    spec["resources"]["in_trial"] = in_trial
    spec["output_dir"] = str(root / "runs")
    seconds, _ = run_sweep(spec, root)
    return seconds


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--trials", type=int, default=6, help="trials per sweep (default 6)")
    p.add_argument("--no-quickstart", action="store_true", help="skip the quickstart before/after")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-trials-"))
    if args.smoke:
        model, trials, steps, ways = tiny_model(root / "tiny"), 2, 2, [(1, False), (1, True)]
    else:
        model, trials, steps, ways = "minilm", args.trials, 10, [(1, False), (1, True), (2, False)]

    names = {(1, False): "1 worker, worker group (before)", (1, True): "1 worker, in trial (after)"}
    names[(2, False)] = "2 workers, worker group"
    rows, results = [], []
    for workers, in_trial in ways:
        name = names[(workers, in_trial)]
        folder = root / f"w{workers}-{'trial' if in_trial else 'group'}"
        measured = measure(name, sweep_spec(folder, model, trials, steps, workers, in_trial), folder)
        results.append(measured)
        cells = [measured[f"warm_{k}_seconds"] for k in ("startup", "gap", "teardown", "fixed")]
        rows.append(
            [name, f"{measured['first_trial_startup_seconds']:.1f}"]
            + [f"{c['median']:.1f} [{c['min']:.1f}..{c['max']:.1f}]" for c in cells]
            + [f"{measured['sweep_seconds']:.0f}"]
        )
    print(f"{trials} trials of {steps} steps per sweep, one at a time; warm = every trial but the first")
    header = ["trials", "1st startup s", "warm startup s", "warm gap s", "warm teardown s", "warm fixed s", "sweep s"]
    table(rows, header)

    before, after = results[0]["warm_fixed_seconds"]["median"], results[1]["warm_fixed_seconds"]["median"]
    out = {
        "trials_per_sweep": trials,
        "steps_per_trial": steps,
        "sweeps": results,
        "warm_fixed_ratio_after_over_before": after / before,
        "target": "median warm fixed cost of a 1-worker trial <= 5 s; quickstart wall after <= 0.5 x before",
    }
    met = after <= 5.0
    if not args.smoke and not args.no_quickstart:
        quick = {"before": quickstart(root / "quick-before", False), "after": quickstart(root / "quick-after", True)}
        quick["ratio"] = quick["after"] / quick["before"]
        out["quickstart_seconds"] = quick
        met = met and quick["ratio"] <= 0.5
        b, a, r = quick["before"], quick["after"], quick["ratio"]
        print(f"\nquickstart wall time: before {b:.0f} s, after {a:.0f} s ({r:.2f}x)")
    out["met"] = met
    print(f"warm fixed cost, 1 worker: {before:.1f} s -> {after:.1f} s ({after / before:.2f}x); target <= 5 s")
    write("trial_overhead", out, args.out, args.smoke)


if __name__ == "__main__":
    main()
