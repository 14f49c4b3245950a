"""A LoRA adapter against a full fine-tune, side by side: all-MiniLM-L6-v2, MultipleNegativesRankingLoss
on Cranfield's training pairs, batch 16, 128 tokens, the same 40 steps; then NDCG@10 on Cranfield's
test queries. Each run is `lossweep train` in a fresh process (1 worker, in process), so its peak RSS
is its own. Reported: trainable parameters, seconds per step (from step 10 on), peak RSS, the size of
the final checkpoint on disk, NDCG@10 (and the untrained model's, from the at-start evaluation).

Learning rates follow each method's usual practice: 2e-5 for every weight, 2e-4 for the adapter
(r 16, alpha 32 on query and value: PEFT's default layers for BERT). No target: a table to decide by.

    python bench/lora_vs_full.py
"""

from __future__ import annotations

import json
import resource
import tempfile
from pathlib import Path

from common import DATA_DIR, fmt, parse_or_run_child, parser, run_child, summary, table, write

STEPS, BATCH, SEQ = 40, 16, 128
METHODS = {
    "full fine-tune": {"learning_rate": 2e-5, "adapter": None},
    "LoRA r=16": {"learning_rate": 2e-4, "adapter": {"method": "lora", "r": 16, "alpha": 32.0}},
}
METRIC = "eval/cranfield/ndcg_at_10"


def spec_of(method: str, model: str, steps: int, root: Path, limit: int | None) -> dict:
    chosen = METHODS[method]
    test = {"type": "retrieval", "path": "cranfield", "split": "test", "name": "cranfield"}
    return {
        "name": "lora-vs-full",
        "data_dir": str(DATA_DIR),
        "model": model,
        "max_seq_length": SEQ,
        "train": {"path": "cranfield", "split": "train"},
        "eval": [test | ({"limit": limit} if limit else {})],
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "adapter": chosen["adapter"],
        "training": {
            "batch_size": BATCH,
            "steps": steps,
            "learning_rate": chosen["learning_rate"],
            "log_every_steps": 2,
        },
        "evaluation": {"at_start": True},
        "resources": {"workers": 1, "cpus_per_worker": 2},
        "output_dir": str(root / "runs"),
        "mlflow": {"experiment": "lora-vs-full", "tracking_uri": f"sqlite:///{root}/mlflow.db"},
    }


def child(method: str, model: str, steps: str, root: str, limit: str) -> None:
    """One `lossweep train` in this process; prints what it measured as JSON."""
    from mlflow.tracking import MlflowClient

    from lossweep.sweep.driver import train
    from lossweep.sweep.models import load_model
    from lossweep.sweep.spec import parse_spec

    spec = parse_spec(spec_of(method, model, int(steps), Path(root), int(limit) or None))
    result = train(spec, tracking_uri=spec.mlflow.tracking_uri)
    client = MlflowClient(spec.mlflow.tracking_uri)
    history = sorted(client.get_metric_history(result.run_id, "train/loss"), key=lambda m: m.step)
    first = next(m for m in history if m.step >= min(10, history[-1].step - 1))
    last = history[-1]
    scores = sorted(client.get_metric_history(result.run_id, METRIC), key=lambda m: m.step)
    checkpoint = Path(result.checkpoint_path)
    size = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
    trained = load_model(str(checkpoint / "model"))
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    print(
        json.dumps(
            {
                "trainable": trainable,
                "step": (last.timestamp - first.timestamp) / 1000 / max(1, last.step - first.step),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "checkpoint_mb": size / 2**20,
                "untrained": scores[0].value,
                "ndcg": scores[-1].value,
            }
        )
    )


def main() -> None:
    args = parse_or_run_child(parser(__doc__), child)
    if args is None:
        return
    if args.smoke:
        from lossweep.sweep.models import tiny_model

        model, steps, limit = tiny_model(tempfile.mkdtemp() + "/tiny"), 4, 20
    else:
        model, steps, limit = "minilm", STEPS, 0
    runs: dict[str, list[dict]] = {method: [] for method in METHODS}
    for _ in range(args.repeats):
        for method in METHODS:
            root = tempfile.mkdtemp(prefix="bench-lora-")
            out = run_child(__file__, method, model, str(steps), root, str(limit))
            runs[method].append(json.loads(out.strip().splitlines()[-1]))
    full, lora = (runs[m] for m in METHODS)

    def median(rows: list[dict], key: str) -> float:
        return summary([r[key] for r in rows])["median"]

    rows = [
        ["trainable parameters", f"{median(full, 'trainable'):,.0f}", f"{median(lora, 'trainable'):,.0f}"],
        ["seconds per step", fmt(summary([r["step"] for r in full])), fmt(summary([r["step"] for r in lora]))],
        ["peak RSS, MB", f"{median(full, 'peak_rss_mb'):.0f}", f"{median(lora, 'peak_rss_mb'):.0f}"],
        ["final checkpoint, MB", f"{median(full, 'checkpoint_mb'):.1f}", f"{median(lora, 'checkpoint_mb'):.2f}"],
        [f"NDCG@10 after {steps} steps", f"{median(full, 'ndcg'):.4f}", f"{median(lora, 'ndcg'):.4f}"],
        ["NDCG@10 untrained", f"{median(full, 'untrained'):.4f}", f"{median(lora, 'untrained'):.4f}"],
    ]
    table(rows, ["", *METHODS])
    ratios = {
        "trainable_ratio": median(lora, "trainable") / median(full, "trainable"),
        "step_time_ratio": median(lora, "step") / median(full, "step"),
        "peak_rss_ratio": median(lora, "peak_rss_mb") / median(full, "peak_rss_mb"),
        "checkpoint_ratio": median(lora, "checkpoint_mb") / median(full, "checkpoint_mb"),
    }
    print("\nLoRA / full: " + ", ".join(f"{k.removesuffix('_ratio')} {v:.3f}x" for k, v in ratios.items()))
    write(
        "lora_vs_full",
        {"steps": steps, "runs": runs, **ratios, "met": None},
        args.out,
        args.smoke,
    )


if __name__ == "__main__":
    main()
