"""The proof through lossweep's own trial: 2 Ray workers x B rows train exactly like 1 worker x 2B rows.

`tests/losses/test_gather.py` proves it for every loss with a plain loop; this runs the
real worker loop (sampler, collate, gathering, gradient averaging, checkpoints) on Ray and compares
the weights the two trials checkpointed, trained in full or as a LoRA adapter. SGD: its update is
linear in the gradient, so equal gradients give equal weights (AdamW would magnify float noise in
gradients that are exactly zero).
"""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from lossweep.sweep.driver import train
from lossweep.sweep.spec import parse_spec

CASES = {
    # in-batch negatives, gathered by sentence-transformers itself
    "MultipleNegativesRankingLoss": {"path": "snli", "split": "dev", "view": "pairs", "limit": 200},
    # batch-mined triplets, gathered by lossweep (every worker computes the whole batch's loss)
    "BatchHardTripletLoss": {"path": "banking77", "split": "train", "limit": 400},
}
PROMPTS = {"MultipleNegativesRankingLoss": {"query": "query: ", "document": "passage: "}}  # E5's, on each column


LORA = {"r": 4, "alpha": 8.0}


@pytest.mark.slow
@pytest.mark.parametrize("adapter", [None, LORA], ids=["full", "lora"])
@pytest.mark.parametrize("loss", list(CASES))
def test_two_workers_train_like_one_worker_with_the_whole_batch(
    loss, adapter, ray_local, data_dir, tiny_model_path, tmp_path
):
    weights = {}
    for workers in (1, 2):
        spec = parse_spec(
            {
                "name": f"exact-{workers}",
                "data_dir": str(data_dir),
                "model": tiny_model_path,
                "train": CASES[loss],
                "eval": [{"type": "sts", "path": "stsbenchmark", "split": "test", "limit": 20, "name": "sts"}],
                "loss": {"name": loss},
                "prompts": PROMPTS.get(loss, "model"),
                "adapter": adapter,
                "training": {
                    "batch_size": 16,
                    "steps": 3,
                    "learning_rate": 0.5,
                    "optimizer": "sgd",
                    "scheduler": "constant",
                    "warmup_ratio": 0.0,
                    "max_grad_norm": None,
                },
                "evaluation": {"at_start": False},
                "resources": {"workers": workers},
                "output_dir": str(tmp_path / "runs"),
            }
        )
        result = train(spec, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
        weights[workers] = load_file(f"{result.checkpoint_path}/weights.safetensors")
        params = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(result.run_id).data.params
        assert params["applied_prompts.query"] == PROMPTS.get(loss, {}).get("query", "")
    one, two = weights[1], weights[2]
    assert one.keys() == two.keys()
    worst = max((one[name] - two[name]).abs().max().item() for name in one)
    assert worst <= 1e-5, f"largest weight difference {worst:.2e}"
    # and training moved the weights (a test that could not fail otherwise would prove nothing)
    if adapter:  # the adapter's tensors only; its B matrices start at zero
        assert one and all("lora_" in name for name in one)
        moved = max(value.abs().max().item() for name, value in one.items() if "lora_B" in name)
    else:
        initial = load_file(f"{tiny_model_path}/hf/model.safetensors")
        moved = max((one[f"model.0.model.{name}"] - value).abs().max().item() for name, value in initial.items())
    assert moved > 1e-3


@pytest.mark.slow
def test_a_mix_of_two_sets_each_with_its_own_loss_trains_on_two_workers_like_one(
    ray_local, data_dir, tiny_model_path, tmp_path
):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    weights, runs = {}, {}
    for workers in (1, 2):
        spec = parse_spec(
            {
                "name": f"mix-{workers}",
                "data_dir": str(data_dir),
                "model": tiny_model_path,
                "train": [  # Cranfield's (query, abstract) pairs with MNRL, STS Benchmark's scored pairs with CoSENT
                    {"path": "cranfield", "split": "train", "loss": {"name": "MultipleNegativesRankingLoss"}},
                    {
                        "path": "stsbenchmark",
                        "split": "dev",
                        "limit": 200,
                        "loss": {"name": "CoSENTLoss"},
                        "name": "sts",
                    },
                ],
                "loss": {"name": "MultipleNegativesRankingLoss"},
                "training": {
                    "batch_size": 16,
                    "steps": 4,
                    "mixing": "round_robin",
                    "learning_rate": 0.5,
                    "optimizer": "sgd",
                    "scheduler": "constant",
                    "warmup_ratio": 0.0,
                    "max_grad_norm": None,
                    "log_every_steps": 2,
                },
                "evaluation": {"at_start": False},
                "resources": {"workers": workers},
                "output_dir": str(tmp_path / "runs"),
            }
        )
        result = train(spec, tracking_uri=uri)
        weights[workers] = load_file(f"{result.checkpoint_path}/weights.safetensors")
        runs[workers] = MlflowClient(uri).get_run(result.run_id)
    one, two = weights[1], weights[2]
    worst = max((one[name] - two[name]).abs().max().item() for name in one)
    assert worst <= 1e-5, f"largest weight difference {worst:.2e}"
    initial = load_file(f"{tiny_model_path}/hf/model.safetensors")
    assert max((one[f"model.0.model.{name}"] - value).abs().max().item() for name, value in initial.items()) > 1e-3
    # Each set is an MLflow dataset input; its steps and last loss are metrics; what it is, an artifact
    client = MlflowClient(uri)
    run = runs[2]
    training = [d.dataset.name for d in run.inputs.dataset_inputs if d.tags[0].value == "training"]
    assert training == ["cranfield: cranfield (split train)", "sts: stsbenchmark (split dev)"]
    assert run.data.metrics["train_set/cranfield/steps"] == 2 and run.data.metrics["train_set/sts/steps"] == 2
    assert {"train_set/cranfield/loss", "train_set/sts/loss"} <= set(run.data.metrics)
    described = json.loads(open(client.download_artifacts(run.info.run_id, "training_sets.json")).read())
    assert described["sts"]["rows"] == 200 and described["mixing"] == "round_robin"
    assert described["cranfield"]["sampler"] == "no_duplicates"
