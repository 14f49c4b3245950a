"""Loaders read the real sets in ../shared/data with the row counts and quirks their README gives."""

from __future__ import annotations

import pytest

from lossweep.sweep import data as d


def test_stsbenchmark_rows_and_scaled_scores(data_dir):
    sizes = {split: len(d.stsb(data_dir / "stsbenchmark", split)) for split in ("train", "dev", "test")}
    assert sizes == {"train": 5749, "dev": 1500, "test": 1379}  # 197 lines with trailing notes included
    scores = d.stsb(data_dir / "stsbenchmark", "test")["score"]
    assert min(scores) == 0.0 and max(scores) == 1.0


def test_cranfield_split_and_empty_documents(data_dir):
    test = d.load_beir(data_dir / "cranfield", "test")
    train = d.load_beir(data_dir / "cranfield", "train")
    assert len(test.queries) == 75 and len(train.queries) == 150
    assert len(test.corpus) == 1398  # documents 471 and 995 have no text
    assert "471" not in test.corpus and "995" not in test.corpus
    assert sum(len(docs) for docs in test.qrels.values()) == 608


def test_views_of_snli_paws_banking(data_dir):
    assert d.snli_pair_class(data_dir / "snli", "dev").features["label"].names == [
        "entailment",
        "neutral",
        "contradiction",
    ]
    assert d.snli_triplets(data_dir / "snli", "dev").column_names == ["anchor", "positive", "negative"]
    paws = d.paws(data_dir / "paws", "dev")
    assert len(paws) == 8000 and set(paws["label"]) == {0, 1}
    banking = d.banking77(data_dir / "banking77", "train")
    assert len(banking) == 10003 and banking.features["label"].num_classes == 77


def test_missing_paths_and_unknown_views_name_the_file_and_the_fix(data_dir, tmp_path):
    with pytest.raises(d.DataError, match=r"no qrels for split 'dev'; splits found: \['test', 'train'\]"):
        d.load_beir(data_dir / "cranfield", "dev")
    with pytest.raises(d.DataError, match="view 'pairs' is not available for a stsb folder"):
        d.load_local(data_dir / "stsbenchmark", view="pairs")
    with pytest.raises(d.DataError, match="no such file or folder"):
        d.load_local(tmp_path / "nope")
    with pytest.raises(d.DataError, match="not a dataset folder lossweep knows"):
        d.load_local(tmp_path)


def test_unsupervised_views_are_seeded(data_dir):
    texts = d.unique_texts(d.snli_pairs(data_dir / "snli", "dev"))[:50]
    ct = d.contrastive_tension_view(texts, seed=3)
    assert ct["label"][:8] == [1, 0, 0, 0, 0, 0, 0, 0]
    assert ct["sentence1"][0] == ct["sentence2"][0] and ct["sentence1"][1] != ct["sentence2"][1]
    assert d.denoising_view(texts, seed=3)["damaged"] == d.denoising_view(texts, seed=3)["damaged"]
    assert d.fingerprint(ct) == d.fingerprint(d.contrastive_tension_view(texts, seed=3))
    assert d.fingerprint(ct) != d.fingerprint(d.contrastive_tension_view(texts, seed=4))
