"""`lossweep plan`: the comparisons a spec implies, variance components from earlier sweeps' seed runs in
the tracking store, and the plan of a real spec end to end."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import yaml

from lossweep.sweep.evaluate import PER_QUERY_ARTIFACT
from lossweep.sweep.plan import assumed, families, measured_tables
from lossweep.sweep.power import estimate
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.tracking import Tracker

METRIC = "eval/test/ndcg_at_10"
QUERIES = [f"q{i}" for i in range(60)]


def spec(mode: str = "compare"):
    return parse_spec(
        {
            "name": "p",
            "train": {"path": "x"},
            "eval": [
                {"type": "retrieval", "path": "v", "name": "val"},
                {"type": "retrieval", "path": "t", "name": "test"},
            ],
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "training": {"steps": 2},
            "sweep": {"mode": mode, "select_on": "val", "scheduler": "none"},
        }
    )


def test_the_families_a_spec_implies():
    assert families(spec(), losses=3) == {"vs selected": 2, "vs untrained": 3}
    assert families(spec("search"), losses=3) == {"vs untrained": 1}
    pair, single = assumed("vs selected", 0.3, 0.005), assumed("vs untrained", 0.3, 0.005)
    assert pair.seed == pytest.approx(np.sqrt(2) * 0.005) and single.seed == 0.005


def test_earlier_seed_runs_on_the_same_data_and_model_give_the_components(tmp_path):
    # Given an earlier compare's seed runs of two losses and its untrained model in the store, with
    # known spreads: seed sd 0.01, per-query 0.03, seed x query 0.04 for each loss
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, len(QUERIES))
    parent = tracker.start_run("earlier", "sweep", {}, {"lossweep.role": "sweep"})
    common = {"lossweep.data_fingerprint": "fp", "lossweep.trial_state": "completed"}

    def run(phase: str, loss: str, items: np.ndarray, seed: int = 0, model: str = "minilm") -> None:
        tags = common | {"lossweep.phase": phase, "lossweep.loss": loss, "lossweep.seed": str(seed)}
        run_id = tracker.start_run("earlier", loss, {"model": model}, tags, parent_run_id=parent)
        tracker.log_dict(run_id, {METRIC: dict(zip(QUERIES, items.tolist(), strict=True))}, PER_QUERY_ARTIFACT)
        tracker.end_run(run_id)

    run("baseline", "untrained", base)
    effects = {loss: rng.normal(0, 0.03, len(QUERIES)) for loss in ("A", "B")}
    for loss, effect in effects.items():
        for seed in range(1042, 1046):
            run("seeds", loss, base + effect + rng.normal(0, 0.01) + rng.normal(0, 0.04, len(QUERIES)), seed)
    run("seeds", "C", base, 1042, model="another-model")  # another model: not counted
    # When the plan gathers them
    tables, sweeps = measured_tables(tracker, "fp", "minilm", METRIC)
    # Then one sweep gave a table per pair of losses and per loss against the untrained model
    assert sweeps == 1 and len(tables["vs selected"]) == 1 and len(tables["vs untrained"]) == 2
    assert tables["vs selected"][0].shape == (4, len(QUERIES))
    single = estimate(tables["vs untrained"])
    assert single.residual == pytest.approx(0.04, rel=0.15) and single.query == pytest.approx(0.03, rel=0.35)
    assert measured_tables(tracker, "other data", "minilm", METRIC) == ({"vs selected": [], "vs untrained": []}, 0)


@pytest.mark.slow
def test_lossweep_plan_prints_the_detectable_difference_and_the_seeds_for_an_effect(
    data_dir, tiny_model_path, tmp_path
):
    data = {
        "name": "planned",
        "data_dir": str(data_dir),
        "model": tiny_model_path,
        "train": {"path": "cranfield", "split": "train"},
        "eval": [
            {"type": "retrieval", "from_train": {"size": 20}, "name": "val"},
            {"type": "retrieval", "path": "cranfield", "split": "test", "limit": 40, "name": "cranfield"},
        ],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"batch_size": 16, "steps": 4},
        "output_dir": str(tmp_path / "runs"),
        "sweep": {
            "mode": "compare",
            "select_on": "val",
            "losses": ["MultipleNegativesRankingLoss", "MultipleNegativesSymmetricRankingLoss"],
            "seeds": {"min": 3, "max": 5},
            "scheduler": "none",
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    store = f"sqlite:///{tmp_path}/mlflow.db"
    command = ["lossweep", "plan", str(path), "--effect", "0.05", "--tracking-uri", store]
    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = [line for line in first.stdout.splitlines() if line.startswith("plan:")]
    assert lines[0].startswith("plan: cranfield (ndcg_at_10, 40 queries x 3 to 5 seeds): differences below")
    assert "vs selected (1 comparison), " in lines[0] and "vs untrained (2 comparisons)" in lines[0]
    assert "the default" in lines[0]  # no earlier sweep in this store
    assert any(line.startswith("plan: to detect 0.05 vs selected on cranfield:") for line in lines)
    # more queries are offered only where the data holds more than the 40 the spec keeps
    assert all("cranfield holds 75" in line for line in lines if "queries at 5 seeds" in line)
    cached = list((tmp_path / "runs" / "untrained").glob("*.json"))
    assert len(cached) == 1 and METRIC.replace("test", "cranfield") in json.loads(cached[0].read_text())["per_query"]
    # a second plan reads the cache: the same numbers
    second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 0 and [x for x in second.stdout.splitlines() if x.startswith("plan:")] == lines
