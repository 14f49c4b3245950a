"""The Ray Train worker loop of one trial, as a recipe: setup, resume, train, evaluate and report.

Why a lean loop and not `SentenceTransformerTrainer` inside the workers: the trainer's batch samplers
keep their property (no duplicates, grouped labels) per device only, but with cross-worker gathering
the loss sees the *global* batch, so the sampler must build global batches (`sampler.py`); the HF
trainer would also wrap the model in DDP, whose reducer rejects the several forwards per step that
cached, Matryoshka and AdaptiveLayer losses make. The loop reuses everything else from
sentence-transformers (tokenisation, the losses, the model) and is what makes N workers x B rows
train exactly like one worker x N*B rows.

Every worker builds the same global batches and takes its slice; rank 0 logs to MLflow and saves
checkpoints; every rank reports to Ray Train. A 1-worker trial of a sweep runs the same loop inside its
Tune trial's own process (`train_in_trial`): no Ray Train controller or worker process to start, and
the next trial reuses the process with its imports done (loading MiniLM again takes ~0.1 s).
"""

from __future__ import annotations

import contextlib
import logging
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import ray
import ray.train
import ray.train.torch
import ray.tune
import torch
from transformers import get_scheduler

from lossweep.losses import build_loss, get_entry, replays_forward

from . import checkpoint, storage
from .adapters import add_adapter
from .evaluate import Evaluator, build_evaluators, evaluate, per_query_artifact
from .inputs import training_sets
from .metrics import (
    TRAIN_EPOCH,
    TRAIN_LEARNING_RATE,
    TRAIN_LOSS,
    TRAIN_SAMPLES_PER_SECOND,
    TRAIN_STEP,
    train_set_metric,
)
from .models import load_model, resolve_model
from .prompts import Prompts, spec_prompts
from .protocol import Report, Tag, TrialState
from .runs import failure_tags
from .sampler import mixed_batches, mixed_epoch, shard
from .spec import Spec, parse_spec
from .step import (
    Optimisation,
    TrainingDiverged,
    TrialOutOfMemory,
    collate,
    is_out_of_memory,
    train_step,
    trainable_parameters,
)
from .tracking import Tracker


@dataclass(frozen=True)
class Session:
    """Where the loop runs: its rank among the workers, its device, and how it finds its last checkpoint
    and reports (metrics and a checkpoint folder) — to Ray Train in a worker group, to Tune in a trial."""

    rank: int
    world: int
    device: torch.device
    last_checkpoint: Callable[[], Any]
    report: Callable[[dict[str, Any], str | None], None]


def ray_train_session() -> Session:
    """A Ray Train worker of a `TorchTrainer`."""
    context = ray.train.get_context()

    def report(metrics: dict[str, Any], folder: str | None) -> None:
        saved = ray.train.Checkpoint.from_directory(folder) if folder else None
        step = metrics[Report.STEP]
        ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=f"step_{step:07d}")

    rank, world = context.get_world_rank(), context.get_world_size()
    return Session(rank, world, ray.train.torch.get_device(), ray.train.get_checkpoint, report)


def tune_session() -> Session:
    """The Tune trial's own process, as the only worker: it holds the trial's CPUs (and GPU)."""
    gpus = ray.get_gpu_ids()
    device = torch.device("cuda", 0) if gpus and torch.cuda.is_available() else torch.device("cpu")

    def report(metrics: dict[str, Any], folder: str | None) -> None:
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(folder) if folder else None)

    return Session(0, 1, device, ray.tune.get_checkpoint, report)


class LocalRun:
    """This process as the only worker (`lossweep train` of one worker, without Ray): its checkpoints
    go to `directory` as `step_<n>` folders (a local path or a URI; the last `kept`), as Ray Train keeps
    them, and its last report stays on `reported`."""

    def __init__(self, directory: str, gpus: float, kept: int = 2) -> None:
        self.directory, self.kept = directory, kept
        self.saved: list[str] = []
        self.reported: dict[str, Any] = {}
        device = torch.device("cuda", 0) if gpus and torch.cuda.is_available() else torch.device("cpu")
        self.session = Session(0, 1, device, self.last_checkpoint, self.report)

    def report(self, metrics: dict[str, Any], folder: str | None) -> None:
        self.reported = metrics
        if folder is None:
            return
        target = storage.join(self.directory, f"step_{metrics[Report.STEP]:07d}")
        storage.upload(Path(folder), target)
        self.saved.append(target)
        for old in self.saved[: -self.kept]:
            storage.remove(old)
        del self.saved[: -self.kept]

    def last_checkpoint(self) -> Any:
        return ray.train.Checkpoint.from_directory(str(storage.local_copy(self.saved[-1]))) if self.saved else None


@dataclass
class TrainedSet:
    """One training set as a worker trains it: its rows, batched with its loss's sampler, and that loss
    with the parameters it reaches (the model's and its own)."""

    label: str
    rows: datasets.Dataset
    sampler: str
    loss: torch.nn.Module
    parameters: list[torch.nn.Parameter]
    replays_forward: bool = False  # a GradCache loss: the model runs again in the backward
    steps: int = 0  # optimisation steps on this set so far (this attempt)


@dataclass
class WorkerState:
    """What one worker holds while it trains."""

    session: Session
    spec: Spec
    run_id: str
    rank: int
    world: int
    device: torch.device
    tracker: Tracker | None  # rank 0 only
    sets: list[TrainedSet]  # one, or several (`train` as a list): every global batch from one of them
    steps: int
    steps_per_epoch: int
    model: Any
    loss: torch.nn.Module  # every set's loss (one module, or a ModuleList): what checkpoints hold
    parameters: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    evaluators: list[Evaluator]
    autocast: contextlib.AbstractContextManager | None = None
    scaler: torch.amp.GradScaler | None = None
    prompts: Prompts | None = None  # prepended to each training column (and by the evaluators)
    start: int = 0
    step: int = 0  # the step being trained (for the out-of-memory message)

    def optimisation(self, trained: TrainedSet) -> Optimisation:
        """A step on one set: its loss, and gradients averaged and clipped over the parameters it reaches
        (another set's own parameters keep no gradient, so the optimiser leaves them as they are)."""
        return Optimisation(
            trained.loss,
            self.optimizer,
            trained.parameters,
            self.scheduler,
            self.spec.training.max_grad_norm,
            self.autocast,
            self.scaler,
            trained.replays_forward,
        )

    log: dict[str, float] = field(default_factory=dict)  # the running window of train/samples_per_second


def train_loop(config: dict[str, Any]) -> None:
    """The Ray Train worker function."""
    run_loop(config, ray_train_session())


def train_in_trial(config: dict[str, Any]) -> None:
    """A 1-worker trial trained in the calling Tune trial's process, reporting to Tune. Its torch
    threads are its CPUs, as Ray Train sets them for a worker."""
    torch.set_num_threads(max(1, int(parse_spec(config["spec"]).resources.cpus_per_worker)))
    run_loop(config, tune_session())


def run_loop(config: dict[str, Any], session: Session) -> None:
    """Setup, resume, train, evaluate and report, wherever the loop runs."""
    _quiet_worker_logs()
    worker = setup(config, session)
    if resume(worker):
        return
    record_attempt(worker)
    if worker.start == 0 and worker.spec.evaluation.at_start and worker.evaluators:
        evaluate_and_report(worker, 0, {})
    train(worker)


# --- 1. Setup ------------------------------------------------------------------------------------------


def setup(config: dict[str, Any], session: Session) -> WorkerState:
    """Seeds, data, model, loss (gathering across workers when there are several), optimiser."""
    spec = parse_spec(config["spec"])
    rank, world, device = session.rank, session.world, session.device
    _seed(spec.training.seed)
    found = training_sets(spec)
    schedule = [(found_set.rows, get_entry(found_set.loss.leaf).sampler) for found_set in found]
    batch, mixing = spec.training.batch_size, spec.training.mixing
    per_epoch = max(1, len(mixed_epoch(schedule, batch, mixing, spec.training.seed, 0)))
    steps = spec.training.steps or max(1, int(per_epoch * spec.training.epochs))

    model = load_model(spec.model, device=str(device))
    if spec.max_seq_length:
        model.max_seq_length = spec.max_seq_length
    if spec.adapter is not None:  # before the loss and the optimiser: they take the adapter's parameters only
        add_adapter(model, spec.adapter, base=resolve_model(spec.model))
    prompts = spec_prompts(spec)
    prompts.declare(model)
    load = partial(load_model, device=str(device))
    sets = []
    for found_set, (_, sampler) in zip(found, schedule, strict=True):
        loss_config = spec.loss_config(found_set.loss)
        loss = build_loss(loss_config, model, distributed=world > 1, load_model=load).to(device)
        reached = trainable_parameters(loss)
        sets.append(TrainedSet(found_set.label, found_set.rows, sampler, loss, reached, replays_forward(loss_config)))
    loss = sets[0].loss if len(sets) == 1 else torch.nn.ModuleList([trained.loss for trained in sets])
    parameters = trainable_parameters(loss)
    optimizer = _optimizer(parameters, spec)
    warmup = int(spec.training.warmup_ratio * steps)
    scheduler = get_scheduler(spec.training.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    precision = spec.training.precision
    autocast = None
    if precision != "fp32":
        autocast = torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return WorkerState(
        session=session,
        spec=spec,
        run_id=config["run_id"],
        rank=rank,
        world=world,
        device=device,
        tracker=Tracker(config["tracking_uri"]) if rank == 0 else None,
        sets=sets,
        steps=steps,
        steps_per_epoch=per_epoch,
        model=model,
        loss=loss,
        parameters=parameters,
        optimizer=optimizer,
        scheduler=scheduler,
        evaluators=build_evaluators(spec),
        prompts=prompts,
        autocast=autocast,
        scaler=torch.amp.GradScaler(device.type) if precision == "fp16" else None,
    )


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(parameters: list[torch.nn.Parameter], spec: Spec) -> torch.optim.Optimizer:
    """AdamW (biases and norm weights, the 1-d tensors, get no weight decay, as in the HF trainer), or
    plain SGD, whose update is linear in the gradient (the exactness tests use it).

    AdamW is torch's fused kernel where the parameters' device has one (CPU and CUDA), the HF trainer's
    default (`adamw_torch_fused`): the per-tensor loop costs MiniLM 55 ms a step on 2 cores, the kernel 11."""
    if spec.training.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=spec.training.learning_rate)
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": spec.training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return torch.optim.AdamW(groups, lr=spec.training.learning_rate, fused=fused)


def _quiet_worker_logs() -> None:
    """Keep worker output to progress and problems: the IR evaluator logs each metric, and torch
    flags the all_gather sentence-transformers uses."""
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")


# --- 2. Resume -----------------------------------------------------------------------------------------


def resume(worker: WorkerState) -> bool:
    """Continue from the last reported checkpoint of a restarted worker group. True when that
    checkpoint is the final one: its result is handed back and nothing is trained or logged twice."""
    found = worker.session.last_checkpoint()
    if found is None:
        return False
    with found.as_directory() as directory:
        worker.start, metrics = checkpoint.load(
            Path(directory), worker.model, worker.loss, worker.optimizer, worker.scheduler
        )
    if worker.start >= worker.steps:
        worker.session.report(metrics, None)
        return True
    return False


TRAINING_SETS = "training_sets.json"  # several training sets: each one's rows, loss and sampler, on the run


def record_attempt(worker: WorkerState) -> None:
    """Every start of the worker group is an attempt; a restart is recorded on the same run.

    A failure an earlier attempt recorded (a NaN from a collective whose peer died with its node, a
    memory error) belongs to that attempt: the restart resumes from a checkpoint before it, and if
    the failure is real it happens again and is recorded again. So it is moved aside (tag
    `lossweep.earlier_failure`), or the run of a restart that then completes would still read as failed.
    """
    if worker.tracker is None:
        return
    tags = worker.tracker.client.get_run(worker.run_id).data.tags
    attempts = int(tags.get(Tag.ATTEMPTS, "0")) + 1
    if attempts == 1 and len(worker.sets) > 1:  # what each set is; its steps and loss are train_set/* metrics
        described = {
            trained.label: {"rows": len(trained.rows), "loss": type(trained.loss).__name__, "sampler": trained.sampler}
            for trained in worker.sets
        }
        worker.tracker.log_dict(worker.run_id, described | {"mixing": worker.spec.training.mixing}, TRAINING_SETS)
    update = {Tag.ATTEMPTS: str(attempts), Tag.TOTAL_STEPS: str(worker.steps)}
    if attempts > 1:
        update |= {Tag.RESTARTS: str(attempts - 1), Tag.RESUMED_FROM_STEP: str(worker.start)}
        if tags.get(Tag.FAILURE):
            update |= {Tag.EARLIER_FAILURE: f"attempt {attempts - 1}: {tags.get(Tag.ERROR, tags[Tag.FAILURE])}"}
            for key in (Tag.FAILURE, Tag.ERROR):
                if key in tags:
                    worker.tracker.client.delete_tag(worker.run_id, key)
            update[Tag.STATE] = TrialState.RUNNING
    worker.tracker.set_tags(worker.run_id, update)


# --- 3. Train ------------------------------------------------------------------------------------------


def train(worker: WorkerState) -> None:
    """Optimise to the last step, evaluating at set steps and at the end.

    A NaN loss stops every worker at the same step (the loss is all-reduced): the run is recorded as
    failed and ends without a retry. Running out of memory is raised, so Ray Train tears the worker
    group down (a worker alone in a collective would wait forever).
    """
    spec = worker.spec
    budget = spec.resources.memory_per_worker_gb
    if budget and worker.device.type == "cpu":
        limit_memory_growth(budget)
    try:
        last_loss = _optimise(worker)
        evaluate_and_report(worker, worker.steps, {TRAIN_LOSS: last_loss}, final=True)
    except TrainingDiverged as error:
        if worker.tracker:
            worker.tracker.set_tags(worker.run_id, failure_tags("diverged", str(error)))
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        local = spec.training.batch_size // worker.world
        detail = str(error).splitlines()[0][:200]
        message = (
            f"out of memory at step {worker.step} with {local} rows per worker ({detail}); "
            "lower training.batch_size or max_seq_length, or use a cached (GradCache) loss"
        )
        if worker.tracker:
            worker.tracker.set_tags(worker.run_id, failure_tags("out_of_memory", message))
        raise TrialOutOfMemory(message) from None


def _optimise(worker: WorkerState) -> float:
    """The optimisation steps from `worker.start`; returns the last loss."""
    spec = worker.spec
    every, log_every = spec.evaluation.every_steps, spec.training.log_every_steps
    worker.model.train()
    window = (time.perf_counter(), 0)
    last_loss = float("nan")
    last_by_set: dict[str, float] = {}
    schedule = [(trained.rows, trained.sampler) for trained in worker.sets]
    for step, index, global_batch in mixed_batches(
        schedule, spec.training.batch_size, spec.training.mixing, spec.training.seed, worker.start
    ):
        if step >= worker.steps:
            break
        worker.step = done = step + 1
        trained = worker.sets[index]
        rows = trained.rows[shard(global_batch, worker.rank, worker.world)]
        features, labels = collate(worker.model, rows, worker.device, worker.prompts)
        last_loss = last_by_set[trained.label] = train_step(worker.optimisation(trained), features, labels, step=done)
        trained.steps += 1
        window = (window[0], window[1] + 1)
        if worker.tracker and (done % log_every == 0 or done == worker.steps or done == worker.start + 1):
            seconds = time.perf_counter() - window[0]
            metrics = {
                TRAIN_STEP: done,
                TRAIN_LOSS: last_loss,
                TRAIN_LEARNING_RATE: worker.scheduler.get_last_lr()[0],
                TRAIN_SAMPLES_PER_SECOND: window[1] * spec.training.batch_size / seconds,
                TRAIN_EPOCH: done / worker.steps_per_epoch,
            }
            if len(worker.sets) > 1:  # each set's last loss and its steps so far (this attempt)
                for each in worker.sets:
                    metrics[train_set_metric(each.label, "steps")] = each.steps
                    if each.label in last_by_set:
                        metrics[train_set_metric(each.label, "loss")] = last_by_set[each.label]
            worker.tracker.log_metrics(worker.run_id, metrics, done)
        if done % log_every == 0:
            window = (time.perf_counter(), 0)
        kept = done in (spec.evaluation.at_steps or ())
        if (every and done % every == 0 or kept) and done < worker.steps:
            evaluate_and_report(worker, done, {TRAIN_LOSS: last_loss}, keep_items=kept)
    return last_loss


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


# --- 4. Evaluate and report ------------------------------------------------------------------------------


def evaluate_and_report(
    worker: WorkerState, step: int, train_metrics: dict[str, float], final: bool = False, keep_items: bool = False
) -> None:
    """Evaluate (all ranks share the encoding), log on rank 0, report to Ray with a checkpoint; per-item
    values are kept at the end and at the steps asked for (`keep_items`)."""
    spec = worker.spec
    result = evaluate(worker.model, worker.evaluators, distributed=spec.evaluation.distributed and worker.world > 1)
    metrics = {Report.STEP: step, **train_metrics}
    if result is not None:
        metrics |= result.metrics
    with tempfile.TemporaryDirectory() as tmp:
        saved = None
        if worker.rank == 0:
            assert worker.tracker is not None and result is not None
            worker.tracker.log_metrics(worker.run_id, {k: v for k, v in metrics.items() if k != Report.STEP}, step)
            if (final or keep_items) and result.per_query:
                worker.tracker.log_dict(worker.run_id, result.per_query, per_query_artifact(None if final else step))
            checkpoint.save(Path(tmp), worker.model, worker.loss, worker.optimizer, worker.scheduler, step, metrics)
            saved = tmp
        worker.session.report(metrics, saved)
