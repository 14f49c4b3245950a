"""cluster.yaml is a valid Ray cluster-launcher config (Ray's own schema, offline) for GPU sweeps."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import ray
import yaml
from jsonschema.exceptions import ValidationError

# No public API validates a cluster-launcher config offline; `ray up` itself calls these two.
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = yaml.safe_load((Path(__file__).resolve().parents[2] / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_autoscaler_schema():
    validate_config(prepare_config(copy.deepcopy(CLUSTER)))


def test_schema_rejects_a_broken_copy():
    broken = copy.deepcopy(CLUSTER)
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "none"
    with pytest.raises(ValidationError, match="'none' is not of type 'integer'"):
        validate_config(prepare_config(broken))


def test_gpu_workers_and_the_lossweep_install_are_declared():
    nodes = CLUSTER["available_node_types"]
    gpu = nodes["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["resources"]["CPU"] >= 1 and gpu["max_workers"] >= 1
    assert nodes[CLUSTER["head_node_type"]]["resources"]["GPU"] == 0  # no training on the head
    assert CLUSTER["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    assert any("pip install" in c and "/home/ray/lossweep" in c for c in CLUSTER["setup_commands"])
    assert CLUSTER["file_mounts"]["/home/ray/lossweep"] == "."
    head_start = " ".join(CLUSTER["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "mlflow server" in head_start


def test_the_tracking_store_and_checkpoints_live_outside_the_cluster():
    head_start = " ".join(CLUSTER["head_start_ray_commands"])
    assert ". /home/ray/cluster.env" in head_start and "sqlite" not in head_start
    assert CLUSTER["file_mounts"]["/home/ray/cluster.env"] == "./cluster.env"
    assert any("psycopg" in c and "boto3" in c for c in CLUSTER["setup_commands"])
    assert "IamInstanceProfile" in CLUSTER["available_node_types"]["gpu_worker"]["node_config"]
    comments = (Path(__file__).resolve().parents[2] / "cluster.yaml").read_text()
    assert "MLFLOW_BACKEND_STORE_URI=postgresql://" in comments and "MLFLOW_ARTIFACTS_DESTINATION=s3://" in comments
