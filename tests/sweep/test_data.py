"""Loaders read the real sets in ../shared/data with the row counts and quirks their README gives."""

from __future__ import annotations

import datasets
import pytest

from lossweep.sweep import data as sweep_data


def test_stsbenchmark_rows_and_scaled_scores(data_dir):
    sizes = {split: len(sweep_data.stsb(data_dir / "stsbenchmark", split)) for split in ("train", "dev", "test")}
    assert sizes == {"train": 5749, "dev": 1500, "test": 1379}  # 197 lines with trailing notes included
    scores = sweep_data.stsb(data_dir / "stsbenchmark", "test")["score"]
    assert min(scores) == 0.0 and max(scores) == 1.0


def test_cranfield_split_and_empty_documents(data_dir):
    test = sweep_data.load_beir(data_dir / "cranfield", "test")
    train = sweep_data.load_beir(data_dir / "cranfield", "train")
    assert len(test.queries) == 75 and len(train.queries) == 150
    assert len(test.corpus) == 1398  # documents 471 and 995 have no text
    assert "471" not in test.corpus and "995" not in test.corpus
    assert sum(len(docs) for docs in test.qrels.values()) == 608


def test_views_of_snli_paws_banking(data_dir):
    assert sweep_data.snli_pair_class(data_dir / "snli", "dev").features["label"].names == [
        "entailment",
        "neutral",
        "contradiction",
    ]
    assert sweep_data.snli_triplets(data_dir / "snli", "dev").column_names == ["anchor", "positive", "negative"]
    paws = sweep_data.paws(data_dir / "paws", "dev")
    assert len(paws) == 8000 and set(paws["label"]) == {0, 1}
    banking = sweep_data.banking77(data_dir / "banking77", "train")
    assert len(banking) == 10003 and banking.features["label"].num_classes == 77


def test_missing_paths_and_unknown_views_name_the_file_and_the_fix(data_dir, tmp_path):
    with pytest.raises(sweep_data.DataError, match=r"no qrels for split 'dev'; splits found: \['test', 'train'\]"):
        sweep_data.load_beir(data_dir / "cranfield", "dev")
    with pytest.raises(sweep_data.DataError, match="view 'pairs' is not available for a stsb folder"):
        sweep_data.load_local(data_dir / "stsbenchmark", view="pairs")
    with pytest.raises(sweep_data.DataError, match="no such file or folder"):
        sweep_data.load_local(tmp_path / "nope")
    with pytest.raises(sweep_data.DataError, match="not a dataset folder lossweep knows"):
        sweep_data.load_local(tmp_path)


def test_unsupervised_views_are_seeded(data_dir):
    texts = sweep_data.unique_texts(sweep_data.snli_pairs(data_dir / "snli", "dev"))[:50]
    ct = sweep_data.contrastive_tension_view(texts, seed=3)
    assert ct["label"][:8] == [1, 0, 0, 0, 0, 0, 0, 0]
    assert ct["sentence1"][0] == ct["sentence2"][0] and ct["sentence1"][1] != ct["sentence2"][1]
    assert sweep_data.denoising_view(texts, seed=3)["damaged"] == sweep_data.denoising_view(texts, seed=3)["damaged"]
    assert sweep_data.fingerprint(ct) == sweep_data.fingerprint(sweep_data.contrastive_tension_view(texts, seed=3))
    assert sweep_data.fingerprint(ct) != sweep_data.fingerprint(sweep_data.contrastive_tension_view(texts, seed=4))


def test_rows_of_pairs_become_a_retrieval_set_with_grades_and_distractors():
    rows = datasets.Dataset.from_dict(
        {
            "anchor": ["what lifts a wing", "what lifts a wing", "what is drag", "what is drag"],
            "positive": ["lift", "pressure", "drag", "lift"],
            "negative": ["noise", "noise", "heat", "mass"],
            "label": [2, 1, 1, 0],  # a grade; 0: judged not relevant, kept in the corpus
        }
    )
    data = sweep_data.rows_retrieval(rows, documents=["drag", "a training document"])
    assert data.queries == {"q1": "what lifts a wing", "q2": "what is drag"}
    assert data.corpus == {
        "d1": "lift",
        "d2": "noise",
        "d3": "pressure",
        "d4": "drag",
        "d5": "heat",
        "d6": "mass",
        "d7": "a training document",  # a distractor; "drag" is there already
    }
    assert data.qrels == {"q1": {"d1": 2, "d3": 1}, "q2": {"d4": 1}}
    assert data.graded
    plain = sweep_data.rows_retrieval(rows.remove_columns(["label", "negative"]))
    assert not plain.graded and plain.qrels == {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 1, "d1": 1}}


def test_rows_that_cannot_be_judged_as_retrieval_say_why():
    scored = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "score": [0.37]})
    with pytest.raises(
        sweep_data.DataError, match=r"label 'score' holds 0.37; retrieval reads it as a relevance grade"
    ):
        sweep_data.rows_retrieval(scored, source="pairs.csv")
    single = datasets.Dataset.from_dict({"text": ["a"], "label": [1]})
    with pytest.raises(
        sweep_data.DataError, match="needs \\(query, document\\) pairs, found columns \\['text', 'label'\\]"
    ):
        sweep_data.rows_retrieval(single)
    empty = datasets.Dataset.from_dict({"anchor": ["a", "b"], "positive": ["x", " "]})
    with pytest.raises(sweep_data.DataError, match="column 'positive' has 1 empty texts"):
        sweep_data.rows_retrieval(empty)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the file is empty; it needs a header and rows"),
        ("anchor,positive\n", "no rows, only a header; add rows"),
        ('anchor,positive\n"unclosed,quote\nx,y,z,w\n', "cannot be read as csv"),
    ],
    ids=["empty", "header only", "malformed"],
)
def test_a_broken_file_is_one_clear_error(tmp_path, content, expected):
    path = tmp_path / "rows.csv"
    path.write_text(content)
    with pytest.raises(sweep_data.DataError, match=expected) as caught:
        sweep_data.load_local(path)
    assert str(path) in str(caught.value)


def test_relative_paths_lie_under_data_dir_and_a_miss_says_where_it_looked(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs.csv").write_text("anchor,positive\na,b\n")
    (tmp_path / "here.csv").write_text("anchor,positive\na,b\n")
    monkeypatch.chdir(tmp_path)
    assert sweep_data.locate("pairs.csv", tmp_path / "data") == tmp_path / "data" / "pairs.csv"
    assert sweep_data.locate(str(tmp_path / "here.csv"), tmp_path / "data") == tmp_path / "here.csv"
    with pytest.raises(sweep_data.DataError) as caught:
        sweep_data.locate("here.csv", tmp_path / "data", "$LOSSWEEP_DATA_DIR")
    message = str(caught.value)
    assert f"under data_dir {tmp_path / 'data'} ($LOSSWEEP_DATA_DIR)" in message
    assert f"there is a here.csv in the current folder: give its absolute path ({tmp_path / 'here.csv'})" in message
