"""Global batches are seeded, reproducible, and keep their property across all workers' rows."""

from __future__ import annotations

from collections import Counter
from itertools import islice

from lossweep.sweep import data
from lossweep.sweep.sampler import batches, epoch_batches, shard


def test_no_duplicate_text_in_any_global_batch(data_dir):
    # SNLI premises repeat across rows (3 hypotheses per premise): the sampler must split them up.
    pairs = data.snli_pairs(data_dir / "snli", "dev").select(range(600))
    assert len(set(pairs["anchor"])) < len(pairs)
    for batch in epoch_batches(pairs, 32, "no_duplicates", seed=1, epoch=0):
        texts = [pairs[i]["anchor"] for i in batch] + [pairs[i]["positive"] for i in batch]
        assert len(texts) == len(set(texts))


def test_group_by_label_puts_each_label_at_least_twice(data_dir):
    classes = data.banking77(data_dir / "banking77", "test")
    for batch in epoch_batches(classes, 32, "group_by_label", seed=0, epoch=0):
        counts = Counter(classes[i]["label"] for i in batch)
        assert len(batch) == 32 and min(counts.values()) >= 2


def test_order_is_seeded_and_resumable(data_dir):
    pairs = data.beir_pairs(data_dir / "cranfield", "train")
    first = list(islice(batches(pairs, 16, "random", seed=7), 70))  # crosses into the second epoch
    assert first == list(islice(batches(pairs, 16, "random", seed=7), 70))
    assert first != list(islice(batches(pairs, 16, "random", seed=8), 70))
    resumed = list(islice(batches(pairs, 16, "random", seed=7, start_step=40), 30))
    assert resumed == first[40:]
    assert first[0][1] != first[62][1]  # a new permutation each epoch (62 steps per epoch)


def test_each_worker_takes_its_contiguous_slice():
    batch = list(range(10, 18))
    assert shard(batch, 0, 2) + shard(batch, 1, 2) == batch
    assert shard(batch, 3, 4) == [16, 17]
