"""One optimisation step under mixed precision: a GradCache loss's replayed forward keeps the precision."""

from __future__ import annotations

import torch

from lossweep.losses import LossConfig, build_loss, replays_forward
from lossweep.sweep.models import load_model
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.step import Optimisation, collate, train_step, trainable_parameters

ROWS = {"anchor": [f"query number {i}" for i in range(8)], "positive": [f"a document about {i}" for i in range(8)]}


def _forward_dtypes(model_path: str, replays_forward: bool) -> list[tuple[bool, torch.dtype]]:
    """(grad enabled, output dtype) of the first Linear for every forward of one bf16 CachedMNRL step."""
    model = load_model(model_path)
    loss = build_loss(LossConfig("CachedMultipleNegativesRankingLoss", {"mini_batch_size": 4}), model)
    seen: list[tuple[bool, torch.dtype]] = []
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda module, inputs, output: seen.append((torch.is_grad_enabled(), output.dtype)))
    features, labels = collate(model, ROWS)
    parameters = trainable_parameters(loss)
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    train_step(
        Optimisation(loss, optimizer, parameters, autocast=autocast, replays_forward=replays_forward), features, labels
    )
    return seen


def test_gradient_cache_replay_runs_under_autocast(tiny_model_path):
    # Given CachedMNRL under bf16 autocast: a no-grad pass, then one replay per mini-batch in backward
    replayed = _forward_dtypes(tiny_model_path, replays_forward=True)
    # Then every forward, the replays included, computes in bf16
    assert [grad for grad, _ in replayed] == [False] * 4 + [True] * 4
    assert {dtype for _, dtype in replayed} == {torch.bfloat16}
    # (Without it the replays run in float32: the embeddings they back-propagate through differ.)
    plain = _forward_dtypes(tiny_model_path, replays_forward=False)
    assert [dtype for grad, dtype in plain if grad] == [torch.float32] * 4


def test_the_registry_knows_which_losses_replay_the_forward(tiny_model_path):
    def spec(loss: dict, **extra) -> object:
        base = {"name": "t", "model": tiny_model_path, "train": {"path": "x"}, "loss": loss, "training": {"steps": 1}}
        return parse_spec(base | extra).loss_config()

    assert replays_forward(spec({"name": "CachedMultipleNegativesRankingLoss"}))
    assert replays_forward(spec({"name": "CachedGISTEmbedLoss", "params": {"guide": tiny_model_path}}))
    assert replays_forward(spec({"name": "CachedMultipleNegativesRankingLoss"}, matryoshka_dims=[32, 16]))
    assert not replays_forward(spec({"name": "MultipleNegativesRankingLoss"}))
    mega = {"name": "MegaBatchMarginLoss", "params": {"use_mini_batched_version": False}}
    assert not replays_forward(spec(mega))
