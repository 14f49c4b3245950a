"""Selection on a sample of the corpus against the whole corpus, side by side: does a trial's score on
the sample order the trials as the whole corpus does, and what does an evaluation cost each way?

Trials: all-MiniLM-L6-v2 fine-tuned with MNRL on SciFact's training pairs at several learning rates and
budgets (each a `lossweep train` run in this process), plus the untrained model: the spread of scores
a search sees. Each is scored (NDCG@10) on SciFact's 300 test queries over (a) the whole corpus and
(b) a sample of it (`sweep/subcorpus.py`: every judged document, hard distractors from the untrained
model, random ones), and again on a larger corpus (SciFact's plus distractors, bench/corpus.py).
Reported per corpus: the evaluation time per trial each way, the sample's one-off cost, and Spearman's
rho (and Kendall's tau) between the two orders of the trials, at each sample size asked for.
Target: rho >= 0.9 on each corpus at some sample size well below the corpus.

    python bench/sampled_eval.py                      # SciFact (5,183 docs) and a 30k-document corpus
    python bench/sampled_eval.py --large 105183 --large-sample 5000,20000
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import DATA_DIR, parser, table, write
from corpus import large_corpus
from scipy import stats

from lossweep.sweep.data import load_beir
from lossweep.sweep.driver import train
from lossweep.sweep.evaluate import RetrievalEvaluator
from lossweep.sweep.models import load_model, tiny_model
from lossweep.sweep.spec import parse_spec
from lossweep.sweep.subcorpus import SampleRequest, choose, ranking_depth, sampled, untrained_ranking

SEQ = 128
CONFIGS = [(1e-5, 10), (5e-5, 10), (2e-4, 10), (1e-3, 10), (5e-5, 30), (2e-4, 30)]  # (learning rate, steps)
METRIC = "eval/scifact/ndcg_at_10"


def trained_models(model: str, root: Path, configs: list[tuple[float, int]]) -> list[tuple[str, str]]:
    """(name, model folder) of each trial: the untrained model, then one `lossweep train` run per config."""
    found = [("untrained", model)]
    for lr, steps in configs:
        spec = parse_spec(
            {
                "name": f"trial-{lr:g}-{steps}",
                "data_dir": str(DATA_DIR),
                "model": model,
                "max_seq_length": SEQ,
                "train": {"path": "scifact", "split": "train"},
                "loss": {"name": "MultipleNegativesRankingLoss"},
                "training": {"batch_size": 16, "steps": steps, "learning_rate": lr},
                "evaluation": {"at_start": False},
                "output_dir": str(root / "runs"),
                "mlflow": {"experiment": "sampled-eval", "tracking_uri": f"sqlite:///{root}/mlflow.db"},
            }
        )
        result = train(spec)
        found.append((f"lr {lr:g}, {steps} steps", f"{result.checkpoint_path}/model"))
    return found


def scores(models: list[tuple[str, str]], data, seq: int) -> tuple[list[float], float]:
    """Each model's NDCG@10 on `data`, and the mean seconds per evaluation (model load excluded)."""
    evaluator = RetrievalEvaluator("scifact", data, None, 64)
    values, seconds = [], []
    for _, folder in models:
        model = load_model(folder)
        model.max_seq_length = seq
        started = time.perf_counter()
        values.append(evaluator(model).metrics[METRIC])
        seconds.append(time.perf_counter() - started)
    return values, sum(seconds) / len(seconds)


def compare(full, sizes: list[int], models, base: str, seq: int) -> dict:
    """Score every model on the whole of `full` and on a sample of each size, and compare the orders.

    The untrained model ranks the corpus once, to the depth the largest sample needs; each sample is
    `subcorpus.choose` on that ranking: the largest as `subcorpus.make` makes it, a smaller one too
    unless make's shallower ranking would run out of distinct documents before the hard slots are
    filled (then this one has more hard distractors; each sample's counts are written)."""
    loaded = load_model(base)
    loaded.max_seq_length = seq
    started = time.perf_counter()
    ranked = untrained_ranking(loaded, full, ranking_depth(full, max(sizes)), 50_000, 64, None)
    ranking_seconds = time.perf_counter() - started
    on_full, full_seconds = scores(models, full, seq)
    best_full = max(range(len(models)), key=on_full.__getitem__)
    samples = []
    for size in sizes:
        documents, counts = choose(full, SampleRequest(size, "hard", 0), ranked)
        on_sample, sample_seconds = scores(models, sampled(full, documents), seq)
        samples.append(
            {
                "size": len(documents),
                "kinds": counts,
                "eval_seconds": sample_seconds,
                "scores": on_sample,
                "spearman_rho": float(stats.spearmanr(on_full, on_sample).statistic),
                "kendall_tau": float(stats.kendalltau(on_full, on_sample).statistic),
                "same_best": best_full == max(range(len(models)), key=on_sample.__getitem__),
            }
        )
    return {
        "corpus": len(full.corpus),
        "ranking_seconds": ranking_seconds,
        "eval_seconds_full": full_seconds,
        "trials": [label for label, _ in models],
        "full": on_full,
        "samples": samples,
        "spearman_rho_best": max(found["spearman_rho"] for found in samples),
    }


def sizes_of(text: str) -> list[int]:
    """'1000,2000' -> [1000, 2000]."""
    return sorted(int(size) for size in text.split(","))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sample", default="1000,2000", help="sizes of SciFact's samples, comma-separated")
    p.add_argument("--large", type=int, default=30_000, help="documents of the larger corpus (0: skip it)")
    p.add_argument("--large-sample", default="5000,20000", help="sizes of the larger corpus's samples")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sampled-"))
    scifact = load_beir(DATA_DIR / "scifact", "test")
    if args.smoke:
        base, configs, seq = tiny_model(root / "tiny"), CONFIGS[:3], 32
        scifact = type(scifact)(
            dict(list(scifact.corpus.items())[:600]) | _judged(scifact), scifact.queries, scifact.qrels
        )
        args.sample, args.large, args.large_sample = "300", 2000, "500"
    else:
        base, configs, seq = "minilm", CONFIGS, SEQ
    models = trained_models(base, root, configs)
    results = {"scifact": compare(scifact, sizes_of(args.sample), models, base, seq)}
    if args.large:
        large, counts = large_corpus(DATA_DIR, args.large)
        results["large"] = compare(large, sizes_of(args.large_sample), models, base, seq) | {"built": counts}
    rows = []
    for name, found in results.items():
        for sample in found["samples"]:
            rows.append(
                [
                    f"{name} ({found['corpus']:,} docs -> {sample['size']:,})",
                    f"{found['eval_seconds_full']:.1f}",
                    f"{sample['eval_seconds']:.1f}",
                    f"{sample['eval_seconds'] / found['eval_seconds_full']:.2f}x",
                    f"{found['ranking_seconds']:.0f}",
                    f"{sample['spearman_rho']:.3f}",
                    f"{sample['kendall_tau']:.3f}",
                    "yes" if sample["same_best"] else "no",
                ]
            )
    table(
        rows,
        [
            "corpus",
            "eval s/trial: full",
            "sample",
            "ratio",
            "ranking once, s",
            "Spearman rho",
            "Kendall tau",
            "same best",
        ],
    )
    for name, found in results.items():
        print(
            f"\n{name}, whole: "
            + "; ".join(f"{t}: {v:.4f}" for t, v in zip(found["trials"], found["full"], strict=True))
        )
        for sample in found["samples"]:
            print(f"  sample {sample['size']:,}: " + "; ".join(f"{v:.4f}" for v in sample["scores"]))
    met = all(found["spearman_rho_best"] >= 0.9 for found in results.values())
    print(f"\nrho >= 0.9 on every corpus at some sample size: {'met' if met else 'missed'}")
    rho_min = min(found["spearman_rho_best"] for found in results.values())
    write("sampled_eval", {"results": results, "spearman_rho_min": rho_min, "met": met}, args.out, args.smoke)


def _judged(data) -> dict[str, str]:
    return {doc: data.corpus[doc] for docs in data.qrels.values() for doc in docs if doc in data.corpus}


if __name__ == "__main__":
    main()
