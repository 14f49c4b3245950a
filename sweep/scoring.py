"""Scoring a model nobody trains here: the untrained baseline, or a finished trial's checkpoint.

Both run as one Ray task with the resources of one training worker (its GPU, when the spec asks for
GPUs), log their metrics and per-item values to an MLflow run, and return the metrics.
"""

from __future__ import annotations

from typing import Any

import ray

from .evaluate import PER_QUERY_ARTIFACT, build_evaluators, evaluate
from .models import load_model
from .spec import Spec, parse_spec
from .tracking import Tracker, worker_tracking_uri


def _score(spec_data: dict, model: str, sets: list[str], tracking_uri: str, run_id: str, step: int) -> dict:
    import torch

    spec = parse_spec(spec_data)
    loaded = load_model(model, device="cuda" if torch.cuda.is_available() else "cpu")
    if spec.max_seq_length:
        loaded.max_seq_length = spec.max_seq_length
    result = evaluate(loaded, build_evaluators(spec, sets), distributed=False)
    tracker = Tracker(tracking_uri)
    tracker.log_metrics(run_id, result.metrics, step)
    if result.per_query:
        tracker.log_dict(run_id, result.per_query, PER_QUERY_ARTIFACT)
    return result.metrics


def score_model(spec: Spec, model: str, sets: list[str], tracking_uri: str, run_id: str, step: int) -> dict[str, Any]:
    """Score `model` (a model reference or a checkpoint's model folder) on the named eval sets."""
    resources = spec.resources
    task = ray.remote(_score).options(
        num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker, max_retries=1
    )
    return ray.get(task.remote(spec.to_dict(), model, sets, worker_tracking_uri(tracking_uri), run_id, step))
