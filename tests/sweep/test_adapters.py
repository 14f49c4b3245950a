"""LoRA adapters: only the adapter trains; a checkpoint holds the adapter and its optimiser state only
and resumes exactly; the saved folder loads back to the same model; merged, it is a plain
sentence-transformers model; r, alpha and dropout are searchable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from lossweep.sweep import adapters, checkpoint
from lossweep.sweep.driver import train
from lossweep.sweep.export import export
from lossweep.sweep.models import load_model
from lossweep.sweep.reproduce import reproduce
from lossweep.sweep.space import build_space, trial_spec
from lossweep.sweep.spec import AdapterSpec, SpecError, parse_spec
from lossweep.sweep.step import Optimisation, collate, train_step, trainable_parameters
from lossweep.sweep.tracking import Tracker

LORA = AdapterSpec(r=4, alpha=8.0)
ROWS = {
    "anchor": ["wing lift", "engine heat", "shock wave", "boundary layer"],
    "positive": ["lift", "heat", "waves", "layer"],
}
TEXTS = ["the lift of a thin wing", "heat transfer in a boundary layer"]


def adapted(path: str) -> SentenceTransformer:
    model = load_model(path)
    adapters.add_adapter(model, LORA, base=path)
    return model


def trained_steps(model, steps: int = 2, optimizer=None):
    loss = MultipleNegativesRankingLoss(model)
    parameters = trainable_parameters(loss)
    optimizer = optimizer or torch.optim.AdamW(parameters, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    for _ in range(steps):
        train_step(Optimisation(loss, optimizer, parameters), *collate(model, ROWS))
        scheduler.step()
    return loss, optimizer, scheduler


def test_only_the_adapter_trains_and_the_base_weights_stay_as_loaded(tiny_model_path):
    base = load_model(tiny_model_path)
    model = adapted(tiny_model_path)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    before = base.encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(model.encode(TEXTS, convert_to_tensor=True), before, atol=1e-6)  # LoRA's B starts at 0
    trained_steps(model)
    frozen = {n.replace(".base_layer", ""): p for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen.keys() == dict(base.named_parameters()).keys()
    assert all(torch.equal(p, frozen[n]) for n, p in base.named_parameters())
    assert not torch.allclose(model.encode(TEXTS, convert_to_tensor=True), before, atol=1e-4)


def test_a_checkpoint_holds_the_adapter_only_and_resumes_exactly(tiny_model_path, tmp_path):
    model = adapted(tiny_model_path)
    loss, optimizer, scheduler = trained_steps(model)
    checkpoint.save(tmp_path, model, loss, optimizer, scheduler, step=2, metrics={})
    tensors = load_file(str(tmp_path / "weights.safetensors"))
    assert tensors and all("lora_" in name for name in tensors)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert len(state["optimizer"]["state"]) == len(tensors)  # AdamW moments of the adapter only
    assert not list((tmp_path / "model").rglob("model.safetensors"))
    assert (tmp_path / "model" / adapters.ADAPTER_WEIGHTS).is_file()

    resumed = adapted(tiny_model_path)
    resumed_loss = MultipleNegativesRankingLoss(resumed)
    parameters = trainable_parameters(resumed_loss)
    resumed_optimizer = torch.optim.AdamW(parameters, lr=1e-2)
    resumed_scheduler = torch.optim.lr_scheduler.LambdaLR(resumed_optimizer, lambda _: 1.0)
    step, _ = checkpoint.load(tmp_path, resumed, resumed_loss, resumed_optimizer, resumed_scheduler)
    assert step == 2
    trained_steps(model, steps=1, optimizer=optimizer)
    trained_steps(resumed, steps=1, optimizer=resumed_optimizer)
    assert all(
        torch.equal(a, b) for a, b in zip(trainable_parameters(loss), trainable_parameters(resumed_loss), strict=True)
    )


def test_the_saved_folder_loads_back_and_merged_is_a_plain_model(tiny_model_path, tmp_path):
    model = adapted(tiny_model_path)
    model.prompts = {"query": "query: "}
    trained_steps(model)
    expected = model.encode(TEXTS, convert_to_tensor=True)
    adapters.save(model, tmp_path / "adapter")
    assert adapters.holds_adapter(tmp_path / "adapter") and not adapters.holds_adapter(tiny_model_path)
    loaded = load_model(str(tmp_path / "adapter"))
    assert loaded.prompts == {"query": "query: "}
    assert torch.allclose(loaded.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-6)
    adapters.merge(loaded).save(str(tmp_path / "merged"))
    plain = SentenceTransformer(str(tmp_path / "merged"), device="cpu")
    assert not any("lora_" in name for name in plain.state_dict())
    assert torch.allclose(plain.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5)


def spec_of(model: str, tmp_path: Path, **fields) -> dict:
    return {
        "name": "lora",
        "model": model,
        "train": {"path": "cranfield", "split": "train"},
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {"steps": 3, "batch_size": 8, "learning_rate": 1e-2},
        "output_dir": str(tmp_path / "runs"),
    } | fields


def test_lossweep_train_with_an_adapter_reproduces_and_exports_it_and_merged(tiny_model_path, data_dir, tmp_path):
    test = {"type": "retrieval", "path": "cranfield", "split": "test", "limit": 15}
    adapter = {"r": 4, "alpha": 8, "dropout": 0.1}  # dropout: the adapter's randomness must replay too
    spec = parse_spec(spec_of(tiny_model_path, tmp_path, data_dir=str(data_dir), adapter=adapter, eval=[test]))
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    result = train(spec, tracking_uri=tracker.uri)
    params = tracker.client.get_run(result.run_id).data.params
    assert params["adapter.r"] == "4" and params["adapter.method"] == "lora"
    again = reproduce(tracker, result.run_id)
    assert again.matched and any(name.startswith("eval/") for name in again.differences), again.differences
    trained = load_model(str(Path(result.checkpoint_path) / "model"))
    expected = trained.encode(TEXTS, convert_to_tensor=True)
    as_adapter = export(tracker, result.run_id, tmp_path / "adapter", log_to_mlflow=False)
    assert adapters.holds_adapter(as_adapter.path)
    merged = export(tracker, result.run_id, tmp_path / "merged", log_to_mlflow=False, merge=True)
    assert not adapters.holds_adapter(merged.path)
    plain = SentenceTransformer(str(merged.path), device="cpu")
    assert torch.allclose(plain.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5)


def test_rank_alpha_and_dropout_are_searched_and_need_an_adapter(tiny_model_path, tmp_path):
    searched = {
        "mode": "search",
        "trials": 2,
        "scheduler": "none",
        "shared": {"lora_r": {"choices": [4, 16]}, "lora_dropout": {"low": 0.0, "high": 0.2}},
    }
    fields = {"eval": [{"type": "sts", "path": "stsbenchmark", "split": "test"}], "sweep": searched}
    with pytest.raises(SpecError, match=r"sweep\.shared\.lora_r: searches a LoRA adapter.*adapter: \{method: lora\}"):
        parse_spec(spec_of(tiny_model_path, tmp_path, **fields))
    with pytest.raises(SpecError, match=r"shared\.lora_dropout: cannot search 1\.5"):
        bad = searched | {"shared": {"lora_dropout": {"low": 0.0, "high": 1.5}}}
        parse_spec(spec_of(tiny_model_path, tmp_path, adapter={"r": 8}, **(fields | {"sweep": bad})))
    spec = parse_spec(spec_of(tiny_model_path, tmp_path, adapter={"r": 8, "alpha": 32}, **fields))
    space, _ = build_space(spec, None)
    config = {"loss": "MultipleNegativesRankingLoss", "MultipleNegativesRankingLoss": {}, "shared": {"lora_r": 16}}
    one = trial_spec(spec, space, config)
    assert (one.adapter.r, one.adapter.alpha, one.adapter.dropout) == (16, 32.0, 0.0)


def test_layers_an_adapter_cannot_find_are_refused_before_training(tiny_model_path, data_dir, tmp_path):
    adapter = {"r": 4, "target_modules": ["q_proj", "v_proj"]}  # a Llama's names, not a BERT's
    spec = parse_spec(spec_of(tiny_model_path, tmp_path, data_dir=str(data_dir), adapter=adapter))
    with pytest.raises(SpecError, match=r"adapter\.target_modules: .*q_proj.*linear layers are named .*'query'"):
        train(spec, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()  # refused before any MLflow run
