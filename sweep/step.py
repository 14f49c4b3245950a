"""One optimisation step: rows of a batch -> model inputs -> loss -> backward -> synced gradients -> update."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device
from torch import Tensor, nn

from lossweep.losses import average_gradients
from lossweep.losses.formats import LABEL_COLUMNS

from .prompts import Prompts


def split_columns(column_names: Sequence[str]) -> tuple[list[str], str | None]:
    """Text columns in order, and the label column (sentence-transformers' naming), if any."""
    label = next((c for c in column_names if c in LABEL_COLUMNS), None)
    return [c for c in column_names if c != label], label


def collate(
    model: SentenceTransformer,
    batch: Mapping[str, list],
    device: torch.device | str | None = None,
    prompts: Prompts | None = None,
) -> tuple[list[dict[str, Tensor]], Tensor | None]:
    """Tokenise each text column of a column-major batch, its prompt prepended (as sentence-transformers'
    trainer does: the tokens carry it, and `prompt_length` tells pooling where it ends); turn the
    label column into a tensor."""
    texts, label = split_columns(list(batch))
    device = device or model.device
    sides = prompts.for_columns(texts, label is not None) if prompts else [""] * len(texts)
    features = [
        batch_to_device(model.preprocess(batch[column], prompt=side or None), device)
        for column, side in zip(texts, sides, strict=True)
    ]
    labels = None if label is None else torch.as_tensor(batch[label], device=device)
    if labels is not None and labels.is_floating_point():
        labels = labels.float()
    return features, labels


def loss_value(output: Tensor | Mapping[str, Tensor]) -> Tensor:
    """A loss may return named components (GlobalOrthogonalRegularizationLoss); they add up."""
    return torch.stack(list(output.values())).sum() if isinstance(output, Mapping) else output


def trainable_parameters(loss: nn.Module) -> list[nn.Parameter]:
    """Every trainable parameter the loss reaches: the model's and the loss's own (classifier, 2nd encoder)."""
    return [p for p in loss.parameters() if p.requires_grad]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message gives the step and the value."""


class TrialOutOfMemory(RuntimeError):
    """A training step needed more memory than the worker has (or than its budget allows)."""


OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA OOM, a refused CPU allocation, or Python's MemoryError."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in OOM_MARKERS)


@dataclass
class Optimisation:
    """What an optimisation step uses besides its batch: the loss (holding the model), the optimiser
    over `parameters`, its schedule, clipping, and the precision (`autocast`, fp16's `scaler`);
    `replays_forward`: a GradCache loss, which runs the model again inside its backward hook."""

    loss: nn.Module
    optimizer: torch.optim.Optimizer
    parameters: Sequence[nn.Parameter]
    scheduler: Any = None
    max_grad_norm: float | None = None
    autocast: contextlib.AbstractContextManager | None = None
    scaler: torch.amp.GradScaler | None = None
    replays_forward: bool = False


def train_step(opt: Optimisation, features: list[dict[str, Tensor]], labels: Tensor | None, step: int = 0) -> float:
    """Forward, backward, average gradients over workers, clip, step; returns the loss.

    The returned value is the mean over workers (an all-reduce of one number), so every worker sees
    the same value and a NaN on any worker stops all of them at the same step. For losses built to
    gather, each worker's value already is the global-batch loss. A GradCache loss (`replays_forward`)
    runs the model again inside its backward hook: its backward stays under `autocast`, so the replay
    computes in the precision of the first pass.
    """
    autocast, scaler = opt.autocast, opt.scaler
    opt.optimizer.zero_grad(set_to_none=True)
    with autocast or contextlib.nullcontext():
        value = loss_value(opt.loss(features, labels))
    with autocast if autocast is not None and opt.replays_forward else contextlib.nullcontext():
        (scaler.scale(value) if scaler else value).backward()
    reported = value.detach().float().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(reported)
        reported /= dist.get_world_size()
    reported = reported.item()
    if not math.isfinite(reported):
        raise TrainingDiverged(f"loss became {reported} at step {step}; lower the learning rate or check the data")
    average_gradients(opt.parameters)
    if scaler:
        scaler.unscale_(opt.optimizer)
    if opt.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(opt.parameters, opt.max_grad_norm)
    if scaler:
        scaler.step(opt.optimizer)
        scaler.update()
    else:
        opt.optimizer.step()
    if opt.scheduler is not None:
        opt.scheduler.step()
    return reported
