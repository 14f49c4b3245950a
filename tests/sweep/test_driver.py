"""One trial end to end: spec -> 2 Ray Train CPU workers -> evaluation -> MLflow."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from lossweep.sweep.driver import train
from lossweep.sweep.spec import parse_spec

CASES = {
    "mnrl-gathered": (
        {"name": "MultipleNegativesRankingLoss"},
        {"path": "cranfield", "split": "train", "limit": 300},
        {"type": "retrieval", "path": "cranfield", "split": "test", "limit": 10},
        "eval/cranfield/ndcg_at_10",
        "fp32",
    ),
    "batch-hard-triplet": (
        {"name": "BatchHardTripletLoss", "params": {"margin": 1.0}},
        {"path": "banking77", "split": "train", "limit": 400},
        {"type": "sts", "path": "stsbenchmark", "split": "test", "limit": 100},
        "eval/stsbenchmark/spearman_cosine",
        "bf16",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_two_workers_train_and_everything_lands_in_mlflow(case, ray_local, data_dir, tiny_model_path, tmp_path):
    loss, train_ref, eval_ref, headline, precision = CASES[case]
    spec = parse_spec(
        {
            "name": f"e2e-{case}",
            "data_dir": str(data_dir),
            "model": tiny_model_path,
            "train": train_ref,
            "eval": [eval_ref],
            "loss": loss,
            "matryoshka_dims": [32, 16],
            "training": {
                "batch_size": 16,
                "steps": 4,
                "learning_rate": 1e-3,
                "log_every_steps": 2,
                "precision": precision,
            },
            "evaluation": {"every_steps": 2},
            "resources": {"workers": 2},
            "output_dir": str(tmp_path / "runs"),
            "mlflow": {"experiment": "e2e"},
        }
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = train(spec, tracking_uri=uri)

    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == spec.name
    params = run.data.params
    assert params["loss.name"] == loss["name"]
    assert params["loss.label"] == f"MatryoshkaLoss({loss['name']})"
    assert params["resources.workers"] == "2" and params["training.batch_size"] == "16"
    assert params["matryoshka_dims"] == "[32, 16]"
    tags = run.data.tags
    assert len(tags["lossweep.spec_hash"]) == 16 and len(tags["lossweep.data_fingerprint"]) == 16
    assert tags["lossweep.git_commit"] and tags["lossweep.version.sentence-transformers"].startswith("6.")
    # Evaluated before training, at step 2 and at the end, at every size.
    assert [m.step for m in client.get_metric_history(run.info.run_id, headline)] == [0, 2, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, f"{headline}/dim_16")] == [0, 2, 4]
    # Logged at the first step (training has begun), every log_every_steps, and with each evaluation.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")][:3] == [1, 2, 2]
    assert client.get_metric_history(run.info.run_id, "train/samples_per_second")[0].value > 0
    assert "spec.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert result.metrics[headline] == run.data.metrics[headline]
    assert result.checkpoint_path.endswith("step_0000004")
