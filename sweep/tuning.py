"""Ray Tune for a sweep: the trial function, how a trial's MLflow run is closed, one phase of trials.

Each trial is a Tune function trainable. A trial of several workers runs a `TorchTrainer` (Ray Train
V2's pattern, with `TuneReportCallback` forwarding the workers' reports); a 1-worker trial trains in
the trial's own process, which Tune reuses for the next trial (`resources.in_trial`). Its MLflow child
run is found again by its Tune trial id, so `--resume` never duplicates a run. Searches and tuning
trials score the selection set only; a compare's seed runs score every set, once, at the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ray import tune
from ray._common.constants import HEAD_NODE_RESOURCE_NAME
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from lossweep.losses import config_errors

from . import storage
from .driver import run_trainer, worker_resources
from .metrics import TRAIN_LOSS, TRIAL_STARTUP, TRIAL_TEARDOWN, headline
from .protocol import Phase, Report, Tag, TrialState
from .runs import failure_message, raise_if_failed, start_trial_run
from .space import Space, TrialConfig, grid_configs, starting_point, trial_spec
from .spec import EvalRef, Spec, parse_spec
from .studies import PerStudyScheduler, StudySearch
from .tracking import DataInput, Provenance, Tracker
from .warmstart import Prior
from .worker import train_in_trial

# A trial only drives its Ray Train run, whose workers hold the CPUs/GPUs of the spec (so a trial
# costs `workers x resources per worker`). Tune refuses an empty request, and any CPU share would
# leave the workers one short on a full node: one byte of Ray's `memory` resource. The driver goes on
# the head node, with the sweep's: Ray Train attaches its controller to the node that runs the trial,
# so a trial placed on a worker node died with that node, its run marked failed while the sweep went
# on (the two-node test's intermittent FAILED run); on the head, a lost worker node only costs workers,
# which the controller replaces from the last checkpoint. Ray names the head's resource in a private
# module (`ray._common.constants`; Ray Serve pins its controller the same way).
TRIAL_DRIVER_RESOURCES = {"memory": 1, HEAD_NODE_RESOURCE_NAME: 0.001}


def runs_in_trial(spec: Spec) -> bool:
    """Whether a trial trains in its own Tune process instead of starting a Ray Train worker group."""
    return spec.resources.workers == 1 and spec.resources.in_trial


def worker_group_run(spec: Spec, trial_id: str) -> str:
    """A worker-group trial's Ray Train run name: its checkpoints are in `<output_dir>/<this name>`."""
    return f"{spec.name}-{trial_id}"


def trial_resources(spec: Spec) -> dict[str, float]:
    """What Tune reserves for a trial: its one worker's share when it trains itself, else a token."""
    return worker_resources(spec) if runs_in_trial(spec) else TRIAL_DRIVER_RESOURCES


SEARCH_STUDY = "search"  # the one study of a search; a compare names each study after its loss


def sweep_metric(spec: Spec) -> str:
    """The metric a sweep maximises on its selection set: `sweep.metric`, else the set's headline."""
    if spec.sweep.metric:
        return spec.sweep.metric
    selection = spec.selection_set()
    return headline(selection.type, selection.label)


def verdict_metric(spec: Spec, ref: EvalRef) -> str:
    """The metric a verdict set is judged on: the selection metric's name on that set when the two
    sets are of one type (`ndcg_at_10/dim_64` stays `ndcg_at_10/dim_64`), else the set's headline."""
    selection = spec.selection_set()
    if ref.type == selection.type:
        return f"eval/{ref.label}/" + sweep_metric(spec).removeprefix(f"eval/{selection.label}/")
    return headline(ref.type, ref.label)


def phase_spec(run: Spec, phase: str, selection: str, budgets: tuple[int, ...] = ()) -> Spec:
    """What a trial scores: search and tuning trials the selection set only, at every evaluation;
    rescore runs the selection set, once, at the end; seed runs every set at the end and at the
    `budgets` steps (their configuration is already chosen)."""
    if phase == Phase.SEEDS:
        evaluation = run.evaluation.replace(every_steps=0, at_start=False, at_steps=budgets or None)
        return run.replace(evaluation=evaluation)
    if phase == Phase.RESCORE:
        return run.replace(evaluation=run.evaluation.replace(sets=(selection,), every_steps=0, at_start=False))
    return run.replace(evaluation=run.evaluation.replace(sets=(selection,)))


# --- One trial: the trainable ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a phase shares, handed to Tune once (`tune.with_parameters`): the sweep's
    spec and space, its parent run and tracking store, the training data's fingerprint, the driver's
    provenance and dataset inputs, and the phase."""

    spec_data: dict
    space: Space
    parent_run_id: str
    tracking_uri: str
    data_fingerprint: str
    provenance: Provenance
    inputs: list[DataInput]
    phase: str


def trainable(config: dict[str, Any], *, context: TrialContext) -> None:
    """A Tune trial (its function trainable): the run's spec, its MLflow child run (found again on
    resume), and training, in this process (1 worker) or on a Ray Train worker group."""
    spec = parse_spec(context.spec_data)
    trial_config = config["trial"]
    budgets = spec.sweep.budget_steps(spec.training.steps)
    selection = spec.selection_set().label
    run_spec = phase_spec(
        trial_spec(spec, context.space, trial_config, seed=config.get("seed")), context.phase, selection, budgets
    )
    errors = config_errors(run_spec.loss_config())
    if errors:  # fail the trial at once, before any worker starts
        raise ValueError("invalid trial configuration:\n  " + "\n  ".join(errors))
    trial_id = tune.get_context().get_trial_id()
    tracker = Tracker(context.tracking_uri)
    run_id = tracker.find_child(context.parent_run_id, trial_id)
    if run_id is not None and _already_completed(tracker, run_id):
        return  # finished before the driver went down: its result is in MLflow, nothing is re-run
    if run_id is not None:
        raise_if_failed(tracker, run_id)  # Tune retrying a diverged trial: fail again, train nothing
    if run_id is None:
        candidate = context.space.candidate(TrialConfig.of(trial_config).loss)
        label = run_spec.loss_label() + candidate.model_suffix
        tags = {
            Tag.TRIAL_ID: trial_id,
            Tag.PHASE: context.phase,
            Tag.MODE: spec.sweep.mode,
            Tag.SEED: str(run_spec.training.seed),
            Tag.TRIAL_CONFIG: json.dumps(trial_config, sort_keys=True),
            Tag.SWEEP: spec.name,
            Tag.LOSS: label,
        }
        if candidate.model is not None:
            tags[Tag.MODEL] = candidate.model.label
        run_id = start_trial_run(
            run_spec.replace(name=f"{label} {trial_id}"),
            tracker,
            context.data_fingerprint,
            context.provenance,
            inputs=context.inputs,
            parent_run_id=context.parent_run_id,
            tags=tags,
        )
    if runs_in_trial(run_spec):
        train_in_trial({"spec": run_spec.to_dict(), "run_id": run_id, "tracking_uri": context.tracking_uri})
    else:
        callbacks = [TuneReportCallback()]
        run_trainer(run_spec, run_id, context.tracking_uri, name=worker_group_run(spec, trial_id), callbacks=callbacks)
    raise_if_failed(tracker, run_id)  # a diverged trial is failed in Tune too, not a finished one


def _already_completed(tracker: Tracker, run_id: str) -> bool:
    """A trial the driver saw complete before a crash: report its final metrics to Tune again."""
    run = tracker.client.get_run(run_id)
    if run.data.tags.get(Tag.STATE) != TrialState.COMPLETED:
        return False
    tune.report({Report.STEP: int(run.data.tags.get(Tag.LAST_STEP, 0))} | dict(run.data.metrics))
    return True


class CloseChildRuns(tune.Callback):
    """On the driver: mark each finished trial's child run completed, pruned (stopped early) or failed,
    with what the trial cost beyond training: `trial/startup_seconds` (Tune started it to the end of its
    first step) and `trial/teardown_seconds` (its last logged loss to its run closed)."""

    def __init__(self, tracking_uri: str, parent_run_id: str, total_steps: int, output_dir: str) -> None:
        self.tracking_uri, self.parent_run_id, self.total_steps = tracking_uri, parent_run_id, total_steps
        self.output_dir = output_dir  # Ray gives checkpoint paths inside its filesystem; the tag is a full URI
        self.started: dict[str, float] = {}  # trial id -> when Tune started it (its first start)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.time())

    def _fixed_costs(self, tracker: Tracker, run_id: str, trial_id: str) -> dict[str, float]:
        losses = tracker.client.get_metric_history(run_id, TRAIN_LOSS)
        if not losses or trial_id not in self.started:
            return {}  # no step trained, or started by a driver before a crash
        first, last = min(m.timestamp for m in losses) / 1000, max(m.timestamp for m in losses) / 1000
        return {TRIAL_STARTUP: first - self.started[trial_id], TRIAL_TEARDOWN: time.time() - last}

    def _close(self, trial, state: str, status: str, extra: dict | None = None) -> None:
        tracker = Tracker(self.tracking_uri)
        run_id = tracker.find_child(self.parent_run_id, trial.trial_id)
        if run_id is None:
            return  # failed before its run was created; Tune keeps the error
        last = trial.last_result or {}
        run = tracker.client.get_run(run_id)
        recorded = run.data.tags
        if recorded.get(Tag.STATE) == state and run.info.status == status:
            return  # closed before the driver went down; leave it exactly as it was
        tags = {Tag.STATE: state, Tag.LAST_STEP: str(last.get(Report.STEP, 0))}
        if state == TrialState.FAILED and recorded.get(Tag.ERROR):
            extra = {}  # the worker already recorded the precise reason (step, value)
        # A worker group's checkpoint comes with its report; a trial's own, through Tune.
        saved = last.get(Report.CHECKPOINT_PATH) or (trial.checkpoint.path if trial.checkpoint else None)
        if saved:
            tags[Tag.CHECKPOINT] = storage.as_uri(self.output_dir, saved)
        tracker.set_tags(run_id, tags | (extra or {}))
        costs = self._fixed_costs(tracker, run_id, trial.trial_id)
        if costs:
            tracker.log_metrics(run_id, costs, int(last.get(Report.STEP, 0)))
        tracker.end_run(run_id, status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        pruned = (trial.last_result or {}).get(Report.STEP, 0) < self.total_steps
        self._close(trial, TrialState.PRUNED if pruned else TrialState.COMPLETED, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
        self._close(trial, TrialState.FAILED, "FAILED", {Tag.ERROR: failure_message(text)[:5000]})


# --- A Tune phase --------------------------------------------------------------------------------------


def run_phase(
    name: str,
    trainable,
    *,
    root: str,
    resume: bool,
    tune_config: dict[str, Any],
    param_space: dict | None,
    callbacks: list,
    in_trial: bool,
    max_failures: int,
) -> tune.ResultGrid:
    """One Tune run. Trials that train in their own process keep their checkpoints, are retried by
    Tune (`max_failures`) and reuse one another's processes; a worker group is retried by Ray Train."""
    path = storage.join(root, name)
    if resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            # metric and mode live in the searcher and scheduler
            tune_config=tune.TuneConfig(**tune_config, reuse_actors=in_trial),
            # A fresh list per Tuner: Tune appends its own reporter to the list it is given.
            # verbose=0: lossweep shows its own table of trials (console.py); Tune's goes nowhere.
            run_config=tune.RunConfig(
                name=name,
                storage_path=root,
                callbacks=list(callbacks),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=max_failures if in_trial else 0),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
    return tuner.fit()


def search_args(
    spec: Spec, studies: dict[str, Space], metric: str, priors: dict[str, list[Prior]] | None = None
) -> tuple[dict[str, Any], int]:
    """Tuner arguments for a search or tuning phase (one study per entry of `studies`), and its trials;
    `priors`: earlier sweeps' trials for each study (warm start)."""
    sweep = spec.sweep
    by_loss = len(studies) > 1 or SEARCH_STUDY not in studies
    asha = partial(
        ASHAScheduler,
        time_attr=Report.STEP,
        metric=metric,
        mode="max",
        max_t=spec.training.steps,
        grace_period=sweep.grace_steps or spec.evaluation.every_steps,
        reduction_factor=sweep.reduction_factor,
    )
    scheduler = FIFOScheduler() if sweep.scheduler == "none" else PerStudyScheduler(asha, by_loss=by_loss)
    if sweep.sampler == "grid":
        configs = [config for space in studies.values() for config in grid_configs(space)]
        return {
            "param_space": {"trial": tune.grid_search(configs)},
            "tune_config": {"max_concurrent_trials": sweep.max_concurrent, "scheduler": scheduler},
        }, len(configs)
    searcher = StudySearch(
        studies,
        sweep.trials,
        metric=metric,
        total_steps=spec.training.steps,
        sampler=sweep.sampler,
        seed=sweep.seed,
        starts={name: starting_point(space, spec) for name, space in studies.items()},
        priors=priors,
    )
    total = sweep.trials * len(studies)
    return {
        "param_space": None,
        "tune_config": {
            "search_alg": searcher,
            "scheduler": scheduler,
            "num_samples": total,
            "max_concurrent_trials": sweep.max_concurrent,
        },
    }, total
