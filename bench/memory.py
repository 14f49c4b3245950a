"""Peak memory of one training step: MultipleNegativesRankingLoss vs its GradCache twin,
CachedMultipleNegativesRankingLoss (mini-batches of 32), at global batch 64, 256 and 1024.

Each measurement runs in a fresh process (peak RSS is per process): load a tiny BERT and Cranfield's
(query, abstract) pairs (128 tokens; cycled past its 1003 pairs), build the loss, run one step, read
the peak resident set.
Target: cached at 1024 <= 1.3x cached at 64.

    python bench/memory.py
"""

from __future__ import annotations

import json
import resource
import tempfile
from pathlib import Path

from common import DATA_DIR, parse_or_run_child, parser, run_child, summary, table, write

LOSSES = {"MNRL": "MultipleNegativesRankingLoss", "CachedMNRL": "CachedMultipleNegativesRankingLoss"}


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def child(loss_name: str, batch: str, model_dir: str) -> None:
    """One step in this process; prints {baseline_mb, peak_mb}."""
    import torch

    from lossweep.losses import LossConfig, build_loss
    from lossweep.sweep.data import beir_pairs
    from lossweep.sweep.models import load_model
    from lossweep.sweep.step import Optimisation, collate, train_step, trainable_parameters

    torch.set_num_threads(2)
    model = load_model(model_dir)
    model.max_seq_length = 128
    pairs = beir_pairs(DATA_DIR / "cranfield", "train")
    params = {"mini_batch_size": 32} if loss_name.startswith("Cached") else {}
    loss = build_loss(LossConfig(loss_name, params), model, distributed=False)
    parameters = trainable_parameters(loss)
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    # Cranfield has 1003 pairs: a batch of 1024 takes 21 of them twice (same sizes, same memory).
    rows = pairs.shuffle(seed=0).select([i % len(pairs) for i in range(int(batch))])[:]
    features, labels = collate(model, rows)
    baseline = rss_mb()
    train_step(Optimisation(loss, optimizer, parameters), features, labels)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak}))


def measure(loss_name: str, batch: int, model_dir: str) -> dict:
    return json.loads(run_child(__file__, loss_name, str(batch), model_dir).strip().splitlines()[-1])


def main() -> None:
    args = parse_or_run_child(parser(__doc__), child)
    if args is None:
        return
    from lossweep.sweep.models import tiny_model

    model_dir = tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    batches = [16, 64] if args.smoke else [64, 256, 1024]
    results: dict = {"batches": batches, "peak_mb": {}, "step_increment_mb": {}}
    rows = []
    for short, name in LOSSES.items():
        for batch in batches:
            runs = [measure(name, batch, model_dir) for _ in range(args.repeats)]
            peak = summary([r["peak_mb"] for r in runs])
            increment = summary([r["peak_mb"] - r["baseline_mb"] for r in runs])
            results["peak_mb"][f"{short}@{batch}"] = peak
            results["step_increment_mb"][f"{short}@{batch}"] = increment
            rows.append([short, batch, f"{peak['median']:.0f} MB", f"{increment['median']:.0f} MB"])
    low, high = batches[0], batches[-1]
    ratio = results["peak_mb"][f"CachedMNRL@{high}"]["median"] / results["peak_mb"][f"CachedMNRL@{low}"]["median"]
    plain = results["peak_mb"][f"MNRL@{high}"]["median"] / results["peak_mb"][f"MNRL@{low}"]["median"]
    results |= {
        "cached_peak_ratio_high_over_low": ratio,
        "plain_peak_ratio_high_over_low": plain,
        "target": f"CachedMNRL@{high} <= 1.3 x CachedMNRL@{low}",
        "met": ratio <= 1.3,
    }
    table(rows, ["loss", "global batch", "peak RSS (median)", "growth during the step"])
    print(f"\nCachedMNRL {high} vs {low}: {ratio:.2f}x (target <= 1.3);  MNRL: {plain:.2f}x")
    write("memory", results, args.out, args.smoke)


if __name__ == "__main__":
    main()
