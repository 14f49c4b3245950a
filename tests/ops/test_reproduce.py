"""`lossweep reproduce`: a trial re-run from its MLflow run matches to 1e-6; a changed world is reported first."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from lossweep.sweep.driver import train
from lossweep.sweep.models import tiny_model
from lossweep.sweep.reproduce import reproduce
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.tracking import Tracker


@pytest.mark.slow
def test_reproduce_matches_then_refuses_changed_data_and_versions(ray_local, data_dir, tmp_path):
    # Given a trial trained on 2 workers, with dropout on (its randomness must replay too)
    data = tmp_path / "data"
    shutil.copytree(data_dir / "cranfield", data / "cranfield")
    model = tiny_model(tmp_path / "model", seed=0, dropout=0.1)
    spec = parse_spec(
        {
            "name": "reproducible",
            "data_dir": str(data),
            "model": model,
            "train": {"path": "cranfield", "split": "train", "limit": 300},
            "eval": [{"type": "retrieval", "path": "cranfield", "split": "test", "limit": 15}],
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "training": {"batch_size": 16, "steps": 4, "learning_rate": 1e-3, "log_every_steps": 1},
            "evaluation": {"every_steps": 2},
            "resources": {"workers": 2},
            "output_dir": str(tmp_path / "runs"),
        }
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    original = train(spec, tracking_uri=uri)

    # When it is reproduced from MLflow alone
    outcome = reproduce(Tracker(uri), original.run_id)

    # Then every evaluation metric and the loss match at every step
    assert outcome.matched, outcome.differences
    assert outcome.max_difference <= 1e-6
    assert {"eval/cranfield/ndcg_at_10", "eval/cranfield/mrr_at_10", "train/loss"} <= set(outcome.differences)
    client = MlflowClient(uri)
    assert client.get_run(outcome.run_id).data.tags["lossweep.reproduces"] == original.run_id

    # Given the data changed and a recorded package version differs
    queries = data / "cranfield" / "queries.jsonl"
    queries.write_text(queries.read_text().replace("what similarity laws", "which similarity laws", 1))
    client.set_tag(original.run_id, "lossweep.version.torch", "0.0.1")
    runs_before = len(client.search_runs([client.get_run(original.run_id).info.experiment_id]))

    # When reproduced from the command line, Then both are reported and nothing runs
    result = subprocess.run(
        ["lossweep", "reproduce", original.run_id, "--tracking-uri", uri], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "data fingerprint differs: the run trained on" in result.stderr
    assert "package version differs: torch was 0.0.1, is now" in result.stderr
    assert "nothing was run; pass --force" in result.stderr
    assert len(client.search_runs([client.get_run(original.run_id).info.experiment_id])) == runs_before
