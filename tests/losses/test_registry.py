"""The registry covers sentence-transformers' whole loss module, and every entry trains."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from sentence_transformers.sentence_transformer import losses as st_losses
from torch import nn

from lossweep.losses import LOSSES, LossConfig, build_loss, check_dataset, config_errors
from lossweep.sweep.models import load_model
from lossweep.sweep.step import collate, loss_value, trainable_parameters

from examples import dataset_for, example_config


def st_loss_classes() -> set[str]:
    return {
        name
        for name, obj in vars(st_losses).items()
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__.startswith("sentence_transformers")
    }


def test_registry_has_every_sentence_transformers_loss():
    missing = st_loss_classes() - set(LOSSES)
    assert not missing, f"losses in sentence-transformers but not in the registry: {sorted(missing)}"
    assert len(LOSSES) == 29
    for name, entry in LOSSES.items():
        assert entry.cls is getattr(st_losses, name)


def test_every_default_value_is_valid_and_inside_its_search_range():
    for entry in LOSSES.values():
        for param in entry.params:
            assert param.error(param.default) is None, (entry.name, param.name)
            if param.kind in ("float", "int") and param.search and param.default is not None:
                low, high = param.search
                assert low <= param.default <= high, (entry.name, param.name, param.default, param.search)
            elif param.search and param.kind in ("choice", "bool"):
                assert param.default in param.search, (entry.name, param.name)


def test_in_batch_losses_all_gather_across_workers():
    for entry in LOSSES.values():
        if entry.in_batch:
            assert entry.native_gather or entry.multi_worker is not None, entry.name
        if entry.multi_worker is not None:
            assert issubclass(entry.multi_worker, entry.cls), entry.name


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_entry_builds_and_trains_one_step(name, data_dir, tiny_model_path, tiny_guide_path):
    # Given a tiny model and real rows in the loss's format
    config = example_config(name, guide=tiny_guide_path)
    dataset = dataset_for(config, data_dir, n=8, teacher=tiny_guide_path)
    check_dataset(config, dataset)
    model = load_model(tiny_model_path)
    loss = build_loss(config, model, distributed=False, load_model=load_model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    # When one optimisation step runs
    features, labels = collate(model, dataset.to_dict())
    value = loss_value(loss(features, labels))
    value.backward()
    grads = [p.grad for p in trainable_parameters(loss)]
    torch.optim.SGD(trainable_parameters(loss), lr=0.1).step()

    # Then the loss is finite, gradients reach the model, and its weights move
    assert math.isfinite(value.item())
    assert sum(g.abs().sum().item() for g in grads if g is not None) > 0
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert moved, f"{name}: no model parameter changed"


def test_config_errors_name_the_field_and_the_fix():
    errors = config_errors(LossConfig("MultipleNegativesRankingLoss", {"scael": 20, "partition_mode": "both"}))
    assert errors[0].startswith("loss.params.scael:") and "did you mean 'scale'" in errors[0]
    assert "partition_mode='both' is not one of ['joint', 'per_direction']" in errors[1]
    assert "did you mean CoSENTLoss" in config_errors(LossConfig("CoSentLoss"))[0]
    assert "> 0" in config_errors(LossConfig("CoSENTLoss", {"scale": -1.0}))[0]
    gte = {"directions": ["query_to_doc", "doc_to_doc"], "partition_mode": "per_direction"}
    assert "use partition_mode 'joint'" in config_errors(LossConfig("MultipleNegativesRankingLoss", gte))[0]
    assert "wraps a base loss" in config_errors(LossConfig("MatryoshkaLoss"))[0]
    refused = config_errors(LossConfig("AdaptiveLayerLoss", base=LossConfig("CachedMultipleNegativesRankingLoss")))
    assert refused[0].startswith("loss.base: AdaptiveLayerLoss cannot wrap CachedMultipleNegativesRankingLoss")


def test_every_registry_default_is_the_constructors_default():
    # A sweep that leaves a parameter alone must train the loss sentence-transformers would build.
    no_constructor_default = []
    for name, entry in LOSSES.items():
        signature = inspect.signature(entry.cls.__init__).parameters
        for param in entry.params:
            assert param.name in signature, f"{name}.{param.name} is not a constructor argument"
            default = signature[param.name].default
            if default is inspect.Parameter.empty:
                no_constructor_default.append(f"{name}.{param.name}")
                continue
            ours = param.resolve(param.default)
            if isinstance(default, nn.Module):
                assert type(ours) is type(default), (name, param.name)
            elif isinstance(default, (list, tuple)):
                assert list(ours) == list(default), (name, param.name)
            else:
                assert ours == default, (name, param.name, ours, default)
    # Where the constructor has none, the entry says who fills it: the user, the data, or lossweep.
    assert sorted(no_constructor_default) == [
        "CachedGISTEmbedLoss.guide",  # required: a guide model
        "GISTEmbedLoss.guide",
        "Matryoshka2dLoss.matryoshka_dims",  # lossweep: the model's size and powers of two below it
        "MatryoshkaLoss.matryoshka_dims",
        "SoftmaxLoss.num_labels",  # the data: its number of classes
    ]
    assert LOSSES["GISTEmbedLoss"].required_params() == ["guide"]
    assert LOSSES["SoftmaxLoss"].param("num_labels").from_data is not None
