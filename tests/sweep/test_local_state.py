"""Process-wide state lossweep touches: a `ray start` address left behind, MLflow's active tracking URI."""

from __future__ import annotations

import os
import socket

import mlflow

import lossweep.sweep.train as trainer
from lossweep.sweep.tracking import active_uri


def test_a_ray_start_address_is_joined_only_while_it_answers(monkeypatch):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        monkeypatch.setattr(trainer, "read_ray_address", lambda temp_dir: address)
        assert trainer._started_cluster_answers()
    # The head is gone but its address file stays: start a local Ray rather than hang joining it.
    assert not trainer._started_cluster_answers()
    monkeypatch.setattr(trainer, "read_ray_address", lambda temp_dir: None)
    assert not trainer._started_cluster_answers()


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
