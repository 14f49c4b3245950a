"""One trial: a spec trained on N Ray Train workers, evaluated, checkpointed and tracked in MLflow.

Why a lean loop and not `SentenceTransformerTrainer` inside the workers: the trainer's batch samplers
keep their property (no duplicates, grouped labels) per device only, but with cross-worker gathering
the loss sees the *global* batch, so the sampler must build global batches (`sweep/sampler.py`);
the HF trainer would also wrap the model in DDP, whose reducer rejects the several forwards per step
that cached, Matryoshka and AdaptiveLayer losses make. The loop below reuses everything else from
sentence-transformers (tokenisation, the losses, the model) and is what makes N workers x B rows
train exactly like one worker x N*B rows.

The worker loop, in order: 1. seeds and data, 2. model, loss and optimiser, 3. resume from a Ray
Train checkpoint, 4. train, evaluating at set steps and at the end; rank 0 logs to MLflow and every
rank reports to Ray Train (rank 0 with a checkpoint).
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from transformers import get_scheduler

from lossweep.losses import build_loss, get_entry

from . import negatives as neg
from .cluster import ensure_ray
from .data import fingerprint
from .evaluate import PER_QUERY_ARTIFACT, EvalResult, build_evaluators, evaluate, headline
from .inputs import (
    complete_loss,
    mining_input,
    negatives_dir,
    resolve_paths,
    train_dataset,
    train_pairs,
    uses_negatives,
    validate,
)
from .models import load_model
from .preflight import capacity_problems, output_problems, tracking_problems
from .protocol import Tag, TrialState
from .sampler import batches, shard, steps_per_epoch
from .spec import Spec, SpecError, parse_spec
from .step import TrainingDiverged, TrialOutOfMemory, collate, is_out_of_memory, train_step, trainable_parameters
from .tasks import mine_negatives
from .tracking import (
    Tracker,
    flatten,
    provenance_tags,
    redact,
    resolve_tracking_uri,
    worker_tracking_uri,
)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(parameters: list[torch.nn.Parameter], spec: Spec) -> torch.optim.Optimizer:
    """AdamW; biases and norm weights (1-d tensors) get no weight decay, as in the HF trainer."""
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": spec.training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.training.learning_rate)


def _own_parameters(loss: torch.nn.Module, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable tensors the loss owns beside the model (a classifier, a second encoder)."""
    in_model = {id(p) for p in model.parameters()}
    return {n: p for n, p in loss.named_parameters() if id(p) not in in_model}


def _save_checkpoint(directory: Path, model, loss, optimizer, scheduler, step: int, metrics: dict) -> None:
    model.save(str(directory / "model"))
    state = {
        "step": step,
        "model": model.state_dict(),
        "loss": {n: p.detach().cpu() for n, p in _own_parameters(loss, model).items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "metrics": metrics,
    }
    torch.save(state, directory / "state.pt")


def _load_checkpoint(checkpoint: Checkpoint, model, loss, optimizer, scheduler) -> dict:
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    own = _own_parameters(loss, model)
    with torch.no_grad():
        for name, value in state["loss"].items():
            own[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    return state


def _quiet_worker_logs() -> None:
    """Keep worker output to progress and problems: Ray echoes every report with all its metrics,
    the IR evaluator logs each metric, and torch flags the all_gather sentence-transformers uses."""
    for name in ("ray.train.v2._internal.execution.storage", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # Ray Train names this logger by file path: it echoes every report with all its metrics.
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")


def failure_tags(kind: str, message: str) -> dict[str, str]:
    return {Tag.STATE: TrialState.FAILED, Tag.FAILURE: kind, Tag.ERROR: message[:5000]}


def limit_memory_growth(budget_gb: float) -> None:
    """Cap this worker's address space at its current size plus `budget_gb`.

    A trial that needs more then fails alone with an out-of-memory error, instead of the node's OOM
    killer taking down its neighbours. CPU workers only: CUDA reserves address space it never uses.
    """
    import resource

    with open("/proc/self/status") as status:
        size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = size_kb * 1024 + int(budget_gb * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def train_loop(config: dict[str, Any]) -> None:
    """The Ray Train worker loop (see the module docstring)."""
    _quiet_worker_logs()
    spec = parse_spec(config["spec"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    tracker = Tracker(config["tracking_uri"]) if rank == 0 else None
    run_id = config["run_id"]

    # 1. Seeds and data: every worker builds the same global batches and takes its slice.
    _seed(spec.training.seed)
    dataset = train_dataset(spec)
    entry = get_entry(spec.loss.base.name if spec.loss.base else spec.loss.name)
    per_epoch = max(1, steps_per_epoch(dataset, spec.training.batch_size, entry.sampler, spec.training.seed))
    steps = spec.training.steps or max(1, int(per_epoch * spec.training.epochs))

    # 2. Model, loss (gathering across workers when world > 1) and optimiser.
    model = load_model(spec.model, device=str(device))
    if spec.max_seq_length:
        model.max_seq_length = spec.max_seq_length
    loss = build_loss(
        spec.loss_config(), model, distributed=world > 1, load_model=partial(load_model, device=str(device))
    )
    loss.to(device)
    parameters = trainable_parameters(loss)
    optimizer = _optimizer(parameters, spec)
    warmup = int(spec.training.warmup_ratio * steps)
    scheduler = get_scheduler(spec.training.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    precision = spec.training.precision
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        if precision != "fp32"
        else None
    )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    evaluators = build_evaluators(spec)

    # 3. Resume: a restarted worker group continues from the last reported checkpoint.
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state = _load_checkpoint(checkpoint, model, loss, optimizer, scheduler)
        start = state["step"]
        if start >= steps:  # it had finished: hand back its final result, evaluate and log nothing twice
            ray.train.report(state["metrics"])
            return

    if tracker:  # every start of the worker group is an attempt; a restart is recorded on the same run
        attempts = int(tracker.client.get_run(run_id).data.tags.get(Tag.ATTEMPTS, "0")) + 1
        tags = {Tag.ATTEMPTS: str(attempts)}
        if attempts > 1:
            tags |= {Tag.RESTARTS: str(attempts - 1), Tag.RESUMED_FROM_STEP: str(start)}
        tracker.set_tags(run_id, tags)

    def report(step: int, train_metrics: dict[str, float], final: bool = False) -> None:
        """Evaluate (all ranks share the encoding), log on rank 0, report to Ray with a checkpoint."""
        result = evaluate(model, evaluators, distributed=spec.evaluation.distributed and world > 1)
        metrics = {"step": step, **train_metrics}
        if result is not None:
            metrics |= result.metrics
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                assert tracker is not None and result is not None
                tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if k != "step"}, step)
                if final and result.per_query:
                    tracker.log_dict(run_id, result.per_query, PER_QUERY_ARTIFACT)
                _save_checkpoint(Path(tmp), model, loss, optimizer, scheduler, step, metrics)
                ckpt = Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"step_{step:07d}")

    if start == 0 and spec.evaluation.at_start and evaluators:
        report(0, {})

    # 4. Train. A NaN loss stops every worker at the same step (the loss is all-reduced): the run is
    # recorded as failed and ends without a retry. Running out of memory is raised, so Ray Train
    # tears the worker group down (a worker alone in a collective would wait forever).
    progress = {"step": start}
    budget = spec.resources.memory_per_worker_gb
    if budget and device.type == "cpu":
        limit_memory_growth(budget)
    try:
        model.train()
        every = spec.evaluation.every_steps
        log_every = spec.training.log_every_steps
        window_start, window_steps, last_loss = time.perf_counter(), 0, float("nan")
        for step, global_batch in batches(dataset, spec.training.batch_size, entry.sampler, spec.training.seed, start):
            if step >= steps:
                break
            rows = dataset[shard(global_batch, rank, world)]
            features, labels = collate(model, rows, device)
            progress["step"] = step + 1
            last_loss = train_step(
                loss,
                optimizer,
                features,
                labels,
                parameters,
                scheduler=scheduler,
                max_grad_norm=spec.training.max_grad_norm,
                autocast=autocast,
                scaler=scaler,
                step=step + 1,
            )
            window_steps += 1
            done = step + 1
            if tracker and (done % log_every == 0 or done == steps or done == start + 1):  # first: it has begun
                elapsed = time.perf_counter() - window_start
                tracker.log_metrics(
                    run_id,
                    {
                        "train/loss": last_loss,
                        "train/learning_rate": scheduler.get_last_lr()[0],
                        "train/samples_per_second": window_steps * spec.training.batch_size / elapsed,
                        "train/epoch": done / per_epoch,
                    },
                    done,
                )
            if done % log_every == 0:
                window_start, window_steps = time.perf_counter(), 0
            if every and done % every == 0 and done < steps:
                report(done, {"train/loss": last_loss})
        report(steps, {"train/loss": last_loss}, final=True)
    except TrainingDiverged as error:
        if tracker:
            tracker.set_tags(run_id, failure_tags("diverged", str(error)))
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        local = spec.training.batch_size // world
        detail = str(error).splitlines()[0][:200]
        message = (
            f"out of memory at step {progress['step']} with {local} rows per worker ({detail}); "
            "lower training.batch_size or max_seq_length, or use a cached (GradCache) loss"
        )
        if tracker:
            tracker.set_tags(run_id, failure_tags("out_of_memory", message))
        raise TrialOutOfMemory(message) from None


@dataclass
class TrialResult:
    run_id: str
    metrics: dict[str, float]
    checkpoint_path: str | None
    run_url: str


def scaling_config(spec: Spec) -> ScalingConfig:
    r = spec.resources
    resources = {"CPU": r.cpus_per_worker} | ({"GPU": r.gpus_per_worker} if r.gpus_per_worker else {})
    if r.memory_per_worker_gb:
        resources["memory"] = int(r.memory_per_worker_gb * 2**30)
    return ScalingConfig(num_workers=r.workers, use_gpu=r.gpus_per_worker > 0, resources_per_worker=resources)


def start_trial_run(
    spec: Spec, tracker: Tracker, data_fingerprint: str, *, parent_run_id: str | None = None, tags: dict | None = None
) -> str:
    """Create the trial's MLflow run: params (the resolved spec), provenance tags, the spec file."""
    data = spec.to_dict()
    data["mlflow"]["tracking_uri"] = redact(tracker.uri)
    params = flatten(data) | {"loss.label": spec.loss_label()}
    run_tags = provenance_tags(spec.hash(), data_fingerprint) | {Tag.LOSS: spec.loss_label()}
    mined = mined_negatives(spec)
    if mined is not None:
        run_tags[Tag.NEGATIVES_KEY], summary = mined
    run_tags |= tags or {}
    run_id = tracker.start_run(spec.mlflow.experiment, spec.name, params, run_tags, data, parent_run_id=parent_run_id)
    if mined is not None and mined[1]:
        tracker.log_dict(run_id, mined[1], "negatives.json")
    return run_id


def mined_negatives(spec: Spec) -> tuple[str, dict | None] | None:
    """The cache key and summary of the mined negatives a trial trains on; None when it uses none."""
    if spec.negatives is None:
        return None
    pairs = train_pairs(spec)
    if not uses_negatives(spec, pairs.features):
        return None
    directory = negatives_dir(spec, mining_input(spec, pairs))
    return directory.name, neg.read_summary(directory)


def run_trainer(spec: Spec, run_id: str, tracking_uri: str, name: str, callbacks: list | None = None):
    """Fit the TorchTrainer for one trial; a restarted worker group resumes from its last checkpoint."""
    storage = str(Path(spec.output_dir).expanduser().resolve())
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": spec.to_dict(), "run_id": run_id, "tracking_uri": worker_tracking_uri(tracking_uri)},
        scaling_config=scaling_config(spec),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
        ),
    )
    return trainer.fit()


class TrialFailed(RuntimeError):
    """A trial stopped on an error the run records (divergence, out of memory, a worker error)."""


def failure_message(text: str) -> str:
    """The line of a (Ray-wrapped) error that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for marker in ("TrialOutOfMemory:", "TrainingDiverged:", "TrialFailed:"):
        for line in reversed(lines):
            if marker in line:
                return line[line.index(marker) + len(marker) :].strip()
    return lines[-1] if lines else "unknown error"


def raise_if_failed(tracker: Tracker, run_id: str) -> None:
    """A worker that stopped cleanly on a failure (a NaN loss) leaves the reason on the run."""
    tags = tracker.client.get_run(run_id).data.tags
    if tags.get(Tag.FAILURE):
        raise TrialFailed(tags[Tag.ERROR])


def preflight(spec: Spec, source: str, uri: str) -> None:
    """Tracking store, output folder and cluster capacity, checked before any run is created."""
    problems = tracking_problems(uri) + output_problems(spec)
    if not problems:
        ensure_ray()
        problems = capacity_problems(spec)
    if problems:
        raise SpecError(source, problems)


def train(
    spec: Spec, *, source: str = "spec", tracking_uri: str | None = None, tags: dict[str, str] | None = None
) -> TrialResult:
    """Validate, create the MLflow run, train on Ray, close the run; the run holds every number."""
    loaded = validate(spec, source)
    spec = complete_loss(resolve_paths(spec), loaded["train"])
    uri = resolve_tracking_uri(spec.mlflow.tracking_uri, tracking_uri)
    preflight(spec, source, uri)
    if uses_negatives(spec, loaded["train"].features):
        mine_negatives(spec)  # once per data, model and knobs: a cached set is read, not mined again
    tracker = Tracker(uri)
    run_id = start_trial_run(spec, tracker, fingerprint(loaded["train"]), tags=tags)
    try:
        result = run_trainer(spec, run_id, uri, name=f"{spec.name}-{run_id[:8]}")
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
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    checkpoint = result.checkpoint.path if result.checkpoint else None
    tracker.set_tags(run_id, {Tag.STATE: TrialState.COMPLETED} | ({Tag.CHECKPOINT: checkpoint} if checkpoint else {}))
    tracker.end_run(run_id, "FINISHED")
    return TrialResult(run_id, metrics, checkpoint, tracker.run_url(run_id))


__all__ = ["EvalResult", "TrialResult", "headline", "train", "train_loop"]
