"""A sampled corpus for the search's decisions: every judged document kept, hard distractors that are the
untrained model's own top-ranked unjudged documents, seeded, computed once and cached. No Ray."""

from __future__ import annotations

import random

import pytest
import torch

from lossweep.sweep import data as sweep_data
from lossweep.sweep import inputs, subcorpus
from lossweep.sweep.models import load_model
from lossweep.sweep.spec import SpecError, parse_spec
from lossweep.sweep.subcorpus import SampleRequest, choose, untrained_ranking


@pytest.fixture(scope="module")
def cranfield(data_dir):
    return sweep_data.load_beir(data_dir / "cranfield", "test", limit=40)


def test_untrained_ranking_by_chunks_is_the_brute_force_ranking(cranfield, tiny_model_path):
    model = load_model(tiny_model_path)
    ranked = untrained_ranking(model, cranfield, depth=5, chunk_size=97, batch_size=64, prompts=None)
    whole = untrained_ranking(model, cranfield, depth=5, chunk_size=10_000, batch_size=64, prompts=None)
    assert ranked == whole
    docs = sorted(cranfield.corpus)
    q = sorted(cranfield.qrels)[0]
    query = model.encode_query([cranfield.queries[q]], convert_to_tensor=True, normalize_embeddings=True)
    corpus = model.encode_document(
        [cranfield.corpus[d] for d in docs], convert_to_tensor=True, normalize_embeddings=True
    )
    scores = (query @ corpus.T)[0]
    unjudged = [i for i, d in enumerate(docs) if d not in cranfield.qrels[q]]
    expected = [docs[unjudged[i]] for i in torch.topk(scores[unjudged], 5).indices]
    assert ranked[q] == expected and not set(ranked[q]) & set(cranfield.qrels[q])


def test_a_sample_keeps_every_judged_document_then_hard_then_random_distractors_seeded(cranfield):
    judged = {doc for docs in cranfield.qrels.values() for doc in docs}
    corpus = sorted(cranfield.corpus)
    ranked = {
        q: random.Random(q).sample([d for d in corpus if d not in docs], 20) for q, docs in cranfield.qrels.items()
    }
    documents, counts = choose(cranfield, SampleRequest(600, "hard", 0), ranked)
    assert len(documents) == 600 and judged <= set(documents) and len(set(documents)) == 600
    room = 600 - len(judged)
    assert counts == {"judged": len(judged), "hard": room // 2, "random": room - room // 2}
    firsts = {found[0] for found in ranked.values()} - judged
    assert firsts <= set(documents)  # every query's top-ranked distractor is in
    again, _ = choose(cranfield, SampleRequest(600, "hard", 0), ranked)
    other, _ = choose(cranfield, SampleRequest(600, "hard", 1), ranked)
    assert again == documents and set(other) != set(documents) and judged <= set(other)
    randoms, counts = choose(cranfield, SampleRequest(600, "random", 0), None)
    assert counts["hard"] == 0 and judged <= set(randoms)
    everything, _ = choose(cranfield, SampleRequest(10**6, "hard", 0), ranked)
    assert set(everything) == set(cranfield.corpus)


def spec_with_sample(data_dir, model, tmp_path, sample_on: str = "val"):
    return parse_spec(
        {
            "name": "sample",
            "data_dir": str(data_dir),
            "model": model,
            "train": {"path": "cranfield", "split": "train"},
            "eval": [
                {"type": "retrieval", "path": "cranfield", "split": "test", "limit": 30, "name": "val"}
                | ({"sample": {"size": 300, "seed": 0}} if sample_on == "val" else {}),
                {"type": "retrieval", "path": "cranfield", "split": "test", "name": "test"}
                | ({"sample": {"size": 300}} if sample_on == "test" else {}),
            ],
            "loss": {"name": "MultipleNegativesRankingLoss"},
            "training": {"steps": 2, "batch_size": 8},
            "output_dir": str(tmp_path / "runs"),
            "sweep": {"select_on": "val", "scheduler": "none"},
        }
    )


def test_the_selection_set_is_sampled_once_and_every_later_load_reads_the_cache(
    data_dir, tiny_model_path, tmp_path, monkeypatch
):
    spec = inputs.resolve_paths(spec_with_sample(data_dir, tiny_model_path, tmp_path))
    assert spec.eval[0].sample.model == tiny_model_path  # ranked by the spec's model, whatever a trial trains
    full = inputs.load_eval(spec.eval[0], spec, sample=False).retrieval
    first = inputs.load_eval(spec.eval[0], spec).retrieval
    judged = {doc for docs in full.qrels.values() for doc in docs}
    assert len(first.corpus) == 300 and judged <= set(first.corpus) and first.queries == full.queries
    cached = list((tmp_path / "runs" / "corpus_samples").glob("*.json"))
    assert len(cached) == 1

    def no_second_ranking(*args, **kwargs):
        raise AssertionError("the sample was computed again")

    monkeypatch.setattr(subcorpus, "make", no_second_ranking)
    # a trial training another base model reads the same sample
    other = spec.replace(model="minilm")
    assert inputs.load_eval(other.eval[0], other).retrieval.corpus == first.corpus
    assert len(inputs.load_eval(spec.eval[1], spec).retrieval.corpus) == len(full.corpus)  # the verdict set: whole


def test_a_sample_of_a_verdict_set_is_refused(data_dir, tiny_model_path, tmp_path):
    with pytest.raises(SpecError) as caught:
        spec_with_sample(data_dir, tiny_model_path, tmp_path, sample_on="test")
    assert any(p.startswith("eval[1].sample: 'test' judges the winner") for p in caught.value.problems)
