"""Process-wide state lossweep touches: a `ray start` address left behind, MLflow's active tracking URI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow
import pytest

import lossweep.sweep.cluster as cluster
from lossweep.sweep.tracking import active_uri


def test_a_ray_start_address_is_joined_only_while_it_answers(monkeypatch):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        monkeypatch.setattr(cluster, "read_ray_address", lambda temp_dir: address)
        assert cluster._started_cluster_answers()
    # The head is gone but its address file stays: start a local Ray rather than hang joining it.
    assert not cluster._started_cluster_answers()
    monkeypatch.setattr(cluster, "read_ray_address", lambda temp_dir: None)
    assert not cluster._started_cluster_answers()


def test_active_uri_puts_the_tracking_uri_and_its_variable_back(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with active_uri(f"sqlite:///{tmp_path}/a.db"):
        assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/a.db"
        assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/a.db"
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/user.db")
    with active_uri(f"sqlite:///{tmp_path}/b.db"):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/user.db"
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/user.db"


@pytest.mark.slow
def test_a_local_ray_reaches_its_own_state_api_beside_another_ray(ray_local, tmp_path):
    # Given this session's Ray, a second local Ray started by lossweep: a task in it asks Ray's state
    # API for the nodes (as Ray Train's placement-group cleaner does for its controller). Without the
    # API address, Ray looks for GCS processes, finds two and refuses: stopped trials keep their CPUs.
    script = """
import ray
from ray.util.state import list_nodes
from lossweep.sweep.cluster import ensure_ray
ensure_ray()
@ray.remote
def nodes():
    return [n.node_id for n in list_nodes()]
print("OWN", ray.get_runtime_context().get_node_id())
print("SEEN", *ray.get(nodes.remote()))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("OWN", "SEEN")))
    assert lines["SEEN"].split() == [lines["OWN"]]
