"""One training run from the driver: a Ray Train `TorchTrainer` around the worker loop (a sweep's
trials of several workers run one each), and `lossweep train` (validate, create the MLflow run, train
on Ray, or of one worker in this process, close the run; the run holds every number)."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from . import storage
from .cluster import joins_cluster
from .inputs import uses_negatives
from .prepare import prepare
from .protocol import Tag, TrialState
from .runs import TrialFailed, close_run, failure_message, raise_if_failed, start_trial_run
from .spec import Spec
from .step import TrialOutOfMemory
from .tasks import mine_negatives
from .tracking import Tracker, worker_tracking_uri
from .worker import LocalRun, run_loop, train_loop


def _unwatched(*args) -> AbstractContextManager:
    return nullcontext()


@dataclass
class TrialResult:
    run_id: str
    metrics: dict[str, float]
    checkpoint_path: str | None
    run_url: str
    links: list[str]  # the run in the MLflow UI


def worker_resources(spec: Spec) -> dict[str, float]:
    """One worker's share: `cpus_per_worker` CPUs, `gpus_per_worker` GPUs, `memory_per_worker_gb`."""
    r = spec.resources
    resources = {"CPU": r.cpus_per_worker} | ({"GPU": r.gpus_per_worker} if r.gpus_per_worker else {})
    if r.memory_per_worker_gb:
        resources["memory"] = int(r.memory_per_worker_gb * 2**30)
    return resources


def scaling_config(spec: Spec) -> ScalingConfig:
    """`resources.workers` workers, each with `worker_resources`."""
    r, resources = spec.resources, worker_resources(spec)
    return ScalingConfig(num_workers=r.workers, use_gpu=r.gpus_per_worker > 0, resources_per_worker=resources)


def run_trainer(spec: Spec, run_id: str, tracking_uri: str, name: str, callbacks: list | None = None):
    """Fit the TorchTrainer for one trial; a restarted worker group resumes from its last checkpoint."""
    # Ray Train turns `print` into log records in its workers; dill (inside datasets' fingerprinting)
    # prints a bytecode listing to a captured stdout, which that turns into log lines. Ray Train passes
    # this setting on to the workers of the trainer made here.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": spec.to_dict(), "run_id": run_id, "tracking_uri": worker_tracking_uri(tracking_uri)},
        scaling_config=scaling_config(spec),
        run_config=RunConfig(
            name=name,
            storage_path=storage.absolute(spec.output_dir),
            failure_config=FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
        ),
    )
    return trainer.fit()


def trains_here(spec: Spec) -> bool:
    """Whether `lossweep train` trains its one worker in this process, as a 1-worker sweep trial trains
    in its Tune trial's: one worker with `resources.in_trial`, no memory budget (a cap on this process's
    address space would outlive the run), and no Ray cluster to join (RAY_ADDRESS, or `ray start` here).
    No Ray starts, no Train worker group: what is left of a run's wall time is loading and training."""
    r = spec.resources
    return r.workers == 1 and r.in_trial and not r.memory_per_worker_gb and not joins_cluster()


def train_here(spec: Spec, run_id: str, tracking_uri: str, name: str) -> tuple[dict, str | None]:
    """The worker loop in this process: checkpoints under `<output_dir>/<name>/step_<n>` (the last two),
    a failed attempt retried from the last of them up to `resources.max_failures` times (-1: always);
    its last report and checkpoint."""
    local = LocalRun(storage.join(storage.absolute(spec.output_dir), name), spec.resources.gpus_per_worker)
    config = {"spec": spec.to_dict(), "run_id": run_id, "tracking_uri": tracking_uri}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))  # its CPUs, as Ray Train sets them
    failures, allowed = 0, spec.resources.max_failures
    try:
        while True:
            try:
                run_loop(config, local.session)
                break
            except TrialOutOfMemory:
                raise  # the same batch would run out again
            except Exception:
                failures += 1
                if allowed != -1 and failures > allowed:
                    raise
    finally:
        torch.set_num_threads(threads)
    return local.reported, local.saved[-1] if local.saved else None


def train(
    spec: Spec,
    *,
    source: str = "spec",
    tracking_uri: str | None = None,
    tags: dict[str, str] | None = None,
    watch: Callable[[str, str], AbstractContextManager] | None = None,
) -> TrialResult:
    """`lossweep train`: one trial of the spec, end to end. `watch(tracking_uri, run_id)` is entered
    while it trains (a progress display)."""
    here = trains_here(spec)
    prepared = prepare(spec, source, tracking_uri, ray_needed=not here)
    spec, uri = prepared.spec, prepared.tracking_uri
    if uses_negatives(spec, prepared.loaded.train.features):
        mine_negatives(spec)  # once per data, model and knobs: a cached set is read, not mined again
    tracker = Tracker(uri)
    run_id = start_trial_run(
        spec, tracker, prepared.data_fingerprint, prepared.provenance, inputs=prepared.inputs, tags=tags
    )
    name = f"{spec.name}-{run_id[:8]}"
    try:
        with (watch or _unwatched)(uri, run_id):
            if here:
                reported, checkpoint = train_here(spec, run_id, uri, name)
            else:
                result = run_trainer(spec, run_id, uri, name=name)
                reported = result.metrics or {}
                checkpoint = storage.as_uri(spec.output_dir, result.checkpoint.path) if result.checkpoint else None
        raise_if_failed(tracker, run_id)
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        run_tags = tracker.client.get_run(run_id).data.tags
        if Tag.ERROR not in run_tags:
            reason = "interrupted" if interrupted else failure_message(f"{type(error).__name__}: {error}")
            tracker.set_tags(run_id, {Tag.STATE: TrialState.FAILED, Tag.ERROR: reason[:5000]})
        tracker.end_run(run_id, "KILLED" if interrupted else "FAILED")
        if interrupted or isinstance(error, TrialFailed):
            raise
        raise TrialFailed(tracker.client.get_run(run_id).data.tags[Tag.ERROR]) from error
    metrics = {k: v for k, v in reported.items() if isinstance(v, (int, float))}
    close_run(tracker, run_id, TrialState.COMPLETED, {Tag.CHECKPOINT: checkpoint} if checkpoint else None)
    return TrialResult(run_id, metrics, checkpoint, tracker.run_url(run_id), tracker.links(run_id))
