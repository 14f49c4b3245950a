"""Faults lose nothing: a killed worker resumes from its checkpoint, a killed driver resumes its sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from lossweep.sweep.tracking import Tracker


def ray_processes(name: str, session: int) -> list[int]:
    """PIDs of the processes whose command line contains `name` (e.g. a Ray Train worker) in the
    process session `session`: the local Ray a command started, not another test's."""
    out = subprocess.run(["ps", "-eo", "pid,sid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return [int(line.split()[0]) for line in out if name in line and int(line.split()[1]) == session]


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the command ended before {what}: {process.stdout.read()[-3000:]}")
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def registered_checkpoint(storage: Path) -> bool:
    """Whether Ray Train's controller has registered a checkpoint (one on disk may not be yet)."""
    return any("step_00000" in f.read_text() for f in storage.glob("*/checkpoint_manager_snapshot.json"))


def runs_with(client: MlflowClient, filter_string: str) -> list:
    try:
        return client.search_runs([e.experiment_id for e in client.search_experiments()], filter_string=filter_string)
    except Exception:  # the store is created by the command under test
        return []


def kill_when(command: list[str], ready, process: str, count: int, what: str) -> tuple[int, str]:
    """Run `command` in its own session; once `ready()` holds, SIGKILL the last of its `count` Ray
    processes named `process`. Its exit code and output, once it has finished."""
    running = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        wait_until(ready, 300, what, running)
        found = ray_processes(process, running.pid)
        assert len(found) == count, found
        os.kill(found[-1], signal.SIGKILL)
        output = running.communicate(timeout=600)[0]
    finally:
        if running.poll() is None:
            os.killpg(running.pid, signal.SIGKILL)
    return running.returncode, output


def assert_resumed_once(client: MlflowClient, run_id: str, metric: str, every: int, last: int) -> None:
    """One finished run, restarted once from a checkpoint at a multiple of `every`, with `metric`
    logged to step `last`; a step trained twice logged the same value twice."""
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["lossweep.restarts"] == "1"
    resumed = int(finished.data.tags["lossweep.resumed_from_step"])
    assert resumed >= every and resumed % every == 0
    history = client.get_metric_history(run_id, metric)
    assert history[-1].step == last
    values: dict[int, set] = {}
    for point in history:
        values.setdefault(point.step, set()).add(round(point.value, 9))
    assert all(len(v) == 1 for v in values.values()), values


def long_trial(name: str, data_dir, model: str, tmp_path, **changes) -> dict:
    """100 steps of MNRL on Cranfield, evaluated (and checkpointed) every 20: time to kill something."""
    return {
        "name": name,
        "data_dir": str(data_dir),
        "model": model,
        "train": {"path": "cranfield", "split": "train"},
        "eval": [{"type": "sts", "path": "stsbenchmark", "split": "test", "limit": 50, "name": "sts"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 16, "steps": 100, "learning_rate": 1e-4, "log_every_steps": 10},
        "evaluation": {"every_steps": 20, "at_start": False},
        "output_dir": str(tmp_path / "runs"),
    } | changes


@pytest.mark.slow
def test_killed_worker_restarts_from_its_checkpoint_in_the_same_run(data_dir, tiny_model_path, tmp_path):
    spec = long_trial("worker-dies", data_dir, tiny_model_path, tmp_path, resources={"workers": 2, "max_failures": 1})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = ["lossweep", "train", str(path), "--tracking-uri", uri]
    client = MlflowClient(uri)
    # Given a trial whose checkpoint Ray Train has registered (its snapshot names it)
    # When one Ray Train worker process is killed
    returncode, output = kill_when(
        command, lambda: registered_checkpoint(tmp_path / "runs"), "RayTrainWorker", 2, "a registered checkpoint"
    )
    # Then the trial resumed from its last checkpoint and finished, as one MLflow run
    assert returncode == 0, output[-3000:]
    runs = runs_with(client, "")
    assert len(runs) == 1
    # Steps after the checkpoint are trained again; a step logged twice has the same value twice.
    assert_resumed_once(client, runs[0].info.run_id, "eval/sts/spearman_cosine", every=20, last=100)


@pytest.mark.slow
def test_killed_trial_process_resumes_from_its_checkpoint_in_the_same_run(data_dir, tiny_model_path, tmp_path):
    """A 1-worker sweep trial trains in its Tune trial's process: Tune restarts it from its checkpoint."""
    sweep = {"mode": "search", "losses": ["MultipleNegativesRankingLoss"], "trials": 1, "scheduler": "none"}
    resources = {"workers": 1, "max_failures": 1}
    spec = long_trial("trial-dies", data_dir, tiny_model_path, tmp_path, resources=resources, sweep=sweep)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = ["lossweep", "sweep", str(path), "--tracking-uri", uri]
    client = MlflowClient(uri)
    # Given a trial with two checkpoints in its Tune folder (so Tune has registered the first)
    # When the trial's own process (Tune's actor, which trains it) is killed
    trial_dir = tmp_path / "runs" / "trial-dies" / "search"
    returncode, output = kill_when(
        command, lambda: list(trial_dir.glob("*/checkpoint_000001")), "ImplicitFunc", 1, "two checkpoints"
    )
    # Then Tune restarted it from its checkpoint, and it finished as one MLflow run
    assert returncode == 0, output[-3000:]
    children = runs_with(client, "tags.`lossweep.phase` = 'search'")
    assert len(children) == 1
    assert children[0].data.tags["lossweep.trial_state"] == "completed"
    assert_resumed_once(client, children[0].info.run_id, "eval/sts/spearman_cosine", every=20, last=100)


@pytest.mark.slow
def test_killed_driver_sweep_resumes_without_rerunning_or_duplicating(data_dir, tiny_model_path, tmp_path):
    spec = {
        "name": "driver-dies",
        "data_dir": str(data_dir),
        "model": tiny_model_path,
        "train": {"path": "snli", "split": "dev", "view": "triplets", "limit": 300},
        "eval": [{"type": "triplet", "path": "snli", "split": "test", "view": "triplets", "limit": 100, "name": "nli"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        # Trials of a few seconds (~0.05 s a step): the second is still training when the driver dies
        "training": {"batch_size": 16, "steps": 200, "learning_rate": 1e-3, "log_every_steps": 50},
        "evaluation": {"every_steps": 100, "at_start": False},
        "resources": {"workers": 1},
        "output_dir": str(tmp_path / "runs"),
        "sweep": {
            "mode": "search",
            "losses": ["MultipleNegativesRankingLoss", "TripletLoss"],
            "trials": 2,
            "scheduler": "none",
            "max_concurrent": 1,  # the second trial is still to run when the first has finished
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = ["lossweep", "sweep", str(path), "--tracking-uri", uri]
    client = MlflowClient(uri)

    # Given a sweep driver killed outright (with its local Ray) after a trial finished
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    done = wait_until(
        lambda: runs_with(client, "tags.`lossweep.trial_state` = 'completed' and attributes.status = 'FINISHED'"),
        600,
        "a finished trial",
        first,
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    wait_until(lambda: not ray_processes("raylet", first.pid), 60, "the old Ray to go")
    before = {
        r.info.run_id: (r.info.end_time, len(client.get_metric_history(r.info.run_id, "eval/nli/cosine_accuracy")))
        for r in done
    }

    # When it is resumed
    second = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    # Then every trial has exactly one child run, and the finished ones were left as they were
    parent = json.loads((Path(tmp_path) / "runs" / "driver-dies" / "sweep.json").read_text())["parent_run_id"]
    children = [r for r in Tracker(uri).children(parent) if r.data.tags["lossweep.phase"] == "search"]
    trial_ids = [r.data.tags["lossweep.trial_id"] for r in children]
    assert len(children) == 2 and len(set(trial_ids)) == 2
    assert all(r.data.tags["lossweep.trial_state"] == "completed" for r in children)
    for run_id, (end_time, points) in before.items():
        run = client.get_run(run_id)
        assert run.info.end_time == end_time
        assert len(client.get_metric_history(run_id, "eval/nli/cosine_accuracy")) == points
    assert client.get_run(parent).info.status == "FINISHED"
