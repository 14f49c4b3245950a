"""Sweeps: Ray Tune + Optuna over losses and their hyperparameters; every trial a Ray Train run.

Two modes:
- `search`: the loss is one more categorical; TPE (seeded, conditional) looks for the best
  configuration overall, ASHA stops hopeless trials early.
- `compare`: the fair shoot-out. Every candidate loss gets the same tuning budget (same trials, same
  steps, its own TPE study); its best *completed* configuration (an early-stopped score is not a
  final one) is then re-trained with k fresh seeds, and `leaderboard.py` gives mean +/- 95% CI and a
  paired test of each loss against the best.

Each trial is a Tune function trainable that runs a `TorchTrainer` (Ray Train V2's pattern, with
`TuneReportCallback` forwarding the workers' reports). MLflow: a parent run per sweep, one nested
child run per trial, found again by its Tune trial id so `--resume` never duplicates a run.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.exceptions import ExperimentalWarning
from optuna.samplers import RandomSampler, TPESampler
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from lossweep.losses import config_errors

from .data import fingerprint
from .evaluate import headline
from .inputs import complete_loss, num_classes, resolve_paths, validate
from .leaderboard import Leaderboard, build_leaderboard, sweep_runs
from .space import DefineByRun, Space, build_space, grid_configs, trial_spec
from .spec import Spec, SpecError, parse_spec
from .tracking import Tracker, flatten, provenance_tags, redact, resolve_tracking_uri
from .train import failure_message, preflight, raise_if_failed, run_trainer, start_trial_run

# How a trial's MLflow run ends; a run without one of these was stopped by an interrupt.
CLOSED = ("completed", "pruned", "failed")

STATE_FILE = "sweep.json"
# A trial only drives its Ray Train run, whose workers hold the CPUs/GPUs of the spec (so a trial
# costs `workers x resources per worker`). Tune refuses an empty request, and any CPU share would
# leave the workers one short on a full node; one byte of Ray's `memory` resource schedules anywhere.
TRIAL_DRIVER_RESOURCES = {"memory": 1}


def sweep_metric(spec: Spec) -> str:
    """The metric a sweep maximises: `sweep.metric`, else the headline of the first eval set."""
    if spec.sweep.metric:
        return spec.sweep.metric
    first = spec.eval[0]
    return headline(first.type, first.label)


# --- One trial ---------------------------------------------------------------------------------------


def sweep_trial(
    config: dict[str, Any],
    *,
    spec_data: dict,
    space: Space,
    parent_run_id: str,
    tracking_uri: str,
    data_fingerprint: str,
    phase: str,
) -> None:
    """A Tune trial: the trial's spec, its MLflow child run (found again on resume), a Ray Train run."""
    spec = parse_spec(spec_data)
    trial_config = config.get("trial", config)
    seed = config.get("seed")
    trial = trial_spec(spec, space, trial_config, seed=seed)
    errors = config_errors(trial.loss_config())
    if errors:  # fail the trial at once, before any worker starts
        raise ValueError("invalid trial configuration:\n  " + "\n  ".join(errors))
    trial_id = tune.get_context().get_trial_id()
    tracker = Tracker(tracking_uri)
    run_id = tracker.find_child(parent_run_id, trial_id)
    if run_id is not None and _already_completed(tracker, run_id):
        return  # finished before the driver went down: its result is in MLflow, nothing is re-run
    if run_id is None:
        tags = {
            "lossweep.trial_id": trial_id,
            "lossweep.phase": phase,
            "lossweep.mode": spec.sweep.mode,
            "lossweep.seed": str(trial.training.seed),
            "lossweep.trial_config": json.dumps(trial_config, sort_keys=True),
            "lossweep.sweep": spec.name,
        }
        run_name = f"{trial.loss_config().label()} {trial_id}"
        run_id = start_trial_run(
            trial.replace(name=run_name), tracker, data_fingerprint, parent_run_id=parent_run_id, tags=tags
        )
    run_trainer(trial, run_id, tracking_uri, name=f"{spec.name}-{trial_id}", callbacks=[TuneReportCallback()])
    raise_if_failed(tracker, run_id)  # a diverged trial is failed in Tune too, not a finished one


def _already_completed(tracker: Tracker, run_id: str) -> bool:
    """A trial the driver saw complete before a crash: report its final metrics to Tune again."""
    run = tracker.client.get_run(run_id)
    if run.data.tags.get("lossweep.trial_state") != "completed":
        return False
    tune.report({"step": int(run.data.tags.get("lossweep.last_step", 0))} | dict(run.data.metrics))
    return True


class CloseChildRuns(tune.Callback):
    """On the driver: mark each finished trial's child run completed, pruned (stopped early) or failed."""

    def __init__(self, tracking_uri: str, parent_run_id: str, total_steps: int) -> None:
        self.tracking_uri, self.parent_run_id, self.total_steps = tracking_uri, parent_run_id, total_steps

    def _close(self, trial, state: str, status: str, extra: dict | None = None) -> None:
        tracker = Tracker(self.tracking_uri)
        run_id = tracker.find_child(self.parent_run_id, trial.trial_id)
        if run_id is None:
            return  # failed before its run was created; Tune keeps the error
        last = trial.last_result or {}
        run = tracker.client.get_run(run_id)
        recorded = run.data.tags
        if recorded.get("lossweep.trial_state") == state and run.info.status == status:
            return  # closed before the driver went down; leave it exactly as it was
        tags = {"lossweep.trial_state": state, "lossweep.last_step": str(last.get("step", 0))}
        if state == "failed" and recorded.get("lossweep.error"):
            extra = {}  # the worker already recorded the precise reason (step, value)
        if last.get("checkpoint_path"):
            tags["lossweep.checkpoint"] = last["checkpoint_path"]
        tracker.set_tags(run_id, tags | (extra or {}))
        tracker.end_run(run_id, status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        pruned = (trial.last_result or {}).get("step", 0) < self.total_steps
        self._close(trial, "pruned" if pruned else "completed", "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
        self._close(trial, "failed", "FAILED", {"lossweep.error": failure_message(text)[:5000]})


# --- A Tune phase --------------------------------------------------------------------------------------


def _run_phase(
    name: str,
    trainable,
    *,
    storage: Path,
    resume: bool,
    metric: str,
    tune_config: dict[str, Any],
    param_space: dict | None,
    callbacks: list,
) -> tune.ResultGrid:
    path = storage / name
    if resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(**tune_config),  # metric and mode live in the searcher and scheduler
            # A fresh list per Tuner: Tune appends its own reporter to the list it is given.
            run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=list(callbacks), verbose=1),
        )
    return tuner.fit()


def _searcher(spec: Spec, space: Space, metric: str) -> OptunaSearch:
    sweep = spec.sweep
    # `group=True` is marked experimental by Optuna; it is what conditional spaces need.
    warnings.filterwarnings(
        "ignore", message=r"Argument ``group`` is an experimental feature", category=ExperimentalWarning
    )
    if sweep.sampler == "random":
        sampler = RandomSampler(seed=sweep.seed)
    else:  # TPE, conditional: group=True splits the space by the loss picked
        sampler = TPESampler(seed=sweep.seed, multivariate=True, group=True, constant_liar=True)
    return OptunaSearch(space=DefineByRun(space), metric=metric, mode="max", sampler=sampler)


def _scheduler(spec: Spec, metric: str):
    sweep = spec.sweep
    if sweep.scheduler == "none":
        return FIFOScheduler()
    grace = sweep.grace_steps or spec.evaluation.every_steps
    return ASHAScheduler(
        time_attr="step",
        metric=metric,
        mode="max",
        max_t=spec.training.steps,
        grace_period=grace,
        reduction_factor=sweep.reduction_factor,
    )


# --- The driver ------------------------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    parent_run_id: str
    leaderboard: Leaderboard
    run_url: str
    notes: list[str]


def _load_state(root: Path) -> dict:
    path = root / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_state(root: Path, state: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / STATE_FILE).write_text(json.dumps(state, indent=2))


def run_sweep(
    spec: Spec, *, source: str = "spec", resume: bool = False, tracking_uri: str | None = None
) -> SweepOutcome:
    """Run (or resume) the sweep a spec describes; returns the leaderboard and the parent run."""
    if spec.sweep is None:
        raise SpecError(source, ["sweep: missing; add a sweep section (mode, losses, trials...) or use lossweep train"])
    loaded = validate(spec, source)
    spec = complete_loss(resolve_paths(spec), loaded["train"])
    root = Path(spec.output_dir) / spec.name
    state = _load_state(root)
    if state and not resume:
        raise SpecError(
            source,
            [f"name: a sweep named {spec.name!r} already exists in {root}; resume it with --resume, or rename it"],
        )
    notes_start = [] if state or not resume else [f"no earlier sweep named {spec.name!r} in {root}: starting it"]
    resume = resume and bool(state)
    if state and state["spec_hash"] != spec.hash():
        raise SpecError(
            source, [f"--resume: the spec changed since {spec.name!r} started; rename it to start a new sweep"]
        )

    uri = resolve_tracking_uri(spec.mlflow.tracking_uri, tracking_uri)
    preflight(spec, source, uri)
    tracker = Tracker(uri)
    space, notes = build_space(spec, loaded["train"])
    space = _with_num_labels(space, loaded["train"])
    metric = sweep_metric(spec)
    data_fingerprint = fingerprint(loaded["train"])
    if not state:
        data = spec.to_dict()
        data["mlflow"]["tracking_uri"] = redact(uri)
        tags = provenance_tags(spec.hash(), data_fingerprint) | {
            "lossweep.role": "sweep",
            "lossweep.sweep": spec.name,
            "lossweep.mode": spec.sweep.mode,
            "lossweep.metric": metric,
        }
        parent = tracker.start_run(spec.mlflow.experiment, spec.name, flatten(data), tags, data)
        tracker.log_dict(parent, space.describe(), "search_space.json")
        state = {"parent_run_id": parent, "spec_hash": spec.hash(), "phases_done": []}
        _save_state(root, state)
    parent = state["parent_run_id"]

    def trainable_for(phase: str):
        trial = tune.with_parameters(
            sweep_trial,
            spec_data=spec.to_dict(),
            space=space,
            parent_run_id=parent,
            tracking_uri=uri,
            data_fingerprint=data_fingerprint,
            phase=phase,
        )
        return tune.with_resources(trial, TRIAL_DRIVER_RESOURCES)

    callbacks = [CloseChildRuns(uri, parent, spec.training.steps)]
    common = {"storage": root, "resume": resume, "metric": metric, "callbacks": callbacks}
    try:
        if spec.sweep.mode == "search":
            args, expected = _search_args(spec, space, metric)
            _phase(
                state,
                root,
                "search",
                expected,
                lambda: _run_phase("search", trainable_for("search"), **common, **args),
                tracker,
                parent,
            )
        else:
            for candidate in space.candidates:
                phase = f"tune-{candidate.name}"
                args, expected = _search_args(spec, space.only(candidate.name), metric)
                _phase(
                    state,
                    root,
                    phase,
                    expected,
                    lambda p=phase, a=args: _run_phase(p, trainable_for(p), **common, **a),
                    tracker,
                    parent,
                )
            best = _best_configs(tracker, parent, metric)
            seeds = [spec.training.seed + 1000 + i for i in range(spec.sweep.seeds)]
            seed_args = {
                "param_space": {"trial": tune.grid_search(list(best.values())), "seed": tune.grid_search(seeds)},
                "tune_config": {"max_concurrent_trials": spec.sweep.max_concurrent, "scheduler": FIFOScheduler()},
            }
            expected = len(best) * len(seeds)
            _phase(
                state,
                root,
                "seeds",
                expected,
                lambda: _run_phase("seeds", trainable_for("seeds"), **common, **seed_args),
                tracker,
                parent,
            )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished trials and their MLflow runs are kept; resume: lossweep sweep {source} --resume"
        )
        raise
    board = build_leaderboard(sweep_runs(tracker, parent), metric, spec.sweep.mode, tracker)
    board.log(tracker, parent)
    tracker.end_run(parent, "FINISHED")
    return SweepOutcome(parent, board, tracker.run_url(parent), notes_start + notes)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a stop) before a phase finished; its state is saved for `--resume`."""


def _phase(state: dict, root: Path, name: str, expected: int, run, tracker: Tracker, parent: str) -> None:
    """Run a phase unless a previous run of this sweep finished it.

    Tune catches Ctrl-C itself, saves the experiment (running trials as running) and returns, but
    then marks the trials it stopped as terminated. So a phase is done only when each of its trials
    failed in Tune or had its MLflow run closed as completed, pruned or failed by `CloseChildRuns`.
    """
    if name in state["phases_done"]:
        return
    grid = run()
    closed = {
        r.data.tags.get("lossweep.trial_id")
        for r in tracker.children(parent)
        if r.data.tags.get("lossweep.phase") == name and r.data.tags.get("lossweep.trial_state") in CLOSED
    }
    ended = sum(1 for r in grid if r.error is not None or (r.metrics or {}).get("trial_id") in closed)
    if ended < expected:
        raise SweepInterrupted(f"phase {name!r} stopped after {ended} of {expected} trials")
    state["phases_done"].append(name)
    _save_state(root, state)


def _search_args(spec: Spec, space: Space, metric: str) -> tuple[dict[str, Any], int]:
    """Tuner arguments for a search phase, and how many trials it runs."""
    sweep = spec.sweep
    if sweep.sampler == "grid":
        configs = grid_configs(space)
        return {
            "param_space": {"trial": tune.grid_search(configs)},
            "tune_config": {"max_concurrent_trials": sweep.max_concurrent, "scheduler": _scheduler(spec, metric)},
        }, len(configs)
    return {
        "param_space": None,
        "tune_config": {
            "search_alg": _searcher(spec, space, metric),
            "scheduler": _scheduler(spec, metric),
            "num_samples": sweep.trials,
            "max_concurrent_trials": sweep.max_concurrent,
        },
    }, sweep.trials


def _best_configs(tracker: Tracker, parent: str, metric: str) -> dict[str, dict]:
    """Per loss, the trial config of its best trial that ran its whole budget (never a pruned score)."""
    best: dict[str, tuple[float, dict]] = {}
    for run in sweep_runs(tracker, parent):
        tags = run.data.tags
        if not tags.get("lossweep.phase", "").startswith("tune-") or tags.get("lossweep.trial_state") != "completed":
            continue
        value = run.data.metrics.get(metric)
        loss = tags["lossweep.loss"]
        if value is not None and (loss not in best or value > best[loss][0]):
            best[loss] = (value, json.loads(tags["lossweep.trial_config"]))
    return {loss: config for loss, (_, config) in sorted(best.items())}


def _with_num_labels(space: Space, train) -> Space:
    """SoftmaxLoss candidates get num_labels from the data."""
    candidates = []
    for c in space.candidates:
        if c.name == "SoftmaxLoss" and "num_labels" not in c.config.params:
            c = type(c)(
                type(c.config)(c.name, dict(c.config.params) | {"num_labels": num_classes(train)}, c.config.base),
                c.dims,
            )
        candidates.append(c)
    return Space(tuple(candidates), space.shared)
