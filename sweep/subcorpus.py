"""A retrieval set's corpus cut to a sample, so that evaluating a search trial does not cost the corpus.

Search decisions (TPE, ASHA, each loss's best configuration) only need the *order* of trials, and that
order can be read off a sample of the corpus when the sample keeps what makes retrieval hard: every
document judged for the set's queries, plus distractors: for each query the documents the untrained
model ranks highest among those not judged for it (the ones a trained model must learn to push down),
then random documents, seeded. The verdict sets keep the whole corpus (`relations.py` refuses a sample
there), so no figure a user reads as final comes from a sample.

The sample is computed once per (eval set, ranking model, its prompts, size, distractors, seed)
and cached as JSON under `<output_dir>/corpus_samples/<key>.json` (a bucket works too), like mined
negatives; every trial reads it. The untrained model's ranking is computed chunk by chunk
(`corpus_chunk_size` documents encoded and scored at once), so its memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from . import storage
from .data import RetrievalSet

SAMPLE_VERSION = 1  # part of every cache key: bump when what is sampled for the same inputs changes
HARD_SHARE = 0.5  # of the distractor slots, the share given to each query's top-ranked unjudged documents


@dataclass(frozen=True)
class SampleRequest:
    """What a sample is asked for (an eval set's `sample` section)."""

    size: int
    distractors: str  # "hard" | "random"
    seed: int


def cache_key(set_fingerprint: str, model_fingerprint: str, prompts: dict, request: SampleRequest) -> str:
    """A content key: the full set, the ranking model and how it reads text, and the request."""
    what = [SAMPLE_VERSION, set_fingerprint, model_fingerprint, prompts, request.size, request.distractors]
    return hashlib.sha256(json.dumps(what + [request.seed], sort_keys=True).encode()).hexdigest()[:16]


def sampled(full: RetrievalSet, documents: list[str]) -> RetrievalSet:
    """The set with its corpus cut to `documents` (queries and judgements as they are)."""
    keep = set(documents)
    return RetrievalSet({d: t for d, t in full.corpus.items() if d in keep}, full.queries, full.qrels)


def read(location: str) -> dict[str, Any] | None:
    """A cached sample (its document ids and summary), or None."""
    text = storage.read_text(location)
    return None if text is None else json.loads(text)


def choose(
    full: RetrievalSet, request: SampleRequest, ranked: dict[str, list[str]] | None
) -> tuple[list[str], dict[str, int]]:
    """The documents of the sample, and how many of each kind: every judged document, then (hard) the
    untrained model's top-ranked unjudged documents, round by round over the queries (each query's 1st,
    then each one's 2nd...) up to half the slots left, then random unjudged documents to `size`."""
    judged = sorted({doc for docs in full.qrels.values() for doc in docs if doc in full.corpus})
    chosen = dict.fromkeys(judged)
    room = max(0, request.size - len(chosen))
    hard_room = int(room * HARD_SHARE) if ranked else 0
    hard = 0
    lists = [ranked[q] for q in sorted(ranked)] if ranked else []
    depth = 0
    while hard < hard_room and any(depth < len(found) for found in lists):
        for found in lists:
            if depth < len(found) and found[depth] not in chosen and hard < hard_room:
                chosen[found[depth]] = None
                hard += 1
        depth += 1
    rest = [doc for doc in sorted(full.corpus) if doc not in chosen]
    rng = random.Random(request.seed)
    extra = rng.sample(rest, min(len(rest), request.size - len(chosen))) if len(chosen) < request.size else []
    chosen.update(dict.fromkeys(extra))
    return list(chosen), {"judged": len(judged), "hard": hard, "random": len(extra)}


def untrained_ranking(
    model, full: RetrievalSet, depth: int, chunk_size: int, batch_size: int, prompts
) -> dict[str, list[str]]:
    """Each judged query's `depth` best-scoring documents not judged for it, by the model as loaded,
    scored chunk by chunk with a running top-k (cosine similarity, the model's own). Queries and documents
    are encoded as the evaluators encode them (`encode_query` / `encode_document` with `prompts`)."""
    queries = [q for q in sorted(full.queries) if q in full.qrels]
    query_prompt, document_prompt = (prompts.query, prompts.document) if prompts else (None, None)
    texts = [full.queries[q] for q in queries]
    q_emb = model.encode_query(
        texts, prompt=query_prompt, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True
    )
    doc_ids = sorted(full.corpus)
    best_scores = torch.full((len(queries), 0), -float("inf"))
    best_ids: list[list[str]] = [[] for _ in queries]
    for start in range(0, len(doc_ids), chunk_size):
        chunk = doc_ids[start : start + chunk_size]
        d_emb = model.encode_document(
            [full.corpus[d] for d in chunk],
            prompt=document_prompt,
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
        )
        scores = (q_emb @ d_emb.T).float().cpu()
        position = {d: i for i, d in enumerate(chunk)}
        for row, q in enumerate(queries):  # a query's judged documents are never its distractors
            judged = [position[d] for d in full.qrels[q] if d in position]
            if judged:
                scores[row, judged] = -float("inf")
        merged_scores = torch.cat([best_scores, scores], dim=1)
        k = min(depth, merged_scores.shape[1])
        top = torch.topk(merged_scores, k, dim=1)
        previous = best_ids
        best_ids = [[(previous[r] + chunk)[int(i)] for i in top.indices[r]] for r in range(len(queries))]
        best_scores = top.values
    return {
        q: [d for d, s in zip(best_ids[r], best_scores[r].tolist(), strict=True) if s > -float("inf")]
        for r, q in enumerate(queries)
    }


def ranking_depth(full: RetrievalSet, size: int) -> int:
    """How many unjudged documents per query the untrained ranking keeps for a sample of `size`: the
    hard slots shared over the queries, plus 5 for documents several queries rank high."""
    queries = max(1, len(full.qrels))
    return max(1, -(-int((size - len(full.qrels)) * HARD_SHARE) // queries)) + 5


def make(
    full: RetrievalSet,
    request: SampleRequest,
    location: str,
    load_model,
    chunk_size: int,
    batch_size: int,
    prompts,
) -> dict[str, Any]:
    """Compute a sample (ranking with the untrained model for hard distractors) and cache it at `location`."""
    started = time.perf_counter()
    ranked = None
    if request.distractors == "hard" and request.size < len(full.corpus):
        depth = ranking_depth(full, request.size)
        ranked = untrained_ranking(load_model(), full, depth, chunk_size, batch_size, prompts)
    documents, counts = choose(full, request, ranked)
    summary = counts | {
        "documents": len(documents),
        "corpus": len(full.corpus),
        "queries": len(full.qrels),
        "distractors": request.distractors,
        "seed": request.seed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    storage.write_text(location, json.dumps({"documents": documents, "summary": summary}))
    return {"documents": documents, "summary": summary}
