"""Global batches are seeded, reproducible, and keep their property across all workers' rows."""

from __future__ import annotations

from collections import Counter
from itertools import islice

from lossweep.sweep import data
from lossweep.sweep.sampler import batches, epoch_batches, mixed_batches, mixed_epoch, shard


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


def test_several_sets_take_turns_by_proportion_or_round_robin_one_set_per_batch(data_dir):
    pairs = data.beir_pairs(data_dir / "cranfield", "train")  # 1003 rows: 62 batches of 16
    scored = data.load_local(data_dir / "stsbenchmark", "dev", None, 0).select(range(320))  # 20 batches of 16
    sets = [(pairs, "no_duplicates"), (scored, "random")]
    own = [epoch_batches(rows, 16, kind, seed=3, epoch=0) for rows, kind in sets]

    proportional = mixed_epoch(sets, 16, "proportional", seed=3, epoch=0)
    # every batch of each set once, each set's batches in their own order, the sets interleaved
    assert [b for i, b in proportional if i == 0] == own[0] and [b for i, b in proportional if i == 1] == own[1]
    assert [i for i, _ in proportional[:40]].count(1) > 0
    assert proportional == mixed_epoch(sets, 16, "proportional", seed=3, epoch=0)  # seeded
    assert proportional != mixed_epoch(sets, 16, "proportional", seed=4, epoch=0)

    round_robin = mixed_epoch(sets, 16, "round_robin", seed=3, epoch=0)
    # one of each in turn, until the smaller set runs out (sentence-transformers' RoundRobinBatchSampler)
    assert [i for i, _ in round_robin] == [0, 1] * 20
    assert [b for i, b in round_robin if i == 1] == own[1]

    # resumable across epochs; one set alone is exactly the single-set order
    first = list(islice(mixed_batches(sets, 16, "proportional", seed=3), 100))
    assert list(islice(mixed_batches(sets, 16, "proportional", seed=3, start_step=90), 10)) == first[90:]
    alone = list(islice(mixed_batches(sets[:1], 16, "proportional", seed=3), 70))
    assert [(s, b) for s, _, b in alone] == list(islice(batches(pairs, 16, "no_duplicates", seed=3), 70))
