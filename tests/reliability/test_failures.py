"""Trials that diverge or run out of memory fail alone, with their reason; the sweep goes on."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from lossweep.sweep.phases import run_sweep
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.tracking import Tracker

METRIC = "eval/sts/spearman_cosine"


@pytest.mark.slow
def test_diverged_and_out_of_memory_trials_are_failed_not_scored(ray_local, data_dir, tiny_model_path, tmp_path):
    # Given a grid where one learning rate blows the loss up and one batch exceeds the memory budget
    spec = parse_spec(
        {
            "name": "faulty",
            "data_dir": str(data_dir),
            "model": tiny_model_path,
            "train": {"path": "banking77", "split": "train"},
            "eval": [{"type": "sts", "path": "stsbenchmark", "split": "test", "limit": 100, "name": "sts"}],
            "loss": {"name": "BatchHardTripletLoss"},
            "training": {"batch_size": 16, "steps": 4, "learning_rate": 1e-3},
            "evaluation": {"every_steps": 2, "at_start": False},
            "resources": {"workers": 1, "memory_per_worker_gb": 0.5, "max_failures": 0},
            "output_dir": str(tmp_path / "runs"),
            "sweep": {
                "mode": "search",
                "sampler": "grid",
                "scheduler": "none",
                "max_concurrent": 2,
                "losses": ["BatchHardTripletLoss"],
                "params": {
                    "BatchHardTripletLoss": {
                        "distance_metric": {"choices": ["euclidean"]},
                        "margin": {"choices": [1.0]},
                    }
                },
                "shared": {"learning_rate": {"choices": [1e-3, 1e30]}, "batch_size": {"choices": [16, 8192]}},
            },
        }
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    # When the sweep runs
    outcome = run_sweep(spec, tracking_uri=uri)

    # Then the healthy trial completes, the others are failed with their reason, nothing is scored twice
    runs = [r for r in Tracker(uri).children(outcome.parent_run_id) if r.data.tags["lossweep.phase"] == "search"]
    by_config = {(r.data.params["training.learning_rate"], r.data.params["training.batch_size"]): r for r in runs}
    assert len(by_config) == 4
    healthy = by_config[("0.001", "16")]
    assert healthy.data.tags["lossweep.trial_state"] == "completed" and METRIC in healthy.data.metrics
    diverged = by_config[("1e+30", "16")]
    assert diverged.info.status == "FAILED" and diverged.data.tags["lossweep.trial_state"] == "failed"
    assert diverged.data.tags["lossweep.failure"] == "diverged"
    assert (
        diverged.data.tags["lossweep.error"].startswith("loss became nan at step ")
        or "loss became inf" in diverged.data.tags["lossweep.error"]
    )
    for lr in ("0.001", "1e+30"):
        oom = by_config[(lr, "8192")]
        assert oom.info.status == "FAILED" and oom.data.tags["lossweep.failure"] == "out_of_memory"
        assert "out of memory at step 1 with 8192 rows per worker" in oom.data.tags["lossweep.error"]
        assert "lower training.batch_size" in oom.data.tags["lossweep.error"]
    row = outcome.leaderboard.rows[0]
    assert (row.tuning.completed, row.tuning.failed) == (1, 3)
    assert row.selection == healthy.data.metrics[METRIC]
    assert "Failed trials (counted as failed, not as scores): BatchHardTripletLoss" in outcome.leaderboard.verdict
    assert MlflowClient(uri).get_run(outcome.parent_run_id).info.status == "FINISHED"
