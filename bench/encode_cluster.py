"""Corpus encoding spread over the cluster, and mining's search with and without faiss, measured here;
MS MARCO on 8 GPUs projected from the measured per-document costs.

1. Encoding: the texts of a large corpus (SciFact plus distractors, bench/corpus.py) encoded in one
   process (`encode_document`), and by lossweep's Ray Data pool (`sweep/encoding.py`) of 1 and of 2
   encoder actors with 1 CPU each; documents per second each way, and the pool's fixed cost (actors
   started, model loaded) from a run on a few texts, taken off the pools' steady rates. A 2-layer BERT
   of width 128 at 64 tokens stands in for MiniLM so that 100k documents take minutes on 2 cores (it
   costs ~0.7 ms a document here, enough that the pool's per-batch overhead would show); MiniLM's own
   cost per document is measured on 2,000 SciFact abstracts (128 tokens) in one process. Target: 2
   actors' steady rate >= 1.5x 1 actor's (2 cores: each actor has one, the driver shares them).
2. Mining's search: sentence-transformers' `mine_hard_negatives` over precomputed vectors (so only the
   search is timed), SciFact's training queries against corpora of growing size, with torch's chunked
   search and with faiss (IndexFlatIP: exact).

    python bench/encode_cluster.py                    # 100k documents
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import datasets
from common import DATA_DIR, parser, table, write
from corpus import large_corpus

from lossweep.sweep.data import beir_pairs, load_beir
from lossweep.sweep.encoding import Precomputed, encode_on_cluster
from lossweep.sweep.models import load_model, tiny_model


def encode_rates(model_ref: str, texts: list[str], seq: int) -> dict[str, float]:
    """Documents per second: one process, then pools of 1 and 2 actors (with the pool's start, and
    steady: its fixed cost taken off)."""
    import ray

    model = load_model(model_ref)
    model.max_seq_length = seq
    started = time.perf_counter()
    model.encode_document(texts, batch_size=64, normalize_embeddings=True)
    rates = {"one process": len(texts) / (time.perf_counter() - started)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for actors in (1, 2):
            settings = {"side": "document", "prompt": None, "max_seq_length": seq, "actors": actors}
            settings |= {"cpus_per_actor": 0.9, "gpus_per_actor": 0, "batch_size": 64}  # 2 actors fit 2 CPUs
            started = time.perf_counter()
            encode_on_cluster(model_ref, texts[: 64 * actors], **settings)
            fixed = time.perf_counter() - started
            started = time.perf_counter()
            encode_on_cluster(model_ref, texts, **settings)
            seconds = time.perf_counter() - started
            pool = f"{actors} actor{'s' if actors > 1 else ''}"
            rates[pool] = len(texts) / seconds
            rates[f"{pool}, steady"] = len(texts) / max(seconds - fixed, 1e-9)
            rates[f"{actors} actor fixed seconds"] = fixed
    finally:
        ray.shutdown()
    return rates


def minilm_rate(count: int) -> float:
    """MiniLM's documents per second in one process on this machine (SciFact abstracts, 128 tokens)."""
    scifact = load_beir(DATA_DIR / "scifact", "test")
    texts = list(scifact.corpus.values())[:count]
    model = load_model("minilm")
    model.max_seq_length = 128
    model.encode_document(texts[:64], batch_size=64)
    started = time.perf_counter()
    model.encode_document(texts, batch_size=64)
    return len(texts) / (time.perf_counter() - started)


def search_seconds(model, pairs: datasets.Dataset, corpus: list[str], use_faiss: bool) -> float:
    """mine_hard_negatives' search alone: every text's vector precomputed (the tiny model's)."""
    from sentence_transformers.util import mine_hard_negatives

    anchors = list(dict.fromkeys(pairs["anchor"]))
    documents = list(dict.fromkeys(corpus + list(pairs["positive"])))
    vectors = {
        "query": dict(zip(anchors, model.encode_query(anchors, normalize_embeddings=True), strict=True)),
        "document": dict(
            zip(documents, model.encode_document(documents, batch_size=256, normalize_embeddings=True), strict=True)
        ),
    }
    started = time.perf_counter()
    mine_hard_negatives(
        pairs,
        Precomputed(model, vectors),
        corpus=corpus,
        num_negatives=1,
        range_max=30,
        use_faiss=use_faiss,
        output_format="n-tuple",
        verbose=False,
    )
    return time.perf_counter() - started


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--documents", type=int, default=100_000)
    p.add_argument("--search-sizes", type=int, nargs="+", default=[25_000, 100_000])
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-encode-"))
    documents = 6000 if args.smoke else args.documents
    sizes = [6000] if args.smoke else args.search_sizes
    tiny = tiny_model(root / "tiny", hidden=128, layers=2)
    corpus, built = large_corpus(DATA_DIR, max(documents, *sizes))
    texts = list(corpus.corpus.values())
    rates = encode_rates(tiny, texts[:documents], seq=64)
    per_doc = 1 / (200.0 if args.smoke else minilm_rate(2000))
    model = load_model(tiny)
    model.max_seq_length = 64
    pairs = beir_pairs(DATA_DIR / "scifact", "train")
    if args.smoke:
        pairs = pairs.select(range(100))
    search = {}
    for size in sizes:
        search[size] = {
            "torch": search_seconds(model, pairs, texts[:size], use_faiss=False),
            "faiss": search_seconds(model, pairs, texts[:size], use_faiss=True),
        }
    rows = [[way, f"{rate:,.0f}"] for way, rate in rates.items() if "fixed" not in way]
    table(rows, ["tiny model, documents per second", f"{documents:,} documents"])
    speedup = rates["2 actors"] / rates["1 actor"]
    steady = rates["2 actors, steady"] / rates["1 actor, steady"]
    met = steady >= 1.5
    print(
        f"\n2 actors / 1 actor: {speedup:.2f}x ({steady:.2f}x steady); "
        f"fixed cost of a pool: {rates['1 actor fixed seconds']:.1f} s "
        f"(1 actor), {rates['2 actor fixed seconds']:.1f} s (2 actors); MiniLM in one process: "
        f"{1 / per_doc:,.0f} documents/s; target 2 actors >= 1.5x 1 actor, steady: {'met' if met else 'missed'}"
    )
    table(
        [
            [f"{size:,}", f"{t['torch']:.1f}", f"{t['faiss']:.1f}", f"{t['torch'] / t['faiss']:.2f}x"]
            for size, t in search.items()
        ],
        ["corpus documents", "torch search, s", "faiss search, s", "torch / faiss"],
    )
    write(
        "encode_cluster",
        {
            "documents": documents,
            "corpus_built": built,
            "rates": rates,
            "actor_speedup": speedup,
            "actor_speedup_steady": steady,
            "minilm_docs_per_second": 1 / per_doc,
            "search_seconds": {str(k): v for k, v in search.items()},
            "queries": len(set(pairs["anchor"])),
            "met": met,
        },
        args.out,
        args.smoke,
    )


if __name__ == "__main__":
    main()
