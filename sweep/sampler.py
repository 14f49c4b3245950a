"""Global batch order: seeded, reproducible, and with the property the loss needs across ALL workers.

sentence-transformers' batch samplers guarantee their property per device; with cross-worker
gathering the global batch is what the loss sees, so the global batch is built here and each worker
takes its contiguous slice (rank r gets rows r*B .. (r+1)*B-1).

- random: a fresh permutation per epoch.
- no_duplicates: no text appears twice in a global batch (a duplicate would be a false negative).
- group_by_label: every label in a batch appears at least twice (batch-triplet losses need pairs).

Several training sets (`train` as a list) follow sentence-transformers' multi-dataset samplers: every
global batch comes from one set (so in-batch negatives and gathering stay within it), each set batched
with its own loss's sampler; `proportional` draws the order of the sets' batches in proportion to how
many each has (ProportionalBatchSampler), `round_robin` takes one batch of each in turn and ends the
epoch when the smallest set runs out (RoundRobinBatchSampler).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import datasets

from lossweep.losses import Sampler

from .step import split_columns


def epoch_batches(dataset: datasets.Dataset, batch_size: int, kind: str, seed: int, epoch: int) -> list[list[int]]:
    """The global batches (lists of row indices) of one epoch; incomplete batches are dropped."""
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(len(dataset)))
    rng.shuffle(order)
    if kind == Sampler.NO_DUPLICATES:
        return _no_duplicates(dataset, order, batch_size)
    if kind == Sampler.GROUP_BY_LABEL:
        return _group_by_label(dataset, order, batch_size, rng)
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def column(dataset: datasets.Dataset, name: str) -> list:
    """One column as a Python list in one Arrow conversion (row-wise access is ~50x slower)."""
    return dataset.with_format("arrow")[name].to_pylist()


def _no_duplicates(dataset: datasets.Dataset, order: list[int], batch_size: int) -> list[list[int]]:
    """Each row, in shuffled order, joins the first batch that is not full and holds none of its texts.

    Linear in the rows: a text remembers the last batch it went to (a later row with it goes after
    that one), and full batches are skipped with a union-find over batch indices. Batches left
    incomplete at the end are dropped.
    """
    texts, _ = split_columns(dataset.column_names)
    rows = list(zip(*(column(dataset, c) for c in texts), strict=True))
    members: list[list[int]] = []
    skip: list[int] = []  # skip[b] leads to the first batch >= b that is not full
    last: dict[str, int] = {}

    def first_open(b: int) -> int:
        root = b
        while root < len(skip) and skip[root] != root:
            root = skip[root]
        while b < len(skip) and skip[b] != b:  # path compression
            skip[b], b = root, skip[b]
        return root

    for index in order:
        values = rows[index]
        b = first_open(max((last[v] + 1 for v in values if v in last), default=0))
        while b >= len(members):
            members.append([])
            skip.append(len(skip))
        members[b].append(index)
        for v in values:
            last[v] = b
        if len(members[b]) == batch_size:
            skip[b] = b + 1
    return [batch for batch in members if len(batch) == batch_size]


def _group_by_label(
    dataset: datasets.Dataset, order: list[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    _, label = split_columns(dataset.column_names)
    labels = column(dataset, label)
    by_label: dict = {}
    for index in order:
        by_label.setdefault(labels[index], []).append(index)
    # Pairs of the same label, shuffled; a batch of pairs holds each of its labels at least twice.
    pairs = [members[i : i + 2] for members in by_label.values() for i in range(0, len(members) - 1, 2)]
    rng.shuffle(pairs)
    flat = [index for pair in pairs for index in pair]
    size = batch_size - batch_size % 2
    return [flat[i : i + size] for i in range(0, len(flat) - size + 1, size)]


def batches(
    dataset: datasets.Dataset, batch_size: int, kind: str, seed: int, start_step: int = 0
) -> Iterator[tuple[int, list[int]]]:
    """(step, global batch) for step = start_step, start_step+1, ... across epochs, without end."""
    return ((step, batch) for step, _, batch in mixed_batches([(dataset, kind)], batch_size, "", seed, start_step))


def steps_per_epoch(dataset: datasets.Dataset, batch_size: int, kind: str, seed: int) -> int:
    return len(epoch_batches(dataset, batch_size, kind, seed, 0))


PROPORTIONAL, ROUND_ROBIN = "proportional", "round_robin"  # how several training sets take turns


def mixed_epoch(
    sets: Sequence[tuple[datasets.Dataset, str]], batch_size: int, mixing: str, seed: int, epoch: int
) -> list[tuple[int, list[int]]]:
    """One epoch of several sets, each (rows, sampler kind): (set index, global batch) in training order.
    One set gives its own epoch's batches in order."""
    each = [epoch_batches(rows, batch_size, kind, seed, epoch) for rows, kind in sets]
    if len(each) == 1:
        return [(0, batch) for batch in each[0]]
    if mixing == ROUND_ROBIN:
        turns = min(len(batches) for batches in each)
        return [(i, each[i][turn]) for turn in range(turns) for i in range(len(each))]
    order = [i for i, batches in enumerate(each) for _ in batches]
    random.Random(f"{seed}-{epoch}-mix").shuffle(order)
    taken = [0] * len(each)
    out = []
    for i in order:
        out.append((i, each[i][taken[i]]))
        taken[i] += 1
    return out


def mixed_batches(
    sets: Sequence[tuple[datasets.Dataset, str]], batch_size: int, mixing: str, seed: int, start_step: int = 0
) -> Iterator[tuple[int, int, list[int]]]:
    """(step, set index, global batch) for step = start_step, start_step+1, ... across epochs, without end."""
    step, epoch = 0, 0
    while True:
        schedule = mixed_epoch(sets, batch_size, mixing, seed, epoch)
        if not schedule:
            if len(sets) == 1:
                ((rows, kind),) = sets
                what = f"the training set ({len(rows)} rows) cannot fill one global batch of {batch_size}"
                what += f" with the {kind} sampler"
            else:
                sizes = ", ".join(str(len(rows)) for rows, _ in sets)
                what = f"the training sets ({sizes} rows) cannot fill one global batch of {batch_size} each"
            raise ValueError(f"{what}; lower training.batch_size or add data")
        for index, batch in schedule:
            if step >= start_step:
                yield step, index, batch
            step += 1
        epoch += 1


def shard(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This worker's contiguous slice of a global batch."""
    local = len(batch) // world_size
    return list(batch[rank * local : (rank + 1) * local])
