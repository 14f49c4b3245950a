"""Checks that need the outside world (tracking server, disk, Ray cluster): run before any MLflow run
or Ray work is created, so a bad setting leaves nothing half-written behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import ray
import requests

from . import storage
from .cluster import ensure_ray
from .spec import Spec, SpecError
from .tracking import redact

# What MLflow's tracking stores accept ('' is a bare local path); see mlflow.tracking._tracking_service.
STORE_SCHEMES = (
    "",
    "file",
    "http",
    "https",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "databricks",
    "databricks-uc",
    "uc",
)


def preflight(spec: Spec, source: str, uri: str, ray_needed: bool = True) -> None:
    """Tracking store, output folder and capacity (of the Ray cluster, or of this machine when the run
    needs no Ray), checked before any run is created."""
    problems = tracking_problems(uri) + output_problems(spec)
    if not problems and ray_needed:
        ensure_ray()
        problems = capacity_problems(spec)
    elif not problems:
        problems = machine_problems(spec)
    if problems:
        raise SpecError(source, problems)


def machine_problems(spec: Spec) -> list[str]:
    """A worker that trains in this process must fit this machine's CPUs and GPUs."""
    import torch

    r, problems = spec.resources, []
    for name, wanted, have, field in (
        ("CPU", r.cpus_per_worker, os.cpu_count() or 1, "cpus_per_worker"),
        ("GPU", r.gpus_per_worker, torch.cuda.device_count(), "gpus_per_worker"),
    ):
        if wanted > have:
            problems.append(
                f"resources: {field}={wanted:g} needs {wanted:g} {name}s, but this machine has {have:g}; lower "
                f"resources.{field}, or join a larger cluster (RAY_ADDRESS)"
            )
    return problems


def tracking_problems(uri: str, field: str = "mlflow.tracking_uri") -> list[str]:
    """The MLflow store must be reachable (a server, within seconds) or creatable (a SQLite file);
    `field` names where the URI came from in the message."""
    parts = urlsplit(uri)
    if parts.scheme not in STORE_SCHEMES:
        return [
            f"{field}: {redact(uri)!r} is not an MLflow tracking store; use an MLflow server (http://host:5000), a "
            f"database (sqlite:///mlflow.db, postgresql://...) or a folder (file:///path)"
        ]
    if parts.scheme in ("http", "https"):
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as error:
            return [
                f"{field}: cannot reach the MLflow server at {redact(uri)} ({type(error).__name__}); "
                "start it (mlflow server --host 127.0.0.1) or fix the URI / MLFLOW_TRACKING_URI"
            ]
    elif parts.scheme == "sqlite":
        database = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
        if _in_job_copy(database):
            return [
                f"{field}: {database} is inside this Ray job's copy of the working directory, "
                "which Ray deletes; give an absolute sqlite path on shared disk or an MLflow server URL"
            ]
        if not _writable(database.parent):
            return [f"{field}: cannot write the SQLite store {database} (read-only folder); choose another path"]
    return []


def output_problems(spec: Spec) -> list[str]:
    """output_dir must take files: a probe file in a bucket, a writable local folder that outlives the job."""
    if storage.is_uri(spec.output_dir):
        problem = storage.writable_problem(spec.output_dir)
        if problem:
            return [f"output_dir: cannot write to {spec.output_dir} ({problem}); check the bucket and its credentials"]
        return []
    folder = Path(spec.output_dir).expanduser()
    if _in_job_copy(folder.resolve()):
        return [
            f"output_dir: {folder} is inside this Ray job's copy of the working directory, which Ray deletes "
            "when the job ends; give a URI (s3://bucket/runs) or an absolute path on shared disk"
        ]
    if not _writable(folder):
        return [f"output_dir: {folder} is not writable (checkpoints go there); choose a writable folder"]
    return []


def _in_job_copy(path: Path) -> bool:
    """Under the folder where `ray job submit --working-dir` unpacks a job's files (relative paths land there)."""
    return "runtime_resources" in path.parts and any(p.startswith("working_dir_files") for p in path.parts)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def capacity_problems(spec: Spec) -> list[str]:
    """Ray Train would wait forever for workers a local cluster cannot place; say so instead.

    On a remote cluster (RAY_ADDRESS) the autoscaler may add nodes, so nothing is refused there.
    """
    if os.environ.get("RAY_ADDRESS") or not ray.is_initialized():
        return []
    r = spec.resources
    have = ray.cluster_resources()
    problems = []
    for name, per_worker, field in (
        ("CPU", r.cpus_per_worker, "cpus_per_worker"),
        ("GPU", r.gpus_per_worker, "gpus_per_worker"),
    ):
        need = r.workers * per_worker
        if need > have.get(name, 0):
            problems.append(
                f"resources: workers={r.workers} x {field}={per_worker:g} needs {need:g} {name}s per trial, but this "
                f"Ray cluster has {have.get(name, 0):g}; lower resources.workers or {field}, or join a larger cluster "
                "(RAY_ADDRESS)"
            )
    return problems
