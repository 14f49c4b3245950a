"""How users run lossweep: `ray job submit` to a running cluster, export the winner, read MLflow in a browser.

One local Ray head (127.0.0.1) receives a tiny sweep through the job API; the tests then export its
best model and drive headless Chromium through the MLflow UI over the same store.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sentence_transformers import SentenceTransformer

from lossweep.sweep.tracking import active_uri

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # what the submitting checkout would pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 240, server: subprocess.Popen | None = None) -> None:
    """Wait for `url` to answer; fail at once if the `server` meant to answer it has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert server is None or server.poll() is None, f"the server for {url} exited with {server.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers (the job API asks for Ray's auth token)
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout}s")


@pytest.fixture(scope="session")  # session: submitted once even if other tests run in between
def submitted(tmp_path_factory, data_dir, tiny_model_path):
    """A Ray head on 127.0.0.1, a sweep submitted to it with `ray job submit`, its logs; the head
    is stopped before the tests read the results (they only need the MLflow store)."""
    root = tmp_path_factory.mktemp("cluster")
    job_dir = root / "job"
    job_dir.mkdir()
    uri = f"sqlite:///{root}/mlflow.db"
    spec = {
        "name": "job-sweep",
        "data_dir": str(data_dir),
        "model": tiny_model_path,
        "train": {"path": "snli", "split": "dev", "view": "triplets", "limit": 300},
        "eval": [{"type": "triplet", "path": "snli", "split": "test", "view": "triplets", "limit": 100, "name": "nli"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 16, "steps": 4, "learning_rate": 1e-3},
        "evaluation": {"every_steps": 2, "at_start": False},
        "resources": {"workers": 1},
        "output_dir": str(root / "runs"),
        "mlflow": {"experiment": "jobs", "tracking_uri": uri},
        "sweep": {
            "mode": "search",
            "losses": ["MultipleNegativesRankingLoss", "TripletLoss"],
            "trials": 2,
            "max_concurrent": 2,
            "scheduler": "none",
        },
    }
    (job_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    dashboard = free_port()
    # Ray 2.60 clusters authenticate with a token; the head and the job client share this one. The
    # head keeps its session files (and its address file) in its own temp dir, so nothing it leaves
    # behind is mistaken for a running cluster by later tests.
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")  # short: Ray's unix sockets live here
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={free_port()}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            # Its own agent port: another Ray on this machine (this test session's) holds the default.
            f"--dashboard-agent-listen-port={free_port()}",
        ],
        env=env,
        stdout=(root / "head.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        address = f"http://127.0.0.1:{dashboard}"
        try:
            wait_for_http(f"{address}/api/version")
        except AssertionError as e:
            raise AssertionError(f"{e}; `ray start` printed:\n{(root / 'head.log').read_text()[-3000:]}") from None
        # The job API answers before the head's job agent is up: Ray says so, and asks to retry.
        for _ in range(20):
            job = subprocess.run(
                [
                    "ray",
                    "job",
                    "submit",
                    "--address",
                    address,
                    "--working-dir",
                    str(job_dir),
                    "--submission-id",
                    "lossweep-test",
                    # The working dir is copied without .git: the submitting checkout's commit travels along.
                    "--runtime-env-json",
                    json.dumps({"env_vars": {"LOSSWEEP_GIT_COMMIT": COMMIT, "LOSSWEEP_GIT_DIRTY": "true"}}),
                    "--",
                    "lossweep",
                    "sweep",
                    "spec.yaml",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if "No available agent to submit job" not in job.stderr:
                break
            time.sleep(3)
        logs = subprocess.run(
            ["ray", "job", "logs", "--address", address, "lossweep-test"], env=env, capture_output=True, text=True
        )
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops the head's processes on SIGTERM
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it waits ~30 s on stragglers: its services share its group
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)
    return {"uri": uri, "job": job, "logs": logs.stdout, "root": root}


@pytest.mark.slow
def test_ray_job_submit_runs_the_sweep_into_the_configured_store(submitted):
    job = submitted["job"]
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "Job 'lossweep-test' succeeded" in job.stdout + job.stderr
    assert "leaderboard: search" in submitted["logs"] and "this run:" in submitted["logs"]
    client = MlflowClient(submitted["uri"])
    experiment = client.get_experiment_by_name("jobs")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lossweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["lossweep.phase"] for r in children) == ["baseline", "search", "search"]
    for run in [parents[0], *children]:  # the driver's provenance, on every run it created
        assert (run.data.tags["lossweep.git_commit"], run.data.tags["lossweep.git_dirty"]) == (COMMIT, "true")
    # Artifacts live beside the database, not in Ray's temporary copy of the working dir.
    assert experiment.artifact_location == (submitted["root"] / "mlartifacts").as_uri()
    assert (submitted["root"] / "mlartifacts").is_dir()


@pytest.mark.slow
def test_export_writes_a_loadable_model_with_a_card_and_logs_it_to_mlflow(submitted, tmp_path):
    out = tmp_path / "best-model"
    result = subprocess.run(
        ["lossweep", "export", "job-sweep", str(out), "--tracking-uri", submitted["uri"]],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = SentenceTransformer(str(out), device="cpu")
    assert model.encode(["a sentence"]).shape == (1, 32)
    card = (out / "README.md").read_text()
    client = MlflowClient(submitted["uri"])
    parent = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("jobs").experiment_id])
        if r.data.tags.get("lossweep.role") == "sweep"
    )
    best = client.get_run(parent.data.tags["lossweep.best_run_id"])
    assert best.data.params["loss.name"] in card and "library_name: sentence-transformers" in card
    for key, value in best.data.params.items():
        if key.startswith("loss.params."):
            assert f"| {key.removeprefix('loss.')} | {value} |" in card
    model_uri = re.search(r"logged to MLflow: (\S+)", result.stdout).group(1)
    with active_uri(submitted["uri"]):
        logged = mlflow.sentence_transformers.load_model(model_uri)
    assert (logged.encode(["a sentence"]) == model.encode(["a sentence"])).all()
    assert (
        subprocess.run(
            ["lossweep", "export", "job-sweep", str(out), "--tracking-uri", submitted["uri"]],
            capture_output=True,
            text=True,
        ).returncode
        == 2
    )  # never overwrites a folder: refused


@pytest.mark.slow
def test_mlflow_ui_shows_the_sweep_in_headless_chromium(submitted):
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen(
        ["mlflow", "server", "--backend-store-uri", submitted["uri"], "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = MlflowClient(submitted["uri"])
    experiment = client.get_experiment_by_name("jobs").experiment_id
    runs = client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags.get("lossweep.role") == "sweep")
    child_names = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base, server=server)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            # README's walkthrough in a fresh browser (a new context: no stored UI settings). MLflow 3
            # opens on GenAI; the "Model training" switch, then the experiment, gives the runs table.
            page = browser.new_context(viewport={"width": 1500, "height": 900}).new_page()
            page.goto(base)
            page.get_by_text("Model training").first.click()
            page.get_by_text("jobs", exact=True).first.click()
            page.get_by_text("job-sweep").first.wait_for(timeout=60_000)
            assert "/runs" in page.url and "workflowType=machine_learning" in page.url, page.url
            # The sweep's parent run, expanded to its child runs, each with its training data set.
            page.locator("[role=row]", has_text="job-sweep").first.locator("button").first.click()
            for name in child_names:
                page.get_by_text(name[:20]).first.wait_for(timeout=30_000)
            page.get_by_text("snli (split dev, view triplets)").first.wait_for(timeout=30_000)
            page.screenshot(path=SCREENSHOTS / "mlflow-sweep-runs.png")
            # The direct link a sweep prints ends on the same table, from a fresh browser too.
            fresh = browser.new_context(viewport={"width": 1500, "height": 900}).new_page()
            fresh.goto(f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning")
            fresh.get_by_text("job-sweep").first.wait_for(timeout=60_000)
            assert fresh.get_by_text("Training runs").count() + fresh.get_by_text("Runs").count() > 0
            # The parent run's artifacts: the leaderboard, rendered.
            page.goto(f"{base}/#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts")
            page.get_by_text("leaderboard.csv").first.wait_for(timeout=60_000)
            page.get_by_text("leaderboard.md").first.click()
            page.get_by_text("Leaderboard (search").first.wait_for(timeout=30_000)
            page.screenshot(path=SCREENSHOTS / "mlflow-sweep-leaderboard.png")
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert (SCREENSHOTS / "mlflow-sweep-runs.png").stat().st_size > 10_000
