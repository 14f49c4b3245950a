"""Retrieval evaluation at 4 Matryoshka sizes: lossweep's one-encoding evaluator vs sentence-transformers'
evaluators run once per size (a SequentialEvaluator of InformationRetrievalEvaluator(truncate_dim=d)).

Same model, data, batch size and sequence length; metrics must agree to 1e-6.
Targets: >= 3x faster over 4 sizes; 4 sizes cost <= 1.15x one size.

    python bench/eval_dims.py            # all-MiniLM-L6-v2 on Cranfield test (75 queries, 500 documents)
"""

from __future__ import annotations

import random
import tempfile

from common import DATA_DIR, fmt, parser, repeat, table, timed, write
from sentence_transformers.base.evaluation.sequential import SequentialEvaluator
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

from lossweep.sweep.data import RetrievalSet, load_beir
from lossweep.sweep.evaluate import RetrievalEvaluator
from lossweep.sweep.models import load_model, tiny_model


def subset(data: RetrievalSet, documents: int, queries: int | None, seed: int = 0) -> RetrievalSet:
    """Every judged document of the kept queries, plus random others up to `documents`."""
    qrels = dict(list(data.qrels.items())[:queries]) if queries else data.qrels
    keep = {doc for docs in qrels.values() for doc in docs}
    others = [d for d in data.corpus if d not in keep]
    random.Random(seed).shuffle(others)
    keep |= set(others[: max(0, documents - len(keep))])
    return RetrievalSet(
        {d: data.corpus[d] for d in data.corpus if d in keep}, {q: data.queries[q] for q in qrels}, qrels
    )


def main() -> None:
    args = parser(__doc__).parse_args()
    if args.smoke:
        model = load_model(tiny_model(tempfile.mkdtemp() + "/tiny"))
        dims, documents, queries = [32, 16, 8, 4], 120, 10
    else:
        model = load_model("minilm")
        dims, documents, queries = [384, 256, 128, 64], 500, None
    model.max_seq_length = 128
    data = subset(load_beir(DATA_DIR / "cranfield", "test"), documents, queries)
    ours_all = RetrievalEvaluator("cranfield", data, dims=dims, batch_size=32)
    ours_one = RetrievalEvaluator("cranfield", data, dims=None, batch_size=32)
    relevant = {q: set(d) for q, d in data.qrels.items()}
    reference = SequentialEvaluator(
        [
            InformationRetrievalEvaluator(
                data.queries,
                data.corpus,
                relevant,
                name=f"d{d}",
                truncate_dim=d,
                batch_size=32,
                write_csv=False,
                precision_recall_at_k=[1, 10, 100],
                map_at_k=[100],
            )
            for d in dims
        ]
    )
    model.encode(list(data.corpus.values())[:64], batch_size=32)  # warm-up

    results = {}
    results["ours_4_sizes_s"] = repeat(lambda: timed(lambda: ours_all(model))[0], args.repeats)
    results["ours_1_size_s"] = repeat(lambda: timed(lambda: ours_one(model))[0], args.repeats)
    results["reference_4_sizes_s"] = repeat(lambda: timed(lambda: reference(model))[0], args.repeats)

    mine, theirs = ours_all(model).metrics, reference(model)
    names = {"ndcg_at_10": "ndcg@10", "mrr_at_10": "mrr@10", "map_at_100": "map@100", "recall_at_10": "recall@10"}
    differences = [
        abs(mine[f"eval/cranfield/{ours}/dim_{d}"] - theirs[f"d{d}_cosine_{ref}"])
        for d in dims
        for ours, ref in names.items()
    ]
    speedup = results["reference_4_sizes_s"]["median"] / results["ours_4_sizes_s"]["median"]
    overhead = results["ours_4_sizes_s"]["median"] / results["ours_1_size_s"]["median"]
    results |= {
        "dims": dims,
        "documents": len(data.corpus),
        "queries": len(data.queries),
        "speedup_vs_reference": speedup,
        "four_sizes_over_one": overhead,
        "max_metric_difference": max(differences),
        "targets": {
            "speedup_vs_reference": ">= 3",
            "four_sizes_over_one": "<= 1.15",
            "max_metric_difference": "<= 1e-6",
        },
        "met": {"speedup": speedup >= 3, "overhead": overhead <= 1.15, "metrics_equal": max(differences) <= 1e-6},
    }
    table(
        [
            ["lossweep, 4 sizes (one encoding)", fmt(results["ours_4_sizes_s"], " s")],
            ["lossweep, 1 size", fmt(results["ours_1_size_s"], " s")],
            ["sentence-transformers, 4 evaluators", fmt(results["reference_4_sizes_s"], " s")],
            ["speed-up over sentence-transformers", f"{speedup:.2f}x (target >= 3)"],
            ["4 sizes / 1 size", f"{overhead:.3f} (target <= 1.15)"],
            ["max |metric difference|", f"{max(differences):.1e} (target <= 1e-6)"],
        ],
        ["measure", "median [min..max]"],
    )
    write("eval_dims", results, args.out, args.smoke)


if __name__ == "__main__":
    main()
