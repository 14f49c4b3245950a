"""Work that runs as one Ray task with the resources of one training worker (its GPU, when the spec
asks for GPUs): scoring a model nobody trains here (the untrained baseline, a finished trial's
checkpoint) and mining hard negatives."""

from __future__ import annotations

from typing import Any

import ray

from . import negatives, storage
from .cluster import ensure_ray
from .evaluate import PER_QUERY_ARTIFACT, build_evaluators, evaluate
from .inputs import mining_input, negatives_dir, train_pairs
from .metrics import metric_name
from .models import load_model
from .spec import Spec, parse_spec
from .tracking import Tracker, worker_tracking_uri


def _on_one_worker(spec: Spec, function):
    resources = spec.resources
    return ray.remote(function).options(
        num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker, max_retries=1
    )


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _score(spec_data: dict, model: str, sets: list[str], tracking_uri: str, run_id: str, step: int) -> dict:
    spec = parse_spec(spec_data)
    if storage.is_uri(model):  # a checkpoint in a bucket
        model = str(storage.local_copy(model))
    loaded = load_model(model, device=_device())
    if spec.max_seq_length:
        loaded.max_seq_length = spec.max_seq_length
    result = evaluate(loaded, build_evaluators(spec, sets), distributed=False)
    tracker = Tracker(tracking_uri)
    tracker.log_metrics(run_id, result.metrics, step)
    if result.per_query:
        tracker.log_dict(run_id, result.per_query, PER_QUERY_ARTIFACT)
    return result.metrics


def _untrained(spec_data: dict, sets: list[str]) -> dict[str, dict[str, Any]]:
    spec = parse_spec(spec_data)
    loaded = load_model(spec.model, device=_device())
    if spec.max_seq_length:
        loaded.max_seq_length = spec.max_seq_length
    result = evaluate(loaded, build_evaluators(spec, sets), distributed=False)
    out: dict[str, dict[str, Any]] = {}
    for name in sets:
        prefix = metric_name(name, "")
        out[name] = {
            "metrics": {k: v for k, v in result.metrics.items() if k.startswith(prefix)},
            "per_query": {k: v for k, v in result.per_query.items() if k.startswith(prefix)},
        }
    return out


def score_untrained(spec: Spec, sets: list[str]) -> dict[str, dict[str, Any]]:
    """The untrained model's metrics and per-query values on the named eval sets, by set (a Ray task
    with one worker's resources; `untrained.py` caches what it returns)."""
    ensure_ray()
    return ray.get(_on_one_worker(spec, _untrained).remote(spec.to_dict(), sets))


def start_scoring(spec: Spec, model: str, sets: list[str], tracking_uri: str, run_id: str, step: int) -> ray.ObjectRef:
    """Start scoring `model` (a model reference or a checkpoint's model folder) on the named eval sets;
    `ray.get` of the returned reference gives the metrics, once they are logged to `run_id`."""
    ensure_ray()
    task = _on_one_worker(spec, _score)
    return task.remote(spec.to_dict(), model, sets, worker_tracking_uri(tracking_uri), run_id, step)


def _mine(spec_data: dict, directory: str) -> dict:
    spec = parse_spec(spec_data)
    knobs = negatives.knobs(spec)
    model = load_model(knobs.model, device=_device())
    if spec.max_seq_length:
        model.max_seq_length = spec.max_seq_length
    return negatives.mine(mining_input(spec, train_pairs(spec)), knobs, model, directory)


def mine_negatives(spec: Spec) -> tuple[str, dict[str, Any], bool]:
    """The cache folder of the negatives the spec asks for, their summary, and whether they were mined
    now (False: an earlier run mined them with the same data, model and knobs)."""
    directory = negatives_dir(spec, mining_input(spec, train_pairs(spec)))
    summary = negatives.read_summary(directory)
    if summary is not None:
        return directory, summary, False
    ensure_ray()
    summary = ray.get(_on_one_worker(spec, _mine).remote(spec.to_dict(), str(directory)))
    return directory, summary, True
