"""A validation set carved from the training data, for data that ships no validation split.

BEIR folders often hold train and test judgements only; choosing hyperparameters on the test
queries would inflate every verdict. An eval set `from_train: {size: N, seed: S}` takes N training
queries (or rows, for scored pairs and triplets), drawn with a seeded generator from the sorted ids,
as the validation set, and every training pair of those queries leaves the training data.
"""

from __future__ import annotations

import random

import datasets

from .data import DataError, RetrievalSet


def sample_queries(train: RetrievalSet, size: int, seed: int) -> list[str]:
    """`size` judged training queries, the same for the same data and seed."""
    ids = sorted(train.qrels)
    if size >= len(ids):
        raise DataError(
            f"from_train.size: {size} held-out queries would leave no training query of {len(ids)}; "
            f"hold out fewer (a fifth is usual: {max(1, len(ids) // 5)})"
        )
    return sorted(random.Random(seed).sample(ids, size))


def validation_retrieval(train: RetrievalSet, size: int, seed: int) -> RetrievalSet:
    """The held-out queries with their judgements, searched against the whole corpus."""
    held_out = sample_queries(train, size, seed)
    return RetrievalSet(train.corpus, {q: train.queries[q] for q in held_out}, {q: train.qrels[q] for q in held_out})


def sample_rows(rows: int, size: int, seed: int) -> list[int]:
    """`size` row indices of a training set of `rows` rows, the same for the same seed."""
    if size >= rows:
        raise DataError(f"from_train.size: {size} held-out rows would leave none of the {rows} training rows")
    return sorted(random.Random(seed).sample(range(rows), size))


def without_queries(dataset: datasets.Dataset, queries: set[str]) -> datasets.Dataset:
    """The training pairs whose anchor (first column) is none of the held-out query texts."""
    anchors = dataset[dataset.column_names[0]]
    return dataset.select([i for i, anchor in enumerate(anchors) if anchor not in queries])


def without_rows(dataset: datasets.Dataset, rows: list[int]) -> datasets.Dataset:
    held_out = set(rows)
    return dataset.select([i for i in range(len(dataset)) if i not in held_out])
