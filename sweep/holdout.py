"""A validation set carved from the training data, for data that ships no validation split.

BEIR folders often hold train and test judgements only, and a user's CSV of pairs has no split at
all; choosing hyperparameters on the test queries would inflate every verdict. An eval set
`from_train: {size: N, seed: S}` takes N training queries (BEIR queries, or distinct anchors of
pairs), rows (scored pairs, triplets) or texts (class-labelled texts, drawn per class in proportion
to its size), with a seeded generator, as the validation set; every training row of what is held
out leaves the training data.
"""

from __future__ import annotations

import random
from collections import defaultdict

import datasets

from .data import DataError, RetrievalSet, rows_retrieval


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


def validation_pairs(pairs: datasets.Dataset, size: int, seed: int, own_corpus: bool = False) -> RetrievalSet:
    """`size` distinct anchors of training pairs as queries, judged on their own pairs. They search
    every document of the training pairs (as BEIR's held-out queries search the whole corpus), or,
    with `own_corpus`, only the documents of their own pairs."""
    full = rows_retrieval(pairs, source="from_train")
    held_out = sample_queries(full, size, seed)
    docs = {doc for q in held_out for doc in full.qrels[q]}
    corpus = {k: v for k, v in full.corpus.items() if k in docs} if own_corpus else full.corpus
    return RetrievalSet(corpus, {q: full.queries[q] for q in held_out}, {q: full.qrels[q] for q in held_out})


def sample_stratified(labels: list, size: int, seed: int) -> list[int]:
    """`size` row indices drawn per class in proportion to the class's size (largest remainder), the
    same for the same labels and seed: a held-out set of class-labelled texts with every class in it."""
    if size >= len(labels):
        raise DataError(f"from_train.size: {size} held-out texts would leave none of the {len(labels)} training texts")
    by_class: dict = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    classes = sorted(by_class, key=str)
    quotas = {c: size * len(by_class[c]) / len(labels) for c in classes}
    counts = {c: int(quotas[c]) for c in classes}
    by_remainder = sorted(classes, key=lambda c: (-(quotas[c] - counts[c]), str(c)))
    for c in by_remainder[: size - sum(counts.values())]:
        counts[c] += 1
    rng = random.Random(seed)
    return sorted(i for c in classes for i in rng.sample(by_class[c], counts[c]))


def sample_rows(rows: int, size: int, seed: int) -> list[int]:
    """`size` row indices of a training set of `rows` rows, the same for the same seed."""
    if size >= rows:
        raise DataError(f"from_train.size: {size} held-out rows would leave none of the {rows} training rows")
    return sorted(random.Random(seed).sample(range(rows), size))


def without_queries(dataset: datasets.Dataset, queries: set[str]) -> datasets.Dataset:
    """The training rows whose anchor (first column) is none of the held-out query texts."""
    anchors = dataset[dataset.column_names[0]]
    return dataset.select([i for i, anchor in enumerate(anchors) if anchor not in queries])


def without_rows(dataset: datasets.Dataset, rows: list[int]) -> datasets.Dataset:
    held_out = set(rows)
    return dataset.select([i for i in range(len(dataset)) if i not in held_out])
