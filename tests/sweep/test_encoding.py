"""Encoding across the cluster: a Ray Data pool of encoders gives the model's own vectors in the texts'
order, and sentence-transformers mines from such vectors exactly as from the model."""

from __future__ import annotations

import numpy as np
import pytest

from lossweep.sweep import negatives, tasks
from lossweep.sweep.encoding import Precomputed, encode_on_cluster
from lossweep.sweep.inputs import mining_input, train_pairs
from lossweep.sweep.models import load_model
from lossweep.sweep.spec import parse_spec


def mining_spec(data_dir, model: str):
    return parse_spec(
        {
            "name": "mine",
            "data_dir": str(data_dir),
            "model": model,
            "train": {"path": "cranfield", "split": "train", "view": "top-pairs", "limit": 60},
            "negatives": {"num_negatives": 2, "range_max": 20},
            "loss": {"name": "TripletLoss"},
            "training": {"steps": 1},
        }
    )


def test_mining_from_precomputed_vectors_is_mining_with_the_model(data_dir, tiny_prompted_model_path, tmp_path):
    spec = mining_spec(data_dir, tiny_prompted_model_path)  # a model with prompts: the vectors must carry them
    inputs, knobs = mining_input(spec, train_pairs(spec)), negatives.knobs(spec)
    model = load_model(tiny_prompted_model_path)
    negatives.mine(inputs, knobs, model, tmp_path / "direct")
    anchors = list(dict.fromkeys(inputs.pairs["anchor"]))
    documents = list(dict.fromkeys(list(inputs.corpus) + list(inputs.pairs["positive"])))
    queries = model.encode_query(anchors, prompt=knobs.query_prompt, normalize_embeddings=True)
    corpus = model.encode_document(documents, prompt=knobs.document_prompt, normalize_embeddings=True)
    vectors = {"query": dict(zip(anchors, queries, strict=True)), "document": dict(zip(documents, corpus, strict=True))}
    negatives.mine(inputs, knobs, Precomputed(model, vectors), tmp_path / "precomputed")
    direct, precomputed = negatives.read(tmp_path / "direct"), negatives.read(tmp_path / "precomputed")
    assert direct["negative_1"] == precomputed["negative_1"] and direct["negative_2"] == precomputed["negative_2"]
    assert np.allclose(direct["scores"], precomputed["scores"], atol=1e-5)


@pytest.mark.slow
def test_an_encoder_pool_gives_the_model_s_vectors_in_order(ray_local, tiny_prompted_model_path):
    texts = [f"a document about subject {i}" for i in range(300)]
    found = encode_on_cluster(
        tiny_prompted_model_path,
        texts,
        side="document",
        prompt=None,  # the model's own document prompt, as encode_document applies it
        max_seq_length=None,
        actors=2,
        cpus_per_actor=0.5,
        gpus_per_actor=0,
        batch_size=32,
    )
    expected = load_model(tiny_prompted_model_path).encode_document(texts, normalize_embeddings=True)
    assert found.shape == expected.shape and np.allclose(found, expected, atol=1e-5)


@pytest.mark.slow
def test_untrained_scores_from_a_corpus_encoded_on_the_pool_equal_the_task_s_own(
    ray_local, data_dir, tiny_prompted_model_path, monkeypatch
):
    spec = parse_spec(
        {
            "name": "scores",
            "data_dir": str(data_dir),
            "model": tiny_prompted_model_path,  # its document prompt must reach the pool's vectors
            "train": {"path": "cranfield", "split": "train"},
            "eval": [{"type": "retrieval", "path": "cranfield", "split": "test", "name": "cranfield"}],
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "training": {"steps": 1},
            "resources": {"workers": 2, "cpus_per_worker": 0.5},
        }
    )
    sets = ["cranfield"]
    direct = tasks._untrained(spec.to_dict(), sets)["cranfield"]  # this process, chunk by chunk
    monkeypatch.setattr(tasks, "ENCODE_ON_CLUSTER_FROM", 1000)  # Cranfield's 1,400 abstracts count as large
    texts, vectors = tasks.corpus_on_cluster(spec, spec.model, sets)
    assert len(texts) == vectors.shape[0] >= 1000  # encoded by 2 actors
    pooled = tasks.score_untrained(spec, sets)["cranfield"]
    assert pooled["metrics"].keys() == direct["metrics"].keys()
    for name, value in direct["metrics"].items():
        assert pooled["metrics"][name] == pytest.approx(value, abs=1e-6), name
