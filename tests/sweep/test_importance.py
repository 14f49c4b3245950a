"""What mattered: per-loss fANOVA importances and parallel-coordinates plots, from MLflow runs alone."""

from __future__ import annotations

import json

import numpy as np

from lossweep.sweep.importance import figures, importances, studies
from lossweep.sweep.protocol import Phase, Tag, TrialState
from lossweep.sweep.tracking import Tracker

METRIC = "eval/val/ndcg_at_10"
SPACE = {
    "losses": {
        "TripletLoss": {
            "searched": {
                "triplet_margin": {"kind": "float", "low": 0.1, "high": 10.0, "log": True, "choices": []},
                "distance_metric": {"kind": "categorical", "choices": ["cosine", "euclidean"], "log": False},
            }
        }
    },
    "shared": {"learning_rate": {"kind": "float", "low": 1e-5, "high": 1e-3, "log": True, "choices": []}},
}


def test_the_parameter_that_drives_the_score_is_the_important_one(tmp_path):
    # Given 24 completed trials whose score follows the margin, not the metric or the learning rate
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    parent = tracker.start_run("importance", "sweep", {}, {})
    rng = np.random.default_rng(0)
    for i in range(24):
        margin, lr = float(rng.uniform(0.1, 10)), float(10 ** rng.uniform(-5, -3))
        metric = ["cosine", "euclidean"][i % 2]
        config = {"loss": "TripletLoss", "TripletLoss": {"triplet_margin": margin, "distance_metric": metric}}
        config["shared"] = {"learning_rate": lr}
        tags = {Tag.PHASE: Phase.SEARCH, Tag.STATE: TrialState.COMPLETED, Tag.TRIAL_CONFIG: json.dumps(config)}
        run = tracker.start_run("importance", f"t{i}", {}, tags, parent_run_id=parent)
        tracker.log_metrics(run, {METRIC: 0.3 + 0.04 * margin + float(rng.normal(0, 0.002))}, step=1)
    pruned = tracker.start_run(
        "importance", "p", {}, {Tag.PHASE: Phase.SEARCH, Tag.STATE: TrialState.PRUNED}, parent_run_id=parent
    )
    tracker.log_metrics(pruned, {METRIC: 0.0}, step=1)

    # When the studies are rebuilt from the runs
    found = studies(tracker.children(parent), METRIC, SPACE)

    # Then the margin explains most of the score, and each loss gets its plot
    assert list(found) == ["TripletLoss"] and len(found["TripletLoss"].trials) == 24  # the pruned one is left out
    shares = importances(found["TripletLoss"])
    assert set(shares) == {"triplet_margin", "distance_metric", "shared.learning_rate"}
    assert shares["triplet_margin"] > 0.8 and max(shares, key=shares.get) == "triplet_margin"
    assert list(figures(found)) == ["plots/parallel_TripletLoss.png"]
