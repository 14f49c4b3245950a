"""One optimisation step: rows of a batch -> model inputs -> loss -> backward -> synced gradients -> update."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device
from torch import Tensor, nn

from lossweep.losses import average_gradients
from lossweep.losses.formats import LABEL_COLUMNS


def split_columns(column_names: Sequence[str]) -> tuple[list[str], str | None]:
    """Text columns in order, and the label column (sentence-transformers' naming), if any."""
    label = next((c for c in column_names if c in LABEL_COLUMNS), None)
    return [c for c in column_names if c != label], label


def collate(
    model: SentenceTransformer, batch: Mapping[str, list], device: torch.device | str | None = None
) -> tuple[list[dict[str, Tensor]], Tensor | None]:
    """Tokenise each text column of a column-major batch; turn the label column into a tensor."""
    texts, label = split_columns(list(batch))
    device = device or model.device
    features = [batch_to_device(model.preprocess(batch[column]), device) for column in texts]
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


def train_step(
    loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: list[dict[str, Tensor]],
    labels: Tensor | None,
    parameters: Iterable[nn.Parameter],
    scheduler: Any = None,
) -> float:
    """Forward, backward, average gradients over workers, step; returns this worker's loss value.

    In-batch losses built for several workers return the loss of the global batch, so the value is
    the same on every worker; other losses return the mean over this worker's rows.
    """
    optimizer.zero_grad(set_to_none=True)
    value = loss_value(loss(features, labels))
    value.backward()
    average_gradients(parameters)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return value.detach().item()
