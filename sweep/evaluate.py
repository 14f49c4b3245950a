"""Evaluators: retrieval, STS, triplet accuracy and class-labelled texts, at the full size and every
Matryoshka size.

Each evaluator encodes its texts once and scores every size from that one encoding: the smaller
sizes are prefixes of the full embedding, re-normalised. Retrieval rankings come from
sentence-transformers' own `InformationRetrievalEvaluator` code, so MRR, Recall and MAP equal its
numbers; NDCG equals its number on binary judgements and, on graded ones (Cranfield's 1-4), uses the
grades as gains, as trec_eval's `ndcg_cut` (and so MTEB) does. Class-labelled texts are judged as
metric learning judges embeddings (`ClassesEvaluator`).

Metric names are legal MLflow names and line up across runs: `eval/<set>/<metric>` at the full size,
`eval/<set>/<metric>/dim_<d>` at each size d.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util.distributed import distributed_evaluation, get_rank

from lossweep.losses.formats import LABEL_COLUMNS

from .data import RetrievalSet
from .inputs import EvalSet, load_eval
from .metrics import METRICS, RETRIEVAL_METRICS, metric_name
from .prompts import Prompts, spec_prompts
from .spec import CORPUS_CHUNK_SIZE

PER_QUERY_ARTIFACT = "per_query.json"  # a run's final per-item values: metric name -> item id -> value


def per_query_artifact(step: int | None = None) -> str:
    """Where a run keeps its per-item values: the final ones, or those of an earlier step (budgets)."""
    return PER_QUERY_ARTIFACT if step is None else f"per_query/step_{step:07d}.json"


@dataclass
class EvalResult:
    """Metrics by name; for metrics that are means over items (queries, triplets), the value of each
    item too (metric name -> item id -> value), for the verdict's paired intervals."""

    metrics: dict[str, float] = field(default_factory=dict)
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def _truncate(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    return F.normalize(embeddings[:, :dim].float(), p=2, dim=-1)


def _names(dataset: str, metric: str, dim: int, full: int) -> list[str]:
    """The names one value goes under: its size's, and the plain name at the model's full size."""
    return [metric_name(dataset, metric, dim)] + ([metric_name(dataset, metric)] if dim == full else [])


def _sizes(model: SentenceTransformer, dims: Sequence[int] | None) -> tuple[int, list[int]]:
    full = model.get_embedding_dimension()
    return full, sorted({full, *(dims or ())}, reverse=True)


class _IRByChunks(InformationRetrievalEvaluator):
    """sentence-transformers' IR evaluator scoring every Matryoshka size in one pass over the corpus.

    Its own loop encodes the corpus a chunk at a time and keeps each query's top hits per chunk, so
    memory is bounded by the chunk, not the corpus; one score function per size truncates the chunk's
    embeddings, so each chunk is encoded once for all sizes. Query embeddings are ours (encoded once),
    and a corpus that fits in one chunk is encoded once for every set that searches it.
    """

    query_embeddings: torch.Tensor | None = None
    corpora: dict[int, torch.Tensor] | None = None  # one-chunk corpus encodings shared within an evaluation
    corpus_key: int = 0
    results: list | None = None  # the last call's top hits per query for each size, in score_functions' order

    def embed_inputs(self, model, sentences, encode_fn_name=None, **kwargs):
        if encode_fn_name == "query" and self.query_embeddings is not None:
            return self.query_embeddings
        shared = encode_fn_name == "document" and len(self.corpus) <= self.corpus_chunk_size
        if shared and self.corpora is not None and self.corpus_key in self.corpora:
            return self.corpora[self.corpus_key]
        embeddings = super().embed_inputs(model, sentences, encode_fn_name=encode_fn_name, **kwargs)
        if shared and self.corpora is not None:
            self.corpora[self.corpus_key] = embeddings
        return embeddings

    def compute_metrics(self, queries_result_list):
        self.results.append(queries_result_list)
        return super().compute_metrics(queries_result_list)


def _cosine_at(dim: int):
    """Cosine similarity of the first `dim` coordinates (a Matryoshka size), as a score function."""
    return lambda queries, documents: _truncate(queries, dim) @ _truncate(documents, dim).T


class RetrievalEvaluator:
    """NDCG@10, MRR@10, MAP@100 and Recall@1/10/100 for every size, from one encoding.

    NDCG takes the judgements' grades as gains when they have several (trec_eval's `ndcg_cut`: gain
    = grade, discount log2(rank + 1), the ideal ranking from every judged document); MRR, Recall and
    MAP count any judged document as relevant, as sentence-transformers does. The corpus is encoded
    and scored `corpus_chunk_size` documents at a time (sentence-transformers' own chunking), so peak
    memory does not grow with the corpus.
    """

    def __init__(
        self,
        name: str,
        data: RetrievalSet,
        dims: Sequence[int] | None = None,
        batch_size: int = 64,
        prompts: Prompts | None = None,
        corpus_chunk_size: int = CORPUS_CHUNK_SIZE,
    ) -> None:
        self.name, self.dims = name, dims
        self.grades = data.qrels if data.graded else None
        # '' keeps the model's own prompt out too; None leaves it to the model
        query, document = (prompts.query, prompts.document) if prompts else (None, None)
        self.ir = _IRByChunks(
            queries=data.queries,
            corpus=data.corpus,
            relevant_docs={qid: set(docs) for qid, docs in data.qrels.items()},
            corpus_chunk_size=corpus_chunk_size,
            mrr_at_k=[10],
            ndcg_at_k=[10],
            map_at_k=[100],
            precision_recall_at_k=[1, 10, 100],
            accuracy_at_k=[1],
            batch_size=batch_size,
            name=name,
            write_csv=False,
            query_prompt=query,
            corpus_prompt=document,
        )
        # Sets that search one corpus (a validation set carved from training, and the test set) share
        # its encoding within one evaluation when it fits in one chunk.
        self.ir.corpus_key = hash((tuple(data.corpus.items()), document))

    def __call__(self, model: SentenceTransformer, corpora: dict[int, torch.Tensor] | None = None) -> EvalResult:
        """Score `model`; `corpora` holds corpus encodings already made in this evaluation, by corpus."""
        ir = self.ir
        full, sizes = _sizes(model, self.dims)
        ir.query_embeddings = model.encode_query(
            ir.queries, prompt=ir.query_prompt, batch_size=ir.batch_size, convert_to_tensor=True
        )
        ir.score_functions = {f"dim_{dim}": _cosine_at(dim) for dim in sizes}
        ir.corpora, ir.results = corpora, []
        try:
            scores = ir.compute_all_metrics(model)
        finally:
            ir.query_embeddings, ir.corpora = None, None
        result = EvalResult()
        for dim, hits in zip(sizes, ir.results, strict=True):
            per_query, reported = self.per_query(hits), scores[f"dim_{dim}"]
            for ours, (key, k) in RETRIEVAL_METRICS.items():
                graded = self.grades is not None and key == "ndcg@k"
                value = float(np.mean(list(per_query[ours].values()))) if graded else float(reported[key][k])
                for name in _names(self.name, ours, dim, full):
                    result.metrics[name] = value
                    result.per_query[name] = per_query[ours]
        return result

    def per_query(self, results: list) -> dict[str, dict[str, float]]:
        """Each metric of RETRIEVAL_METRICS per query, as sentence-transformers computes it (ties broken
        by corpus id), NDCG with graded gains when the set has grades; the mean over queries is its
        reported figure."""
        out: dict[str, dict[str, float]] = {name: {} for name in RETRIEVAL_METRICS}
        for query_id, hits in zip(self.ir.queries_ids, results, strict=True):
            relevant = self.ir.relevant_docs[query_id]
            grades = self.grades[query_id] if self.grades is not None else dict.fromkeys(relevant, 1)
            ranked = sorted(hits, key=lambda h: (-h["score"], h["corpus_id"]))
            found = [hit["corpus_id"] in relevant for hit in ranked]
            gains = [grades.get(hit["corpus_id"], 0) for hit in ranked]
            for name, (key, k) in RETRIEVAL_METRICS.items():
                top = found[:k]
                if key == "ndcg@k":
                    ideal = self.ir.compute_dcg_at_k(sorted(grades.values(), reverse=True), k)
                    value = self.ir.compute_dcg_at_k(gains[:k], k) / ideal
                elif key == "mrr@k":
                    value = next((1.0 / (rank + 1) for rank, f in enumerate(top) if f), 0.0)
                elif key == "recall@k":
                    value = sum(top) / len(relevant)
                else:  # map@k
                    value = _average_precision(top) / min(k, len(relevant))
                out[name][query_id] = value
        return out


def _average_precision(found: list[bool]) -> float:
    """Sum of precision@rank over the ranks that hold a relevant document."""
    hits, total = 0, 0.0
    for rank, relevant in enumerate(found, start=1):
        if relevant:
            hits += 1
            total += hits / rank
    return total


class STSEvaluator:
    """Spearman correlation of cosine similarity with gold scores, for every size."""

    def __init__(
        self, name: str, rows, dims: Sequence[int] | None = None, batch_size: int = 64, prompts: Prompts | None = None
    ) -> None:
        texts = [c for c in rows.column_names if c not in LABEL_COLUMNS]
        score = next(c for c in rows.column_names if c not in texts)
        self.name, self.dims, self.batch_size = name, dims, batch_size
        self.prompt = prompts.query if prompts else None  # symmetric: both sides are queries
        self.first, self.second, self.scores = rows[texts[0]], rows[texts[1]], np.asarray(rows[score], dtype=float)

    def __call__(self, model: SentenceTransformer) -> EvalResult:
        a = model.encode(self.first, prompt=self.prompt, batch_size=self.batch_size, convert_to_tensor=True)
        b = model.encode(self.second, prompt=self.prompt, batch_size=self.batch_size, convert_to_tensor=True)
        full, sizes = _sizes(model, self.dims)
        result = EvalResult()
        for dim in sizes:
            cosine = (_truncate(a, dim) * _truncate(b, dim)).sum(-1).cpu().numpy()
            value = float(spearmanr(self.scores, cosine).statistic)
            result.metrics[metric_name(self.name, "spearman_cosine", dim)] = value
            if dim == full:
                result.metrics[metric_name(self.name, "spearman_cosine")] = value
        return result


class TripletEvaluator:
    """Share of (anchor, positive, negative) rows where the anchor is closer (cosine) to the positive."""

    def __init__(
        self, name: str, rows, dims: Sequence[int] | None = None, batch_size: int = 64, prompts: Prompts | None = None
    ) -> None:
        self.name, self.dims, self.batch_size = name, dims, batch_size
        self.columns = [rows[c] for c in rows.column_names[:3]]
        self.sides = [prompts.query, prompts.document, prompts.document] if prompts else [None] * 3

    def __call__(self, model: SentenceTransformer) -> EvalResult:
        anchor, positive, negative = (
            model.encode(texts, prompt=side, batch_size=self.batch_size, convert_to_tensor=True)
            for texts, side in zip(self.columns, self.sides, strict=True)
        )
        full, sizes = _sizes(model, self.dims)
        result = EvalResult()
        for dim in sizes:
            a, p, n = (_truncate(x, dim) for x in (anchor, positive, negative))
            correct = ((a * p).sum(-1) > (a * n).sum(-1)).float()
            for name in _names(self.name, "cosine_accuracy", dim, full):
                result.metrics[name] = float(correct.mean())  # float32, as sentence-transformers computes it
                result.per_query[name] = {str(row): value for row, value in enumerate(correct.tolist())}
        return result


class ClassesEvaluator:
    """Class-labelled texts judged as metric learning judges embeddings (Musgrave et al., "A Metric
    Learning Reality Check", 2020; pytorch-metric-learning's `AccuracyCalculator`): every text queries
    all the others by cosine similarity, and a hit is a text of its class. With R the number of other
    texts of the query's class, per query:

    - precision_at_1: the nearest text is of the class;
    - r_precision: the share of the class among the R nearest;
    - map_at_r: mean over the R nearest of precision at each hit (MAP@R, the paper's headline);
    - knn_accuracy_at_10: the majority class of the 10 nearest is the query's (a tie goes to the
      class met first).

    Ties in similarity are broken by row order. A text alone in its class has no R and is left out.
    """

    K = 10

    def __init__(
        self, name: str, rows, dims: Sequence[int] | None = None, batch_size: int = 64, prompts: Prompts | None = None
    ) -> None:
        label = next(c for c in rows.column_names if c in LABEL_COLUMNS)
        text = next(c for c in rows.column_names if c != label)
        self.name, self.dims, self.batch_size = name, dims, batch_size
        self.prompt = prompts.query if prompts else None  # symmetric: every text queries the others
        self.texts = rows[text]
        ids: dict = {}
        self.labels = torch.tensor([ids.setdefault(y, len(ids)) for y in rows[label]])

    def __call__(self, model: SentenceTransformer) -> EvalResult:
        embeddings = model.encode(self.texts, prompt=self.prompt, batch_size=self.batch_size, convert_to_tensor=True)
        full, sizes = _sizes(model, self.dims)
        result = EvalResult()
        for dim in sizes:
            per_query = self.per_query(_truncate(embeddings, dim).cpu())
            for metric, values in per_query.items():
                for name in _names(self.name, metric, dim, full):
                    result.metrics[name] = float(np.mean(list(values.values())))
                    result.per_query[name] = values
        return result

    def per_query(self, embeddings: torch.Tensor) -> dict[str, dict[str, float]]:
        """Each metric per query (row index), from normalised embeddings."""
        labels, n = self.labels, len(self.labels)
        others = torch.bincount(labels)[labels] - 1  # R of each query
        depth = min(n - 1, max(int(others.max()), self.K))
        out: dict[str, dict[str, float]] = {metric: {} for metric in METRICS["classes"]}
        chunk = max(1, 2**24 // n)  # rows of the similarity matrix held at once
        for start in range(0, n, chunk):
            rows = torch.arange(start, min(n, start + chunk))
            similarity = embeddings[rows] @ embeddings.T
            similarity[torch.arange(len(rows)), rows] = -torch.inf  # a text does not find itself
            order = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :depth]
            hits = labels[order] == labels[rows, None]
            for i, query in enumerate(rows.tolist()):
                r = int(others[query])
                if r == 0:
                    continue
                found = hits[i].numpy()
                precision = np.cumsum(found[:r]) / np.arange(1, r + 1)
                nearest = labels[order[i, : self.K]].tolist()
                counts = {y: nearest.count(y) for y in dict.fromkeys(nearest)}  # first-met order breaks ties
                majority = max(counts, key=counts.get)
                key = str(query)
                out["precision_at_1"][key] = float(found[0])
                out["r_precision"][key] = float(found[:r].sum() / r)
                out["map_at_r"][key] = float((precision * found[:r]).sum() / r)
                out["knn_accuracy_at_10"][key] = float(majority == int(labels[query]))
        return out


Evaluator = RetrievalEvaluator | STSEvaluator | TripletEvaluator | ClassesEvaluator
ROW_EVALUATORS = {"sts": STSEvaluator, "triplet": TripletEvaluator, "classes": ClassesEvaluator}


def build_evaluator(
    eval_set: EvalSet,
    dims: Sequence[int] | None,
    batch_size: int,
    prompts: Prompts | None = None,
    corpus_chunk_size: int = CORPUS_CHUNK_SIZE,
) -> Evaluator:
    name = eval_set.ref.label
    if eval_set.ref.type == "retrieval":
        return RetrievalEvaluator(name, eval_set.retrieval, dims, batch_size, prompts, corpus_chunk_size)
    return ROW_EVALUATORS[eval_set.ref.type](name, eval_set.rows, dims, batch_size, prompts)


def build_evaluators(spec, names: Sequence[str] | None = None) -> list[Evaluator]:
    """Evaluators for the spec's eval sets named in `names` (default: `evaluation.sets`, else all)."""
    names = names if names is not None else spec.evaluation.sets
    dims = spec.evaluation.dims or spec.matryoshka_dims
    refs = [ref for ref in spec.eval if names is None or ref.label in names]
    prompts = spec_prompts(spec)
    settings = spec.evaluation
    return [
        build_evaluator(load_eval(ref, spec), dims, settings.batch_size, prompts, settings.corpus_chunk_size)
        for ref in refs
    ]


def evaluate(
    model: SentenceTransformer, evaluators: Sequence[Evaluator], distributed: bool = True
) -> EvalResult | None:
    """Run every evaluator; on several workers rank 0 scores while all ranks share the encoding.

    Returns the result on rank 0 and None elsewhere. Every rank must call it.
    """
    if not distributed and get_rank() != 0:
        return None
    was_training = model.training
    model.eval()
    try:
        with distributed_evaluation(model, enabled=distributed) as is_main, torch.no_grad():
            if not is_main:
                return None
            total, corpora = EvalResult(), {}
            for evaluator in evaluators:
                result = evaluator(model, corpora) if isinstance(evaluator, RetrievalEvaluator) else evaluator(model)
                total.metrics.update(result.metrics)
                total.per_query.update(result.per_query)
            return total
    finally:
        model.train(was_training)
