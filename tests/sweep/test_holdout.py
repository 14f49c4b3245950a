"""A validation set carved from the training data: seeded, deterministic, and never trained on."""

from __future__ import annotations

from collections import Counter

import pytest

from lossweep.sweep import data
from lossweep.sweep.evaluate import build_evaluators
from lossweep.sweep.inputs import load_eval, train_dataset
from lossweep.sweep.sampler import batches
from lossweep.sweep.spec import parse_spec


def cranfield_spec(data_dir, size: int = 30, seed: int = 0):
    return parse_spec(
        {
            "name": "holdout",
            "data_dir": str(data_dir),
            "train": {"path": "cranfield", "split": "train"},
            "eval": [
                {"type": "retrieval", "from_train": {"size": size, "seed": seed}, "name": "cranfield-val"},
                {"type": "retrieval", "path": "cranfield", "split": "test", "name": "cranfield"},
            ],
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "training": {"batch_size": 16, "steps": 10},
        }
    )


def test_carved_queries_are_seeded_training_queries_with_their_judgements(data_dir):
    spec = cranfield_spec(data_dir)
    train = data.load_beir(data_dir / "cranfield", "train")
    validation = load_eval(spec.eval[0], spec).retrieval
    assert len(validation.queries) == 30 and set(validation.queries) <= set(train.qrels)
    assert validation.qrels == {q: train.qrels[q] for q in validation.queries}
    assert validation.corpus == train.corpus  # searched against the whole corpus, as the test queries are
    assert load_eval(spec.eval[0], spec).retrieval.queries == validation.queries  # deterministic
    other = load_eval(cranfield_spec(data_dir, seed=1).eval[0], spec).retrieval
    assert set(other.queries) != set(validation.queries)
    assert not set(validation.queries) & set(data.load_beir(data_dir / "cranfield", "test").queries)


def test_no_held_out_query_reaches_the_trainer(data_dir):
    spec = cranfield_spec(data_dir)
    validation = load_eval(spec.eval[0], spec).retrieval
    held_out = set(validation.queries.values())
    all_pairs = data.beir_pairs(data_dir / "cranfield", "train")
    trained = train_dataset(spec)  # what every Ray Train worker loads
    assert not held_out & set(trained["anchor"])
    judgements = sum(len(validation.qrels[q]) for q in validation.queries)
    assert len(trained) == len(all_pairs) - judgements
    # and every global batch the sampler builds comes from those rows only
    for step, batch in batches(trained, 16, "no_duplicates", seed=0):
        assert not held_out & set(trained.select(batch)["anchor"])
        if step == 200:
            break


def test_rows_are_carved_from_scored_pairs_too(data_dir):
    spec = parse_spec(
        {
            "name": "holdout-rows",
            "data_dir": str(data_dir),
            "train": {"path": "stsbenchmark", "split": "train", "limit": 500},
            "eval": [{"type": "sts", "from_train": {"size": 100, "seed": 3}, "name": "sts-val"}],
            "loss": {"name": "CoSENTLoss"},
            "training": {"batch_size": 16, "steps": 10},
        }
    )
    held_out = load_eval(spec.eval[0], spec).rows
    trained = train_dataset(spec)
    assert len(held_out) == 100 and len(trained) == 400
    pairs = set(zip(trained["sentence1"], trained["sentence2"], strict=True))
    assert not pairs & set(zip(held_out["sentence1"], held_out["sentence2"], strict=True))
    assert [e.name for e in build_evaluators(spec)] == ["sts-val"]


def test_carving_too_much_is_refused_with_the_fix(data_dir):
    spec = cranfield_spec(data_dir, size=150)
    with pytest.raises(
        data.DataError, match="150 held-out queries would leave no training query of 150; hold out fewer"
    ):
        load_eval(spec.eval[0], spec)


def test_no_held_out_anchor_of_a_pairs_file_reaches_the_trainer(data_dir, tmp_path):
    # Given a CSV of (question, answer) pairs, several answers per question, and 40 questions carved out
    pairs = data.beir_pairs(data_dir / "scifact", "train")
    path = tmp_path / "pairs.csv"
    pairs.rename_columns({"anchor": "question", "positive": "answer"}).to_csv(str(path), index=False)
    spec = parse_spec(
        {
            "name": "pairs-holdout",
            "train": {"path": str(path), "columns": {"question": "anchor", "answer": "positive"}},
            "eval": [{"type": "retrieval", "from_train": {"size": 40, "seed": 0}, "name": "val"}],
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "training": {"batch_size": 16, "steps": 10},
        }
    )
    validation = load_eval(spec.eval[0], spec).retrieval
    held_out = set(validation.queries.values())
    # Then the held-out questions are whole anchors with all their answers judged, searching every answer
    assert len(held_out) == 40 and held_out <= set(pairs["anchor"])
    answers = {q: {validation.corpus[doc] for doc in docs} for q, docs in validation.qrels.items()}
    for query_id, text in validation.queries.items():
        assert answers[query_id] == {p for a, p in zip(pairs["anchor"], pairs["positive"], strict=True) if a == text}
    assert set(validation.corpus.values()) == set(pairs["positive"])
    # And none of their pairs is trained on, in any global batch
    trained = train_dataset(spec)
    assert not held_out & set(trained["anchor"])
    assert len(trained) == len(pairs) - sum(len(docs) for docs in validation.qrels.values())
    for step, batch in batches(trained, 16, "no_duplicates", seed=0):
        assert not held_out & set(trained.select(batch)["anchor"])
        if step == 100:
            break
    assert load_eval(spec.eval[0], spec).retrieval.queries == validation.queries  # seeded


def test_class_labelled_texts_are_held_out_in_proportion_to_each_class(data_dir):
    spec = parse_spec(
        {
            "name": "classes-holdout",
            "data_dir": str(data_dir),
            "train": {"path": "banking77", "split": "train"},
            "eval": [{"type": "classes", "from_train": {"size": 770, "seed": 1}, "name": "b77-val"}],
            "loss": {"name": "BatchHardTripletLoss"},
            "training": {"batch_size": 16, "steps": 10},
        }
    )
    train = data.banking77(data_dir / "banking77", "train")
    held_out = load_eval(spec.eval[0], spec).rows
    assert len(held_out) == 770
    counts, totals = Counter(held_out["label"]), Counter(train["label"])
    for label, total in totals.items():  # 770 of 10,003: each class by its share, rounded
        assert abs(counts[label] - 770 * total / len(train)) < 1
    trained = train_dataset(spec)
    assert len(trained) == len(train) - 770 and not set(held_out["text"]) & set(trained["text"])
    assert load_eval(spec.eval[0], spec).rows["text"] == held_out["text"]  # seeded
