"""Shared fixtures: the real data folder, and tiny random BERTs written once per session."""

from __future__ import annotations

import json
import os
import secrets
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
    # Every Ray the tests start shares one cluster token. Ray otherwise writes ~/.ray/auth_token
    # the first time, and two test processes starting Rays at once (pytest -n 2) could each write one.
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    # Ray Train's preemption watcher (node drain on spot clusters) and its dashboard-state reconciler
    # are two more actors per trial; on one local node they have nothing to watch.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION", "0")


# The longest tests (whole sweeps, killed and resumed drivers), started first under `pytest -n 2`.
LONGEST = ("test_sweep.py", "test_faults.py", "test_failures.py", "test_shared_storage.py")
# Modules whose tests share one expensive session fixture: under `pytest -n 2` one process runs each.
SHARED_FIXTURE = ("ops/test_cluster_workflow.py", "ops/test_shared_storage.py", "losses/test_gather.py")


def pytest_collection_modifyitems(config, items) -> None:
    # Tests that read ../shared/data are marked `data`: `pytest -m "not data"` runs the rest anywhere.
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
    # Longest first, then the other slow ones, then the quick ones, which fill the gaps at the end.
    items.sort(key=lambda item: (item.path.name not in LONGEST, item.get_closest_marker("slow") is None))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's `load` scheduling in the order above, with each SHARED_FIXTURE module as one unit.

    (xdist's own `loadgroup` does not group under pytest 9.2: it renames node ids, which pytest
    now derives from the item.)
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module.endswith(SHARED_FIXTURE) else nodeid

    config.option.loadscopereorder = False  # keep the order above, not the largest unit first
    return SharedFixtureScheduling(config, log)


@pytest.fixture(autouse=True)
def no_ray_unless_slow(request, monkeypatch):
    """A test not marked slow starts no Ray (`pytest -m "not slow"` runs in seconds, anywhere)."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import ray

    def refused(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts Ray but is not marked slow")

    monkeypatch.setattr(ray, "init", refused)


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
def tiny_prompted_model_path(tmp_path_factory) -> str:
    """The tiny model, declaring E5's prompts in its sentence-transformers config as such models do."""
    path = Path(tiny_model(tmp_path_factory.mktemp("prompted") / "model", seed=0))
    config = json.loads((path / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "query: ", "document": "passage: "}
    (path / "config_sentence_transformers.json").write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="session")
def tiny_guide_path(tmp_path_factory) -> str:
    """A second tiny model with other weights: a guide for GIST and a teacher for distillation."""
    return tiny_model(tmp_path_factory.mktemp("guide") / "model", seed=1)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session: 2 CPUs, dashboard on 127.0.0.1."""
    import ray

    from lossweep.sweep.cluster import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()
