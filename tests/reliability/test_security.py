"""Security basics: credentials stay in the environment, local services listen on 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lossweep.sweep.spec import parse_spec
from lossweep.sweep.tracking import flatten, redact


def test_credentials_in_a_tracking_uri_are_redacted_from_logged_params():
    spec = parse_spec(
        {
            "name": "x",
            "train": {"path": "cranfield"},
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "training": {"steps": 1},
            "mlflow": {"tracking_uri": "https://alice:hunter2@mlflow.example.com:8443/path"},
        }
    )
    data = spec.to_dict()
    data["mlflow"]["tracking_uri"] = redact(data["mlflow"]["tracking_uri"])
    params = flatten(data)
    assert params["mlflow.tracking_uri"] == "https://***@mlflow.example.com:8443/path"
    assert not any("hunter2" in value or "alice" in value for value in params.values())


@pytest.mark.slow
def test_tracking_password_from_the_environment_appears_nowhere_in_the_store(data_dir, tiny_model_path, tmp_path):
    secret = "s3cr3t-" + os.urandom(8).hex()
    spec = {
        "name": "credentials",
        "data_dir": str(data_dir),
        "model": tiny_model_path,
        "train": {"path": "cranfield", "split": "train", "limit": 300},
        "eval": [{"type": "sts", "path": "stsbenchmark", "split": "test", "limit": 50, "name": "sts"}],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 16, "steps": 2},
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = dict(
        os.environ, MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=secret, MLFLOW_TRACKING_TOKEN=secret
    )
    store = tmp_path / "store"
    store.mkdir()
    result = subprocess.run(
        ["lossweep", "train", str(path), "--tracking-uri", f"sqlite:///{store}/mlflow.db"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name == "spec.yaml" for p in files) and any(p.name == "mlflow.db" for p in files)
    for file in files:
        assert secret.encode() not in file.read_bytes(), f"the password leaked into {file}"


@pytest.mark.slow
def test_a_local_ray_serves_its_dashboard_and_job_api_on_loopback_with_a_token(tmp_path):
    # A fresh process: lossweep starts its own local Ray, then reports what its HTTP API listens on.
    # (Ray's internal gRPC ports listen on every interface by Ray's design; Ray 2.60 guards them and the
    # job API with its cluster token, which this test also checks.)
    script = """
import subprocess, urllib.request, urllib.error
from lossweep.sweep.cluster import ensure_ray
context = ensure_ray()
print("DASHBOARD", context.dashboard_url)
print(subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout)
try:
    urllib.request.urlopen("http://" + context.dashboard_url + "/api/jobs/", timeout=10)
    print("JOBS open")
except urllib.error.HTTPError as error:
    print("JOBS", error.code)
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dashboard = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("DASHBOARD"))
    port = dashboard.rsplit(":", 1)[1]
    assert dashboard.startswith("127.0.0.1:")
    listeners = [line.split()[3] for line in result.stdout.splitlines() if line.startswith("LISTEN")]
    assert [a for a in listeners if a.endswith(f":{port}")] == [f"127.0.0.1:{port}"]
    assert "JOBS 401" in result.stdout  # no token, no job API


def test_readme_commands_bind_servers_to_localhost():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1" in readme
    assert "0.0.0.0" not in readme
