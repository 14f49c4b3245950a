"""Retrieval evaluation memory at corpus scale: lossweep's chunked evaluator (the corpus encoded and
scored `corpus_chunk_size` documents at a time, every size from one encoding) against the evaluator
it replaced (the whole corpus encoded into one tensor, then scored per size), side by side.

Each measurement runs in a fresh process: peak resident memory during the evaluation (VmHWM, reset
after the model and corpus are loaded) and wall time, at 10k / 100k / 1M documents: SciFact's test
queries over its corpus plus distractors (bench/corpus.py). The model is a randomly initialised
1-layer BERT of width 64 with MiniLM's tokenizer, 32 tokens, so the 1M point fits in minutes on 2
cores; the whole-corpus tensor grows with the width (MiniLM's 384: 6x this one's), the chunk does
not grow with the corpus. Metrics must agree to 1e-6.
Target: once the corpus fills a chunk, the evaluation's peak memory (over the loaded texts) grows at
most 1.2x to 1M documents; metrics equal.

    python bench/eval_memory.py
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import DATA_DIR, parse_or_run_child, parser, run_child, table, write
from corpus import large_corpus
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util import cos_sim

from lossweep.sweep.evaluate import RetrievalEvaluator
from lossweep.sweep.models import load_model, tiny_model

DIMS = [64, 32]
WIDTH, SEQ = 64, 32
CHUNK = 50_000


def rss_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1)) / 1024


def whole_corpus(model, data, dims, batch_size) -> dict[str, float]:
    """The evaluator before chunking: the corpus encoded into one tensor, then each size scored from it."""
    corpus = model.encode_document(list(data.corpus.values()), batch_size=batch_size, convert_to_tensor=True)
    relevant = {q: set(d) for q, d in data.qrels.items()}
    metrics = {}
    for dim in dims:
        ir = InformationRetrievalEvaluator(
            data.queries,
            data.corpus,
            relevant,
            name="ref",
            truncate_dim=dim,
            batch_size=batch_size,
            write_csv=False,
            precision_recall_at_k=[1, 10, 100],
            map_at_k=[100],
            score_functions={"cosine": cos_sim},
        )
        scores = ir.compute_all_metrics(model, corpus_embeddings=F.normalize(corpus[:, :dim], dim=-1))["cosine"]
        metrics[f"ndcg_at_10/dim_{dim}"] = scores["ndcg@k"][10]
        metrics[f"recall_at_100/dim_{dim}"] = scores["recall@k"][100]
    return metrics


def child(which: str, documents: str, model_dir: str, out: str) -> None:
    torch.set_num_threads(2)
    data, counts = large_corpus(DATA_DIR, int(documents))
    model = load_model(model_dir)
    model.max_seq_length = SEQ
    model.encode(list(data.corpus.values())[:64])  # warm-up
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to what is resident now
    before = rss_mb("VmRSS")
    start = time.perf_counter()
    if which == "chunked":
        result = RetrievalEvaluator("s", data, dims=DIMS, batch_size=64, corpus_chunk_size=CHUNK)(model).metrics
        metrics = {f"{m}/dim_{d}": result[f"eval/s/{m}/dim_{d}"] for d in DIMS for m in ("ndcg_at_10", "recall_at_100")}
    else:
        metrics = whole_corpus(model, data, DIMS, 64)
    seconds = time.perf_counter() - start
    peak = rss_mb("VmHWM")
    Path(out).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "rss_before_mb": before,
                "peak_mb": peak,
                "eval_peak_over_before_mb": peak - before,
                "metrics": metrics,
                "counts": counts,
            }
        )
    )


def main() -> None:
    args = parse_or_run_child(parser(__doc__), child)
    if args is None:
        return
    sizes = [2_000, 6_000] if args.smoke else [10_000, 100_000, 1_000_000]
    work = Path(tempfile.mkdtemp())
    model_dir = tiny_model(work / "model", hidden=WIDTH, layers=1)
    rows, results = [], {"sizes": {}}
    for size in sizes:
        point = {}
        for which in ("chunked", "whole_corpus"):
            out = work / f"{which}-{size}.json"
            run_child(__file__, which, str(size), model_dir, str(out))
            point[which] = json.loads(out.read_text())
        a, b = point["chunked"], point["whole_corpus"]
        point["max_metric_difference"] = max(abs(a["metrics"][k] - b["metrics"][k]) for k in a["metrics"])
        results["sizes"][size] = point
        rows.append(
            [
                f"{size:,}",
                f"{a['eval_peak_over_before_mb']:.0f} MB",
                f"{b['eval_peak_over_before_mb']:.0f} MB",
                f"{a['seconds']:.1f} s",
                f"{b['seconds']:.1f} s",
                f"{point['max_metric_difference']:.1e}",
            ]
        )
        print(rows[-1], flush=True)
    # Growth from the first size that fills a chunk: below it the chunk is the corpus
    first = next((size for size in sizes if size >= CHUNK), sizes[0])
    low, high = results["sizes"][first], results["sizes"][sizes[-1]]
    growth = {
        which: high[which]["eval_peak_over_before_mb"] / max(low[which]["eval_peak_over_before_mb"], 1.0)
        for which in ("chunked", "whole_corpus")
    }
    difference = max(point["max_metric_difference"] for point in results["sizes"].values())
    results |= {
        "dims": DIMS,
        "corpus_chunk_size": CHUNK,
        "counts": high["chunked"]["counts"],
        "peak_growth_chunked": growth["chunked"],
        "peak_growth_whole_corpus": growth["whole_corpus"],
        "peak_ratio_at_largest": high["chunked"]["eval_peak_over_before_mb"]
        / high["whole_corpus"]["eval_peak_over_before_mb"],
        "max_metric_difference": difference,
        "targets": {"max_metric_difference": "<= 1e-6", "peak_growth_chunked": "<= 1.2 once the corpus fills a chunk"},
        "growth_from_documents": first,
        "met": {"metrics_equal": difference <= 1e-6, "bounded": growth["chunked"] <= 1.2},
    }
    header = ["documents", "chunked: eval peak", "whole corpus: eval peak", "chunked time", "whole time", "max |diff|"]
    table(rows, header)
    print(
        f"eval peak growth {sizes[0]:,} -> {sizes[-1]:,}: chunked {growth['chunked']:.2f}x, "
        f"whole corpus {growth['whole_corpus']:.2f}x"
    )
    write("eval_memory", results, args.out, args.smoke)


if __name__ == "__main__":
    main()
