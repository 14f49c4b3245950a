"""Evaluators: one encoding for all sizes, and the same numbers as sentence-transformers' evaluators."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sentence_transformers.sentence_transformer.evaluation import (
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
)
from sentence_transformers.sentence_transformer.evaluation import (
    TripletEvaluator as STTripletEvaluator,
)

from lossweep.sweep import data as d
from lossweep.sweep.evaluate import RetrievalEvaluator, STSEvaluator, TripletEvaluator, evaluate
from lossweep.sweep.models import load_model

DIMS = [32, 16, 8]


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return load_model(tiny_model_path)


@pytest.fixture(scope="module")
def cranfield(data_dir):
    return d.load_beir(data_dir / "cranfield", "test")


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
    validation = d.load_beir(data_dir / "cranfield", "train", limit=20)
    test = d.load_beir(data_dir / "cranfield", "test", limit=20)
    seen = count_encoded_texts(model, monkeypatch)
    result = evaluate(model, [RetrievalEvaluator("val", validation), RetrievalEvaluator("test", test)])
    texts = list(validation.queries.values()) + list(test.queries.values()) + list(test.corpus.values())
    assert Counter(seen) == Counter(texts)
    alone = RetrievalEvaluator("test", test)(model).metrics
    assert result.metrics["eval/test/ndcg_at_10"] == pytest.approx(alone["eval/test/ndcg_at_10"], abs=1e-9)


def test_retrieval_metrics_equal_sentence_transformers_at_every_size(model, cranfield):
    ours = RetrievalEvaluator("cranfield", cranfield, dims=DIMS, batch_size=32)(model).metrics
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
        for ours_name, ref_name in [
            ("ndcg_at_10", "ndcg@10"),
            ("mrr_at_10", "mrr@10"),
            ("map_at_100", "map@100"),
            ("recall_at_1", "recall@1"),
            ("recall_at_10", "recall@10"),
            ("recall_at_100", "recall@100"),
        ]:
            assert ours[f"eval/cranfield/{ours_name}/dim_{dim}"] == pytest.approx(
                reference[f"ref_cosine_{ref_name}"], abs=1e-6
            )


def test_per_query_values_average_to_every_reported_metric_at_every_size(model, cranfield, data_dir):
    # The verdict's intervals resample these per-item values: their mean must be the reported figure.
    result = RetrievalEvaluator("cranfield", cranfield, dims=DIMS)(model)
    retrieval = [name for name in result.metrics if name.startswith("eval/cranfield/")]
    assert len(retrieval) == 6 * (len(DIMS) + 1)  # six metrics at every size, and at full size unsuffixed
    for name in retrieval:
        per_query = result.per_query[name]
        assert len(per_query) == 75
        assert np.mean(list(per_query.values())) == pytest.approx(result.metrics[name], abs=1e-12), name
    triplets = d.snli_triplets(data_dir / "snli", "test").select(range(100))
    result = TripletEvaluator("nli", triplets, dims=[16])(model)
    for name in ("eval/nli/cosine_accuracy", "eval/nli/cosine_accuracy/dim_16"):
        assert len(result.per_query[name]) == 100
        assert np.mean(list(result.per_query[name].values())) == pytest.approx(result.metrics[name], abs=1e-6)


def test_sts_and_triplet_equal_sentence_transformers(model, data_dir):
    sts = d.stsb(data_dir / "stsbenchmark", "test").select(range(300))
    ours = STSEvaluator("sts", sts, dims=DIMS, batch_size=16)(model).metrics
    for dim in DIMS:
        ref = EmbeddingSimilarityEvaluator(
            sts["sentence1"], sts["sentence2"], sts["score"], name="r", truncate_dim=dim
        )(model)
        assert ours[f"eval/sts/spearman_cosine/dim_{dim}"] == pytest.approx(ref["r_spearman_cosine"], abs=1e-6)
    triplets = d.snli_triplets(data_dir / "snli", "test").select(range(300))
    ours = TripletEvaluator("nli", triplets, batch_size=16)(model).metrics
    ref = STTripletEvaluator(triplets["anchor"], triplets["positive"], triplets["negative"], name="r")(model)
    assert ours["eval/nli/cosine_accuracy"] == pytest.approx(ref["r_cosine_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_packaged_minilm_matches_the_published_cranfield_figures(data_dir):
    # Reference: sentence-transformers 6.2's InformationRetrievalEvaluator on base all-MiniLM-L6-v2.
    result = RetrievalEvaluator("cranfield", d.load_beir(data_dir / "cranfield", "test"))(load_model("minilm"))
    assert result.metrics["eval/cranfield/ndcg_at_10"] == pytest.approx(0.4339, abs=5e-5)
    assert result.metrics["eval/cranfield/mrr_at_10"] == pytest.approx(0.5612, abs=5e-5)
    assert result.metrics["eval/cranfield/recall_at_10"] == pytest.approx(0.4527, abs=5e-5)
