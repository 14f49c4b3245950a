"""Beyond one machine: sweeps whose files live in an S3 bucket, trials that span Ray nodes and survive
losing one, and an MLflow server on PostgreSQL with artifacts in the bucket that keeps every number.

The module starts (and stops) its servers on 127.0.0.1: moto's S3 server, PostgreSQL (as its own
user when the tests run as root) and `mlflow server` on them; Ray nodes are started per test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from sentence_transformers import SentenceTransformer

from lossweep.sweep import storage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import BUCKET, RayCluster, mlflow_server, postgres_server, s3_server, wait_for  # noqa: E402

SELECTION = "eval/nli/cosine_accuracy"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def tracking_server(s3, tmp_path_factory):
    """MLflow on PostgreSQL, artifacts proxied into the bucket: cluster.yaml's head command, as written."""
    with postgres_server() as database:
        artifacts = f"s3://{BUCKET}/mlartifacts"
        command = cluster_mlflow_command()
        with mlflow_server(command, database, artifacts, s3.env, tmp_path_factory.mktemp("mlflow")) as url:
            yield url


def cluster_mlflow_command() -> str:
    """The `mlflow server ...` part of cluster.yaml's head start commands."""
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "cluster.yaml").read_text())
    line = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    return re.search(r"mlflow server[^>&]*", line).group(0)


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def spec_for(data_dir, model, name: str, output_dir: str, **changes) -> dict:
    spec = {
        "name": name,
        "data_dir": str(data_dir),
        "model": model,
        "train": {"path": "snli", "split": "dev", "view": "triplets", "limit": 300},
        "eval": [{"type": "triplet", "path": "snli", "split": "test", "view": "triplets", "limit": 100, "name": "nli"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 16, "steps": 4, "learning_rate": 1e-3},
        "evaluation": {"every_steps": 2, "at_start": False},
        "resources": {"workers": 1},
        "output_dir": output_dir,
        "sweep": {
            "mode": "search",
            "losses": ["MultipleNegativesRankingLoss", "TripletLoss"],
            "trials": 2,
            "scheduler": "none",
            "max_concurrent": 1,
        },
    }
    for section, value in changes.items():  # train and eval are replaced, other sections updated
        spec[section] = spec.get(section, {}) | value if section not in ("train", "eval") else value
    return spec


def children(client: MlflowClient, parent: str) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    return [r for r in runs if r.data.tags.get("lossweep.phase") == "search"]


def completed(client: MlflowClient) -> list:
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(
            experiments, filter_string="tags.`lossweep.trial_state` = 'completed' and attributes.status = 'FINISHED'"
        )
    except Exception:  # the store is created by the command under test
        return []


def test_storage_reads_and_writes_a_bucket_like_a_folder(s3_env, tmp_path):
    base = f"s3://{BUCKET}/unit"
    storage.write_text(storage.join(base, "a", "state.json"), '{"x": 1}')
    assert storage.read_text(f"{base}/a/state.json") == '{"x": 1}' and storage.exists(f"{base}/a")
    assert storage.read_text(f"{base}/missing.json") is None
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "w.bin").write_bytes(b"\x00\x01")
    storage.upload(tmp_path / "folder", f"{base}/copied")
    local = storage.local_copy(f"{base}/copied", cache=tmp_path / "cache")
    assert (local / "w.bin").read_bytes() == b"\x00\x01"
    assert storage.as_uri(base, f"{BUCKET}/unit/x") == f"s3://{BUCKET}/unit/x"
    assert storage.writable_problem(base) is None
    assert storage.writable_problem("s3://no-such-bucket/runs") is not None


@pytest.mark.slow
def test_a_sweep_in_a_bucket_resumes_after_its_driver_is_killed_and_exports_from_it(
    s3, s3_env, data_dir, tiny_model_path, tmp_path
):
    output = f"s3://{BUCKET}/runs"
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    # Trials of a few seconds (~0.05 s a step): the second is still training when the driver dies
    spec = spec_for(
        data_dir,
        tiny_model_path,
        "in-a-bucket",
        output,
        training={"steps": 200, "log_every_steps": 50},
        evaluation={"every_steps": 100},
    )
    for folder in (first_dir, second_dir):
        folder.mkdir()
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)

    # Given a sweep writing to the bucket whose driver is killed (with its local Ray) after one trial
    first = subprocess.Popen(
        ["lossweep", "sweep", "spec.yaml", "--tracking-uri", uri],
        cwd=first_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: completed(client) or first.poll() is not None, 600, "a finished trial")
        assert first.poll() is None, first.stdout.read()[-3000:]
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    done = {r.info.run_id: r.info.end_time for r in completed(client)}

    # When it is resumed from another folder (as from another machine, or a job's working-dir copy)
    second = subprocess.run(
        ["lossweep", "sweep", "spec.yaml", "--tracking-uri", uri, "--resume"],
        cwd=second_dir,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "starting it" not in second.stdout  # it found the sweep's state in the bucket

    # Then the state, the Tune experiment and the checkpoints are in the bucket, nothing on local disk
    keys = s3.keys("runs/in-a-bucket/")  # the sweep's folder: its state and Tune's experiment, whose
    # 1-worker trials keep their checkpoints in their trial folders; once finished, their final model only
    assert "runs/in-a-bucket/sweep.json" in keys and any(k.startswith("runs/in-a-bucket/search/") for k in keys)
    assert any("/checkpoint_" in k and "/model/" in k for k in keys), keys[:20]
    assert not [k for k in keys if "/checkpoint_" in k and k.endswith(("state.pt", "weights.safetensors"))]
    assert not (first_dir / "runs").exists() and not (second_dir / "runs").exists()
    parent = json.loads(storage.read_text(f"{output}/in-a-bucket/sweep.json"))["parent_run_id"]
    runs = children(client, parent)
    assert len(runs) == 2 and all(r.data.tags["lossweep.trial_state"] == "completed" for r in runs)
    assert all(r.data.tags["lossweep.checkpoint"].startswith(f"s3://{BUCKET}/runs/in-a-bucket") for r in runs)
    for run_id, end_time in done.items():
        assert client.get_run(run_id).info.end_time == end_time  # the finished trial was not rerun

    # And the winner exports from the bucket into a folder that loads
    out = tmp_path / "exported"
    exported = subprocess.run(
        ["lossweep", "export", "in-a-bucket", str(out), "--tracking-uri", uri, "--no-mlflow"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    assert SentenceTransformer(str(out), device="cpu").encode(["a sentence"]).shape[1] > 0


@pytest.mark.slow
def test_a_two_node_trial_loses_a_node_and_restarts_from_its_checkpoint_in_the_bucket(
    s3, s3_env, tracking_server, data_dir, tiny_model_path, tmp_path
):
    # Two nodes of 1 CPU each: a trial of 2 workers x 1 CPU spans both.
    cluster = RayCluster(tmp_path, s3.env)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    spec = spec_for(
        data_dir,
        tiny_model_path,
        "two-nodes",
        f"s3://{BUCKET}/runs",
        train={"path": "cranfield", "split": "train"},
        eval=[{"type": "sts", "path": "stsbenchmark", "split": "test", "limit": 50, "name": "sts"}],
        training={"batch_size": 16, "steps": 100, "learning_rate": 1e-4, "log_every_steps": 10},
        evaluation={"every_steps": 10, "at_start": False},
        resources={"workers": 2, "cpus_per_worker": 1, "max_failures": 2},
        mlflow={"experiment": "two-nodes", "tracking_uri": tracking_server},
        sweep={"losses": ["MultipleNegativesRankingLoss"], "trials": 1, "scheduler": "none"},
    )
    (job_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    client = MlflowClient(tracking_server)
    try:
        cluster.start_head(cpus=1)
        cluster.add_node("node-1", cpus=1)
        job = submit(cluster, job_dir, "two-nodes")
        # Given a 2-worker trial that has a checkpoint in the bucket
        ended = ("SUCCEEDED", "FAILED", "STOPPED")
        wait_for(
            lambda: (
                job_status(cluster, job) in ended
                or any(
                    k.endswith("checkpoint_manager_snapshot.json") and "step_" in _text(s3, k)
                    for k in s3.keys("runs/two-nodes-")  # Ray Train's run of trial t: <output_dir>/<name>-<t>
                )
            ),
            900,
            "a registered checkpoint in the bucket",
            tmp_path / "head.log",
        )
        assert job_status(cluster, job) not in ended, job_logs(cluster, job)
        # When its second node dies (raylet and worker), and a replacement node joins later
        cluster.kill("node-1")
        time.sleep(5)
        cluster.add_node("node-2", cpus=1)
        status = wait_for(lambda: next((s for s in [job_status(cluster, job)] if s in ended), None), 900, "the job")
        assert status == "SUCCEEDED", job_logs(cluster, job)
        logs = job_logs(cluster, job)
    finally:
        cluster.stop()
    # Then the trial restarted from its checkpoint in the bucket and finished, as one MLflow run
    parent = json.loads(storage.read_text(f"s3://{BUCKET}/runs/two-nodes/sweep.json") or "{}")["parent_run_id"]
    runs = children(client, parent)
    assert len(runs) == 1
    run = client.get_run(runs[0].info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["lossweep.trial_state"] == "completed", (run.data.tags, logs)
    assert int(run.data.tags["lossweep.restarts"]) >= 1
    assert int(run.data.tags["lossweep.resumed_from_step"]) >= 10
    history = client.get_metric_history(run.info.run_id, "eval/sts/spearman_cosine")
    assert history[-1].step == 100


def job_logs(cluster: RayCluster, job: str) -> str:
    command = ["ray", "job", "logs", "--address", cluster.dashboard, job]
    return subprocess.run(command, env=cluster.env, capture_output=True, text=True).stdout[-3000:]


def _text(s3, key: str) -> str:
    return storage.read_text(f"s3://{BUCKET}/{key}") or ""


def submit(cluster: RayCluster, job_dir: Path, name: str) -> str:
    for _ in range(30):  # the job API answers before the head's job agent is up; Ray asks to retry
        result = subprocess.run(
            [
                "ray",
                "job",
                "submit",
                "--address",
                cluster.dashboard,
                "--working-dir",
                str(job_dir),
                "--submission-id",
                name,
                "--no-wait",
                "--",
                "lossweep",
                "sweep",
                "spec.yaml",
            ],
            env=cluster.env,
            capture_output=True,
            text=True,
        )
        if result.returncode == 0:
            return name
        time.sleep(3)
    raise AssertionError(result.stdout[-2000:] + result.stderr[-2000:])


def job_status(cluster: RayCluster, job: str) -> str:
    """The job's status ("RUNNING", "SUCCEEDED"...) from the Jobs REST API: cheap enough to poll."""
    request = urllib.request.Request(
        f"{cluster.dashboard}/api/jobs/{job}", headers={"Authorization": f"Bearer {cluster.env['RAY_AUTH_TOKEN']}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["status"]
    except (OSError, ValueError, KeyError):
        return ""


@pytest.mark.slow
def test_the_tracking_server_keeps_every_number_of_eight_concurrent_trials_and_a_report(
    s3, s3_env, tracking_server, data_dir, tiny_model_path, tmp_path
):
    spec = spec_for(
        data_dir,
        tiny_model_path,
        "under-load",
        f"s3://{BUCKET}/runs",
        resources={"workers": 1, "cpus_per_worker": 0.25},
        mlflow={"experiment": "under-load", "tracking_uri": tracking_server},
        sweep={"losses": ["MultipleNegativesRankingLoss", "TripletLoss"], "trials": 8, "max_concurrent": 8},
    )
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    # Given a sweep of 8 trials at once against the PostgreSQL-backed server, with reports beside it
    sweep = subprocess.Popen(
        ["lossweep", "sweep", "spec.yaml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    reports: list[subprocess.CompletedProcess] = []

    def report_while_it_runs() -> None:
        while sweep.poll() is None:
            reports.append(
                subprocess.run(
                    ["lossweep", "report", "under-load", "--tracking-uri", tracking_server],
                    capture_output=True,
                    text=True,
                )
            )
            time.sleep(2)

    reporter = threading.Thread(target=report_while_it_runs)
    reporter.start()
    output = sweep.communicate(timeout=1500)[0]
    reporter.join()
    assert sweep.returncode == 0, output[-3000:]
    # Then no report failed for any reason but "not there yet" (before the sweep's parent run exists)
    failed = [r for r in reports if r.returncode != 0 and "no sweep named" not in r.stderr]
    assert reports and not failed, failed[0].stdout[-2000:] + failed[0].stderr[-2000:] if failed else ""
    final = subprocess.run(
        ["lossweep", "report", "under-load", "--tracking-uri", tracking_server], capture_output=True, text=True
    )
    assert final.returncode == 0 and "leaderboard" in final.stdout, final.stdout[-2000:] + final.stderr[-2000:]

    # And every trial's params, metric points and artifacts are in the store and the bucket (counted)
    client = MlflowClient(tracking_server)
    parent = json.loads(storage.read_text(f"s3://{BUCKET}/runs/under-load/sweep.json"))["parent_run_id"]
    runs = children(client, parent)
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    counts = {"params": 0, "metric points": 0, "artifacts": 0}
    for run in runs:
        params = client.get_run(run.info.run_id).data.params
        assert {"loss.name", "training.steps", "training.learning_rate"} <= set(params), sorted(params)[:10]
        counts["params"] += len(params)
        history = client.get_metric_history(run.info.run_id, SELECTION)
        assert [p.step for p in history] == [2, 4], history  # every evaluation, once
        for key in client.get_run(run.info.run_id).data.metrics:
            counts["metric points"] += len(client.get_metric_history(run.info.run_id, key))
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "spec.yaml" in artifacts, artifacts
        in_bucket = s3.keys(f"mlartifacts/{run.info.experiment_id}/{run.info.run_id}/")
        assert len(in_bucket) >= len(artifacts), (artifacts, in_bucket)
        counts["artifacts"] += len(in_bucket)
    print("load test counts:", counts)
    (tmp_path / "counts.json").write_text(json.dumps(counts))
