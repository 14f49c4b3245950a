"""Shared fixtures: the real data folder, and tiny random BERTs written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lossweep.sweep.data import DATA_DIR_ENV
from lossweep.sweep.models import tiny_model

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    # Tests never reach a hub; everything they load is local.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get(DATA_DIR_ENV, REPO.parent / "shared" / "data")).resolve()
    if not (path / "README.md").is_file():
        pytest.fail(f"real data not found at {path}: set {DATA_DIR_ENV} to the folder holding cranfield/, snli/ ...")
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_guide_path(tmp_path_factory) -> str:
    """A second tiny model with other weights: a guide for GIST and a teacher for distillation."""
    return tiny_model(tmp_path_factory.mktemp("guide") / "model", seed=1)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session: 2 CPUs, dashboard on 127.0.0.1."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, dashboard_host="127.0.0.1", configure_logging=False)
    yield ray
    ray.shutdown()
