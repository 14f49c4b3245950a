"""Work that runs as one Ray task with the resources of one training worker (its GPU, when the spec
asks for GPUs): scoring a model nobody trains here (the untrained baseline, a finished trial's
checkpoint) and mining hard negatives. A large corpus is first encoded across the cluster
(`encoding.py`: one encoder per worker the sweep may run at once) and the task reads those vectors."""

from __future__ import annotations

import importlib.util
from typing import Any

import ray

from . import negatives, storage
from .cluster import ensure_ray
from .encoding import FAISS_FROM, Precomputed, encode_on_cluster
from .evaluate import PER_QUERY_ARTIFACT, RetrievalEvaluator, build_evaluators, evaluate
from .inputs import mining_input, negatives_dir, train_pairs
from .metrics import metric_name
from .models import load_model
from .spec import Spec, parse_spec
from .tracking import Tracker, worker_tracking_uri

ENCODE_ON_CLUSTER_FROM = 20_000  # mining texts from which an encoder pool repays its actors' start (BENCHMARKS.md)


def _on_one_worker(spec: Spec, function):
    resources = spec.resources
    return ray.remote(function).options(
        num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker, max_retries=1
    )


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _loaded(spec: Spec, model: str, corpus: tuple[list[str], Any] | None):
    """The model to score, answering for the corpus from vectors encoded on the cluster where given."""
    if storage.is_uri(model):  # a checkpoint in a bucket
        model = str(storage.local_copy(model))
    loaded = load_model(model, device=_device())
    if spec.max_seq_length:
        loaded.max_seq_length = spec.max_seq_length
    if corpus is None:
        return loaded
    texts, vectors = corpus
    return Precomputed(loaded, {"document": dict(zip(texts, vectors, strict=True))})


def _score(
    spec_data: dict, model: str, sets: list[str], tracking_uri: str, run_id: str, step: int, corpus=None
) -> dict:
    spec = parse_spec(spec_data)
    result = evaluate(_loaded(spec, model, corpus), build_evaluators(spec, sets), distributed=False)
    tracker = Tracker(tracking_uri)
    tracker.log_metrics(run_id, result.metrics, step)
    if result.per_query:
        tracker.log_dict(run_id, result.per_query, PER_QUERY_ARTIFACT)
    return result.metrics


def _untrained(spec_data: dict, sets: list[str], corpus=None) -> dict[str, dict[str, Any]]:
    spec = parse_spec(spec_data)
    result = evaluate(_loaded(spec, spec.model, corpus), build_evaluators(spec, sets), distributed=False)
    out: dict[str, dict[str, Any]] = {}
    for name in sets:
        prefix = metric_name(name, "")
        out[name] = {
            "metrics": {k: v for k, v in result.metrics.items() if k.startswith(prefix)},
            "per_query": {k: v for k, v in result.per_query.items() if k.startswith(prefix)},
        }
    return out


def score_untrained(spec: Spec, sets: list[str]) -> dict[str, dict[str, Any]]:
    """The untrained model's metrics and per-query values on the named eval sets, by set (a Ray task
    with one worker's resources; `untrained.py` caches what it returns)."""
    ensure_ray()
    corpus = corpus_on_cluster(spec, spec.model, sets)
    return ray.get(_on_one_worker(spec, _untrained).remote(spec.to_dict(), sets, corpus))


def start_scoring(spec: Spec, model: str, sets: list[str], tracking_uri: str, run_id: str, step: int) -> ray.ObjectRef:
    """Start scoring `model` (a model reference or a checkpoint's model folder) on the named eval sets;
    `ray.get` of the returned reference gives the metrics, once they are logged to `run_id`."""
    ensure_ray()
    corpus = corpus_on_cluster(spec, model, sets)  # waits for the pool: it holds every worker's share
    task = _on_one_worker(spec, _score)
    return task.remote(spec.to_dict(), model, sets, worker_tracking_uri(tracking_uri), run_id, step, corpus)


def corpus_on_cluster(spec: Spec, model: str, sets: list[str]) -> tuple[list[str], Any] | None:
    """The documents the named retrieval sets search and their vectors from `model` (with the spec's
    document prompt), encoded by a Ray Data actor pool when there are enough of them to repay the
    actors' start and the sweep may run several encoders; else None (the task encodes chunk by chunk).
    The scoring task then holds every vector: 1.5 GB per million documents at MiniLM's width."""
    actors = encoders(spec)
    if actors < 2:
        return None
    corpora = [e.ir for e in build_evaluators(spec, sets) if isinstance(e, RetrievalEvaluator)]
    texts = list(dict.fromkeys(text for ir in corpora for text in ir.corpus))
    if len(texts) < ENCODE_ON_CLUSTER_FROM:
        return None
    prompt = corpora[0].corpus_prompt  # one spec, one document prompt
    r = spec.resources
    vectors = encode_on_cluster(
        model,
        texts,
        side="document",
        prompt=prompt,
        max_seq_length=spec.max_seq_length,
        actors=actors,
        cpus_per_actor=r.cpus_per_worker,
        gpus_per_actor=r.gpus_per_worker,
        batch_size=spec.evaluation.batch_size,
    )
    return texts, vectors


def _mine(spec_data: dict, directory: str, encoded: dict | None = None) -> dict:
    spec = parse_spec(spec_data)
    knobs = negatives.knobs(spec)
    model = load_model(knobs.model, device=_device())
    if spec.max_seq_length:
        model.max_seq_length = spec.max_seq_length
    if encoded is not None:  # encoded across the cluster: sentence-transformers mines from those vectors
        model = Precomputed(
            model, {side: dict(zip(texts, vectors, strict=True)) for side, (texts, vectors) in encoded.items()}
        )
    inputs = mining_input(spec, train_pairs(spec))
    return negatives.mine(inputs, knobs, model, directory, use_faiss=_faiss(inputs))


def encoders(spec: Spec) -> int:
    """The encoder actors a sweep may use at once: its concurrent trials' workers (all its GPUs on GPU)."""
    concurrent = spec.sweep.max_concurrent if spec.sweep is not None else 1
    return spec.resources.workers * concurrent


def _faiss(inputs: negatives.MiningInput) -> bool:
    """Search with faiss above FAISS_FROM documents, where it is installed (the faiss extra)."""
    documents = len(inputs.corpus or ()) + len(inputs.pairs)
    return documents >= FAISS_FROM and importlib.util.find_spec("faiss") is not None


def _encoded_on_cluster(spec: Spec, inputs: negatives.MiningInput) -> dict | None:
    """The texts mining encodes (unique anchors; corpus and positives), encoded by a Ray Data actor pool
    when the corpus is large enough to repay the actors' start and the sweep may run several; else None."""
    actors = encoders(spec)
    anchor, positive = inputs.pairs.column_names
    queries = list(dict.fromkeys(inputs.pairs[anchor]))
    documents = list(dict.fromkeys(list(inputs.corpus or []) + list(inputs.pairs[positive])))
    if actors < 2 or len(documents) < ENCODE_ON_CLUSTER_FROM:
        return None
    knobs, r = negatives.knobs(spec), spec.resources
    settings = {"max_seq_length": spec.max_seq_length, "actors": actors, "batch_size": knobs.batch_size}
    settings |= {"cpus_per_actor": r.cpus_per_worker, "gpus_per_actor": r.gpus_per_worker}
    return {
        "query": (
            queries,
            encode_on_cluster(knobs.model, queries, side="query", prompt=knobs.query_prompt, **settings),
        ),
        "document": (
            documents,
            encode_on_cluster(knobs.model, documents, side="document", prompt=knobs.document_prompt, **settings),
        ),
    }


def mine_negatives(spec: Spec) -> tuple[str, dict[str, Any], bool]:
    """The cache folder of the negatives the spec asks for, their summary, and whether they were mined
    now (False: an earlier run mined them with the same data, model and knobs). A large corpus is encoded
    across the cluster first (`encoding.py`); the search runs as one task with one worker's resources."""
    inputs = mining_input(spec, train_pairs(spec))
    directory = negatives_dir(spec, inputs)
    summary = negatives.read_summary(directory)
    if summary is not None:
        return directory, summary, False
    ensure_ray()
    encoded = _encoded_on_cluster(spec, inputs)
    summary = ray.get(_on_one_worker(spec, _mine).remote(spec.to_dict(), str(directory), encoded))
    return directory, summary, True
