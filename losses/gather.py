"""Cross-worker gathering for losses that couple the examples of a batch, and gradient averaging.

The contract, for N workers that each hold B rows of a global batch of N*B rows:

1. Each worker embeds only its own B rows.
2. The loss gathers every worker's embeddings (and labels) with `all_gather_with_grad`, so each
   worker computes the loss of the *whole global batch*, exactly as one process on N*B rows would.
   `torch.distributed.nn.all_gather` sends back, to the worker that owns each slice, the SUM over
   workers of the gradients of that slice. Each worker's slice therefore receives N times the
   single-process gradient dL/de (every worker computed the same L).
3. `average_gradients` then all-reduces parameter gradients and divides by N (what DDP does), which
   cancels the factor N: every worker ends with exactly the single-process gradient dL/dtheta.

sentence-transformers' own `gather_across_devices` (MNRL, its cached and symmetric variants) takes
the other exact route: each worker scores only its local anchors against all gathered candidates, so
its loss is the mean over local anchors; the average over workers is the global mean. For GIST and
CachedGIST that route is not exact (the anchor-anchor term only sees local anchors), so those two get
the global-batch route below instead.

Outside a process group nothing here gathers: `sentence_transformers.util.all_gather` returns the
local tensor and warns once, and the registry builds the plain loss when there is one worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.distributed as dist

# A module of sentence-transformers' internals, kept: its losses stack a batch's text columns into one
# forward, and gathering that stack across workers would interleave workers and columns; this switch
# (which no public API offers) turns the stacking off while `gathered_outputs` gathers each column.
from sentence_transformers.base.losses.merged_forward import column_merging_disabled
from sentence_transformers.sentence_transformer.losses import (
    AnglELoss,
    BatchAllTripletLoss,
    BatchHardSoftMarginTripletLoss,
    BatchHardTripletLoss,
    BatchSemiHardTripletLoss,
    CachedGISTEmbedLoss,
    ContrastiveLoss,
    ContrastiveTensionLoss,
    ContrastiveTensionLossInBatchNegatives,
    CoSENTLoss,
    DenoisingAutoEncoderLoss,
    GISTEmbedLoss,
    GlobalOrthogonalRegularizationLoss,
    MegaBatchMarginLoss,
    OnlineContrastiveLoss,
)
from sentence_transformers.util import all_gather, all_gather_with_grad
from torch import Tensor, nn


def world_size() -> int:
    """Number of workers in the default process group (1 outside one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_labels(labels: Tensor | None) -> Tensor | None:
    """Labels of the global batch, in rank order (labels carry no gradient)."""
    return None if labels is None else all_gather(labels)


# --- Route A: the `compute_loss_from_embeddings` seam -------------------------------------------------


class GatherEmbeddings:
    """Mixin: gather each column's embeddings and the labels, then compute the global-batch loss."""

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None):
        gathered = [all_gather_with_grad(embedding) for embedding in embeddings]
        return super().compute_loss_from_embeddings(gathered, gather_labels(labels))


class GatheredBatchAllTripletLoss(GatherEmbeddings, BatchAllTripletLoss):
    """BatchAllTripletLoss over the global batch: triplets are mined across all workers."""


class GatheredBatchHardTripletLoss(GatherEmbeddings, BatchHardTripletLoss):
    """BatchHardTripletLoss over the global batch: hardest positive/negative from all workers."""


class GatheredBatchHardSoftMarginTripletLoss(GatherEmbeddings, BatchHardSoftMarginTripletLoss):
    """BatchHardSoftMarginTripletLoss over the global batch."""


class GatheredBatchSemiHardTripletLoss(GatherEmbeddings, BatchSemiHardTripletLoss):
    """BatchSemiHardTripletLoss over the global batch."""


class GatheredCoSENTLoss(GatherEmbeddings, CoSENTLoss):
    """CoSENTLoss over the global batch: every pair is ranked against every other pair."""


class GatheredAnglELoss(GatherEmbeddings, AnglELoss):
    """AnglELoss over the global batch."""


class GatheredGlobalOrthogonalRegularizationLoss(GatherEmbeddings, GlobalOrthogonalRegularizationLoss):
    """GOR statistics (mean and second moment of similarities) over the global batch."""


class GatheredOnlineContrastiveLoss(GatherEmbeddings, OnlineContrastiveLoss):
    """OnlineContrastiveLoss: its hard-pair thresholds come from the batch, so they need the global one."""


class GatheredContrastiveLoss(GatherEmbeddings, ContrastiveLoss):
    """ContrastiveLoss: per-pair, but `size_average=False` sums over the batch; gathering keeps it exact."""


# --- Route B: the GradCache `calculate_loss` seam -------------------------------------------------------


def _gather_cached(reps: list[list[Tensor]], with_grad: bool) -> list[list[Tensor]]:
    gather = all_gather_with_grad if with_grad else all_gather
    return [[gather(torch.cat(column))] for column in reps]


class GatheredMegaBatchMarginLoss(MegaBatchMarginLoss):
    """MegaBatchMarginLoss mining its hardest negative among the positives of all workers.

    Both the cached and the plain path go through `calculate_loss`. The global-batch loss is
    back-propagated in one piece: a chunked backward would traverse the gather twice.
    """

    def calculate_loss(self, reps, labels=None, *, with_backward: bool = False) -> Tensor:
        loss = super().calculate_loss(_gather_cached(reps, with_grad=True), labels, with_backward=False)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss


class GatheredCachedGISTEmbedLoss(CachedGISTEmbedLoss):
    """CachedGISTEmbedLoss over the global batch: anchors, candidates and guide scores all gathered."""

    def calculate_loss(self, reps, reps_guided, *, with_backward: bool = False) -> Tensor:
        loss = super().calculate_loss(
            _gather_cached(reps, with_grad=True), _gather_cached(reps_guided, with_grad=False), with_backward=False
        )
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss


# --- Route C: the model-output seam, for losses that embed inside `forward` ---------------------------


class _GatheredForward:
    """Stands in for `model.forward`: returns the global batch's sentence embeddings."""

    def __init__(self, forward) -> None:
        self.forward = forward

    def __call__(self, features, *args, **kwargs):
        output = self.forward(features, *args, **kwargs)
        # A new dict: decorators such as MatryoshkaLoss's cache the dict they were given.
        return {**output, "sentence_embedding": all_gather_with_grad(output["sentence_embedding"])}


@contextmanager
def gathered_outputs(models: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, each model's forward returns embeddings of the global batch.

    Column merging is disabled: a merged forward stacks columns, and gathering the stack would
    interleave workers and columns.
    """
    models = list(models)
    saved = [model.__dict__.get("forward") for model in models]
    with ExitStack() as stack:
        stack.enter_context(column_merging_disabled())
        try:
            for model in models:
                model.forward = _GatheredForward(model.forward)
            yield
        finally:
            for model, forward in zip(models, saved, strict=True):
                if forward is None:
                    del model.forward
                else:
                    model.forward = forward


class GatheredGISTEmbedLoss(GISTEmbedLoss):
    """GISTEmbedLoss over the global batch (model and guide embeddings both gathered)."""

    def forward(self, sentence_features, labels):
        with gathered_outputs([self.model, self.guide]):
            return super().forward(sentence_features, gather_labels(labels))


class GatheredContrastiveTensionLossInBatchNegatives(ContrastiveTensionLossInBatchNegatives):
    """Contrastive tension with in-batch negatives drawn from all workers."""

    def forward(self, sentence_features, labels):
        with gathered_outputs([self.model1, self.model2]):
            return super().forward(sentence_features, gather_labels(labels))


class GatheredContrastiveTensionLoss(ContrastiveTensionLoss):
    """Contrastive tension: per-pair but sum-reduced, so the global sum needs the global batch."""

    def forward(self, sentence_features, labels=None):
        if labels is None:
            raise ValueError("ContrastiveTensionLoss on several workers needs its 0/1 labels in the dataset")
        with gathered_outputs([self.model1, self.model2]):
            return super().forward(sentence_features, gather_labels(labels))


# --- Token-weighted means --------------------------------------------------------------------------


class TokenWeightedDenoisingAutoEncoderLoss(DenoisingAutoEncoderLoss):
    """TSDAE whose mean is over the global batch's tokens, not the average of per-worker means.

    The decoder's cross-entropy averages over the non-padding target tokens of the batch. Workers
    hold different numbers of tokens, so the plain average of their means is not the global mean.
    Scaling each worker's mean by N * (its tokens / all tokens) makes the averaged gradient exact.
    """

    def forward(self, sentence_features, labels):
        sentence_features = list(sentence_features)
        loss = super().forward(sentence_features, labels)
        target = sentence_features[1]
        if self.need_retokenization:
            target = self.retokenize(target)
        tokens = (target["input_ids"][:, 1:] != self.tokenizer_decoder.pad_token_id).sum().to(loss.dtype)
        total = tokens.clone()
        dist.all_reduce(total)
        return loss * tokens * world_size() / total


# --- Gradient averaging ------------------------------------------------------------------------------


def average_gradients(parameters: Iterable[nn.Parameter], bucket_bytes: int = 64 * 2**20) -> None:
    """All-reduce gradients and divide by the world size: the mean DDP computes.

    We synchronise after `backward()` instead of wrapping the model in DDP because sentence-
    transformers' losses run several forwards per step (the anchor column apart from the candidates,
    GradCache's chunked replays, AdaptiveLayer's per-layer passes), which DDP's reducer rejects, and
    because some losses own trainable parameters outside the model (SoftmaxLoss's classifier,
    contrastive tension's second encoder) that DDP would not see. A parameter without a gradient on
    this worker contributes zeros, so every worker all-reduces the same buffers.
    """
    n = world_size()
    if n == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    bucket: list[Tensor] = []
    size = 0
    for p in params:
        bucket.append(p.grad)
        size += p.grad.numel() * p.grad.element_size()
        if size >= bucket_bytes:
            _reduce_bucket(bucket, n)
            bucket, size = [], 0
    if bucket:
        _reduce_bucket(bucket, n)


def _reduce_bucket(grads: list[Tensor], n: int) -> None:
    """One all-reduce for a bucket of gradients: flattened into one tensor, averaged, copied back."""
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat.div_(n)
    for grad, synced in zip(grads, flat.split([grad.numel() for grad in grads]), strict=True):
        grad.copy_(synced.view_as(grad))
