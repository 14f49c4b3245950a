"""Evaluators: one encoding for all sizes, and the same numbers as sentence-transformers' evaluators."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import pytrec_eval
import torch
from sentence_transformers.sentence_transformer.evaluation import (
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
)
from sentence_transformers.sentence_transformer.evaluation import (
    TripletEvaluator as STTripletEvaluator,
)

from lossweep.sweep import data as sweep_data
from lossweep.sweep.evaluate import ClassesEvaluator, RetrievalEvaluator, STSEvaluator, TripletEvaluator, evaluate
from lossweep.sweep.inputs import load_eval
from lossweep.sweep.models import load_model
from lossweep.sweep.spec import parse_spec

DIMS = [32, 16, 8]


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return load_model(tiny_model_path)


@pytest.fixture(scope="module")
def cranfield(data_dir):
    """Cranfield's first 60 test queries over their judged documents and the corpus's first 400 (658 of
    1,398): the equalities below hold on any corpus, and half of it halves the module's time."""
    full = sweep_data.load_beir(data_dir / "cranfield", "test", limit=60)
    kept = {doc for docs in full.qrels.values() for doc in docs} | set(list(full.corpus)[:400])
    return dataclasses.replace(full, corpus={doc: text for doc, text in full.corpus.items() if doc in kept})


def count_encoded_texts(model, monkeypatch) -> list[str]:
    """Record every text the model is asked to encode (the real encoder still runs)."""
    seen: list[str] = []
    original = model.encode  # encode_query and encode_document call it with inputs=...

    def spy(*args, **kwargs):
        texts = args[0] if args else kwargs["inputs"]
        seen.extend([texts] if isinstance(texts, str) else texts)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    return seen


def test_retrieval_encodes_every_text_once_for_all_sizes(model, cranfield, monkeypatch):
    seen = count_encoded_texts(model, monkeypatch)
    result = RetrievalEvaluator("cranfield", cranfield, dims=DIMS)(model)
    texts = list(cranfield.queries.values()) + list(cranfield.corpus.values())
    assert Counter(seen) == Counter(texts)
    for dim in DIMS:
        assert f"eval/cranfield/ndcg_at_10/dim_{dim}" in result.metrics
    assert result.metrics["eval/cranfield/ndcg_at_10"] == result.metrics["eval/cranfield/ndcg_at_10/dim_32"]


def test_sets_searching_one_corpus_share_its_encoding(model, data_dir, monkeypatch):
    # A validation set carved from the training queries searches the same corpus as the test set.
    validation = sweep_data.load_beir(data_dir / "cranfield", "train", limit=20)
    test = sweep_data.load_beir(data_dir / "cranfield", "test", limit=20)
    seen = count_encoded_texts(model, monkeypatch)
    result = evaluate(model, [RetrievalEvaluator("val", validation), RetrievalEvaluator("test", test)])
    texts = list(validation.queries.values()) + list(test.queries.values()) + list(test.corpus.values())
    assert Counter(seen) == Counter(texts)
    alone = RetrievalEvaluator("test", test)(model).metrics
    assert result.metrics["eval/test/ndcg_at_10"] == pytest.approx(alone["eval/test/ndcg_at_10"], abs=1e-9)


def test_a_corpus_scored_by_chunks_ranks_as_a_whole_one_and_encodes_no_more_than_a_chunk(model, cranfield, monkeypatch):
    # The corpus in chunks of 300: one encoding of at most 300 texts per chunk for every size, and every
    # metric of every query as when the whole corpus is scored at once.
    whole = RetrievalEvaluator("cranfield", cranfield, dims=DIMS)(model)
    calls = []
    original = model.encode

    def spy(*args, **kwargs):
        calls.append(len(args[0] if args else kwargs["inputs"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    chunked = RetrievalEvaluator("cranfield", cranfield, dims=DIMS, corpus_chunk_size=300)(model)
    corpus_calls = calls[1:]  # the first encodes the queries
    n = len(cranfield.corpus)
    assert n > 600 and corpus_calls == [min(300, n - start) for start in range(0, n, 300)]
    assert chunked.metrics.keys() == whole.metrics.keys()
    for name, value in whole.metrics.items():
        assert chunked.metrics[name] == pytest.approx(value, abs=1e-6), name
        assert chunked.per_query[name] == pytest.approx(whole.per_query[name], abs=1e-6), name


def binary(data: sweep_data.RetrievalSet) -> sweep_data.RetrievalSet:
    """The same judgements with every grade 1, as sentence-transformers reads them."""
    return dataclasses.replace(data, qrels={q: dict.fromkeys(docs, 1) for q, docs in data.qrels.items()})


@pytest.mark.parametrize("graded", [False, True], ids=["binary judgements", "graded judgements"])
def test_retrieval_metrics_equal_sentence_transformers_at_every_size(model, cranfield, graded):
    # On binary judgements every metric is sentence-transformers' own; on graded ones (Cranfield's 1-4)
    # all but NDCG still are, and NDCG takes the grades (next test).
    data = cranfield if graded else binary(cranfield)
    assert data.graded is graded
    ours = RetrievalEvaluator("cranfield", data, dims=DIMS, batch_size=32)(model).metrics
    relevant = {q: set(docs) for q, docs in cranfield.qrels.items()}
    for dim in DIMS:
        reference = InformationRetrievalEvaluator(
            cranfield.queries,
            cranfield.corpus,
            relevant,
            name="ref",
            truncate_dim=dim,
            write_csv=False,
            precision_recall_at_k=[1, 10, 100],
            map_at_k=[100],
        )(model)
        pairs = [("mrr_at_10", "mrr@10"), ("map_at_100", "map@100"), ("recall_at_1", "recall@1")]
        pairs += [("recall_at_10", "recall@10"), ("recall_at_100", "recall@100")]
        pairs += [] if graded else [("ndcg_at_10", "ndcg@10")]
        for ours_name, ref_name in pairs:
            assert ours[f"eval/cranfield/{ours_name}/dim_{dim}"] == pytest.approx(
                reference[f"ref_cosine_{ref_name}"], abs=1e-6
            )
        if graded:  # the grades change the figure: it is not sentence-transformers' binary NDCG
            assert abs(ours[f"eval/cranfield/ndcg_at_10/dim_{dim}"] - reference["ref_cosine_ndcg@10"]) > 1e-4


def test_graded_ndcg_equals_trec_eval_per_query(model, cranfield):
    # trec_eval's ndcg_cut (pytrec_eval), which MTEB reports, on our ranking of each query.
    evaluator = RetrievalEvaluator("cranfield", cranfield, dims=[16])
    result = evaluator(model)  # sizes 32, then 16: the IR evaluator keeps each size's ranking
    assert cranfield.graded
    run = {}
    for query_id, hits in zip(evaluator.ir.queries_ids, evaluator.ir.results[-1], strict=True):
        ranked = sorted(hits, key=lambda h: (-h["score"], h["corpus_id"]))
        run[query_id] = {hit["corpus_id"]: float(len(ranked) - rank) for rank, hit in enumerate(ranked)}
    reference = pytrec_eval.RelevanceEvaluator(cranfield.qrels, {"ndcg_cut.10"}).evaluate(run)
    ours = result.per_query["eval/cranfield/ndcg_at_10/dim_16"]
    assert set(ours) == set(reference)
    for query_id, value in ours.items():
        assert value == pytest.approx(reference[query_id]["ndcg_cut_10"], abs=1e-6), query_id
    assert result.metrics["eval/cranfield/ndcg_at_10/dim_16"] == pytest.approx(np.mean(list(ours.values())), abs=1e-12)


def test_per_query_values_average_to_every_reported_metric_at_every_size(model, cranfield, data_dir):
    # The verdict's intervals resample these per-item values: their mean must be the reported figure.
    result = RetrievalEvaluator("cranfield", cranfield, dims=DIMS)(model)
    retrieval = [name for name in result.metrics if name.startswith("eval/cranfield/")]
    assert len(retrieval) == 6 * (len(DIMS) + 1)  # six metrics at every size, and at full size unsuffixed
    for name in retrieval:
        per_query = result.per_query[name]
        assert len(per_query) == len(cranfield.qrels) == 60
        assert np.mean(list(per_query.values())) == pytest.approx(result.metrics[name], abs=1e-12), name
    triplets = sweep_data.snli_triplets(data_dir / "snli", "test").select(range(100))
    result = TripletEvaluator("nli", triplets, dims=[16])(model)
    for name in ("eval/nli/cosine_accuracy", "eval/nli/cosine_accuracy/dim_16"):
        assert len(result.per_query[name]) == 100
        assert np.mean(list(result.per_query[name].values())) == pytest.approx(result.metrics[name], abs=1e-6)


def test_sts_and_triplet_equal_sentence_transformers(model, data_dir):
    sts = sweep_data.stsb(data_dir / "stsbenchmark", "test").select(range(300))
    ours = STSEvaluator("sts", sts, dims=DIMS, batch_size=16)(model).metrics
    for dim in DIMS:
        ref = EmbeddingSimilarityEvaluator(
            sts["sentence1"], sts["sentence2"], sts["score"], name="r", truncate_dim=dim
        )(model)
        assert ours[f"eval/sts/spearman_cosine/dim_{dim}"] == pytest.approx(ref["r_spearman_cosine"], abs=1e-6)
    triplets = sweep_data.snli_triplets(data_dir / "snli", "test").select(range(300))
    ours = TripletEvaluator("nli", triplets, batch_size=16)(model).metrics
    ref = STTripletEvaluator(triplets["anchor"], triplets["positive"], triplets["negative"], name="r")(model)
    assert ours["eval/nli/cosine_accuracy"] == pytest.approx(ref["r_cosine_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_packaged_minilm_matches_the_published_cranfield_figures(data_dir):
    # Reference: sentence-transformers 6.2's InformationRetrievalEvaluator on base all-MiniLM-L6-v2, which
    # reads the judgements as binary; lossweep's NDCG on the graded judgements is trec_eval's (MTEB's).
    model, cranfield = load_model("minilm"), sweep_data.load_beir(data_dir / "cranfield", "test")
    result = RetrievalEvaluator("cranfield", binary(cranfield))(model)
    assert result.metrics["eval/cranfield/ndcg_at_10"] == pytest.approx(0.4339, abs=5e-5)
    assert result.metrics["eval/cranfield/mrr_at_10"] == pytest.approx(0.5612, abs=5e-5)
    assert result.metrics["eval/cranfield/recall_at_10"] == pytest.approx(0.4527, abs=5e-5)
    graded = RetrievalEvaluator("cranfield", cranfield)(model).metrics
    assert graded["eval/cranfield/ndcg_at_10"] == pytest.approx(0.4041, abs=5e-5)
    assert graded["eval/cranfield/mrr_at_10"] == result.metrics["eval/cranfield/mrr_at_10"]


# --- Retrieval from pairs --------------------------------------------------------------------------------------


def write_pairs(path, rows: list[tuple]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "grade"][: len(rows[0])])
        writer.writerows(rows)
    return str(path)


def write_beir(folder, queries: list[str], documents: list[str], judged: dict[tuple[str, str], int]) -> str:
    """The same judgements as a BEIR folder, with ids of its own (not the pairs' q1/d1)."""
    (folder / "qrels").mkdir(parents=True)
    query_ids = {q: f"query-{i:03d}" for i, q in enumerate(sorted(queries))}
    doc_ids = {t: f"doc-{i:04d}" for i, t in enumerate(reversed(documents))}
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"_id": i, "text": q}) + "\n" for q, i in query_ids.items())
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for t, i in doc_ids.items())
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{query_ids[q]}\t{doc_ids[t]}\t{g}\n" for (q, t), g in judged.items())
    return str(folder)


@pytest.mark.parametrize("graded", [False, True], ids=["pairs", "pairs with grades"])
def test_a_pairs_file_scores_as_the_same_data_written_as_a_beir_folder(model, data_dir, tmp_path, graded):
    # Given Cranfield's test judgements as a CSV of pairs, and its training pairs as the training file
    test = sweep_data.load_beir(data_dir / "cranfield", "test", limit=40)
    train = sweep_data.beir_pairs(data_dir / "cranfield", "train")
    pairs = [
        (test.queries[q], test.corpus[doc], grade) for q, docs in test.qrels.items() for doc, grade in docs.items()
    ]
    rows = pairs if graded else [p[:2] for p in pairs]
    renamed = {"columns": {"grade": "label"}} if graded else {}  # sentence-transformers' name for the label
    spec = parse_spec(
        {
            "name": "pairs",
            "data_dir": str(tmp_path),
            "train": {
                "path": write_pairs(tmp_path / "train.csv", list(zip(train["anchor"], train["positive"], strict=True)))
            },
            "eval": [
                {"type": "retrieval", "path": write_pairs(tmp_path / "test.csv", rows), "name": "pairs"} | renamed,
                {"type": "retrieval", "path": "test.csv", "corpus": "own", "name": "own"} | renamed,
            ],
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "training": {"steps": 1},
        }
    )
    # And the same data as a BEIR folder: the pairs' documents, then the training documents as distractors
    documents = list(dict.fromkeys([t for _, t, _ in pairs] + list(train["positive"])))
    judged = {(q, t): (g if graded else 1) for q, t, g in pairs}
    beir = write_beir(tmp_path / "beir", [q for q, _, _ in pairs], documents, judged)
    # When both are scored
    from_pairs = load_eval(spec.eval[0], spec).retrieval
    assert len(from_pairs.corpus) == len(documents) and len(from_pairs.queries) == 40
    assert len(load_eval(spec.eval[1], spec).retrieval.corpus) == len({t for _, t, _ in pairs})  # corpus: own
    ours = RetrievalEvaluator("x", from_pairs)(model).metrics
    reference = RetrievalEvaluator("x", sweep_data.load_beir(Path(beir), "test"))(model).metrics
    # Then every metric is the same
    assert ours.keys() == reference.keys()
    for name, value in ours.items():
        assert value == pytest.approx(reference[name], abs=1e-6), name


# --- Class-labelled texts -------------------------------------------------------------------------------------


def test_class_metrics_equal_hand_computed_values():
    # Five texts on a circle at angles 0, 0.3, 0.9, 1.2, 1.6, classes a a a b b; each text's neighbours
    # by cosine, nearest first, and what the metrics make of them (k-NN over the 3 nearest):
    #   0: 1a 2a 3b 4b   R=2  P@1 1  R-prec 2/2  MAP@R (1/1 + 2/2)/2 = 1     3-NN a a b -> a (right)
    #   1: 0a 2a 3b 4b   R=2  P@1 1  R-prec 1    MAP@R 1                   a a b -> a (right)
    #   2: 3b 1a 4b 0a   R=2  P@1 0  R-prec 1/2  MAP@R (0 + 1/2)/2 = 1/4   b a b -> b (wrong)
    #   3: 2a 4b 1a 0a   R=1  P@1 0  R-prec 0    MAP@R 0                   a b a -> a (wrong)
    #   4: 3b 2a 1a 0a   R=1  P@1 1  R-prec 1    MAP@R 1                   b a a -> a (wrong)
    angles = torch.tensor([0.0, 0.3, 0.9, 1.2, 1.6])
    embeddings = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    rows = datasets.Dataset.from_dict({"text": list("vwxyz"), "label": ["a", "a", "a", "b", "b"]})
    evaluator = ClassesEvaluator("c", rows)
    evaluator.K = 3
    per_query = evaluator.per_query(embeddings)
    assert per_query["precision_at_1"] == {"0": 1.0, "1": 1.0, "2": 0.0, "3": 0.0, "4": 1.0}
    assert per_query["r_precision"] == {"0": 1.0, "1": 1.0, "2": 0.5, "3": 0.0, "4": 1.0}
    assert per_query["map_at_r"] == {"0": 1.0, "1": 1.0, "2": 0.25, "3": 0.0, "4": 1.0}
    assert per_query["knn_accuracy_at_10"] == {"0": 1.0, "1": 1.0, "2": 0.0, "3": 0.0, "4": 0.0}


def test_class_metrics_equal_pytorch_metric_learning_on_banking77(model, data_dir):
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    rows = sweep_data.banking77(data_dir / "banking77", "test")
    result = ClassesEvaluator("b77", rows, dims=[16])(model)
    embeddings = model.encode(rows["text"], convert_to_tensor=True)
    calculator = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity()),
    )
    for dim, suffix in ((32, ""), (16, "/dim_16")):
        x = torch.nn.functional.normalize(embeddings[:, :dim], dim=-1)
        reference = calculator.get_accuracy(x, torch.tensor(rows["label"]))
        for ours, theirs in (("precision_at_1", "precision_at_1"), ("r_precision", "r_precision")):
            assert result.metrics[f"eval/b77/{ours}{suffix}"] == pytest.approx(reference[theirs], abs=1e-6)
        assert result.metrics[f"eval/b77/map_at_r{suffix}"] == pytest.approx(
            reference["mean_average_precision_at_r"], abs=1e-6
        )
    for name, values in result.per_query.items():  # per text, for the verdict's bootstrap
        assert len(values) == len(rows)
        assert np.mean(list(values.values())) == pytest.approx(result.metrics[name], abs=1e-12)
