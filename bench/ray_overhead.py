"""What Ray costs a trial: `lossweep train` on 1 Ray Train worker against a plain sentence-transformers
training run (SentenceTransformerTrainer, what users would run instead), back to back in one run.

Same model (all-MiniLM-L6-v2), data (Cranfield's query/abstract pairs), loss (MNRL), batch, sequence
length, threads (2, all cores: `resources.cpus_per_worker: 2` gives the Ray worker OMP_NUM_THREADS=2),
optimiser and steps. Each side runs as its own command, alternating, so both pay their start-up:

- throughput: samples/s over the steps after warm-up, from wall-clock stamps of the training steps
  (ours: the timestamps MLflow stores with `train/loss`, logging every step; theirs: a Trainer
  callback), so everything between steps (logging, checkpoint bookkeeping) is counted;
- time to first step: from just before the command is started to the end of its first step.

Target: ours / reference >= 0.98.

    python bench/ray_overhead.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import DATA_DIR, fmt, parser, summary, table, write

BATCH, SEQ, LR, WARMUP_STEPS, THREADS = 16, 64, 2e-5, 3, 2


def spec(root: Path, model: str, steps: int) -> dict:
    return {
        "name": "ray-overhead",
        "data_dir": str(DATA_DIR),
        "model": model,
        "max_seq_length": SEQ,
        "train": {"path": "cranfield", "split": "train"},
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "training": {
            "batch_size": BATCH,
            "steps": steps,
            "learning_rate": LR,
            "warmup_ratio": 0.0,
            "log_every_steps": 1,
        },
        "evaluation": {"at_start": False},
        "resources": {"workers": 1, "cpus_per_worker": THREADS},
        "output_dir": str(root / "runs"),
        "mlflow": {"experiment": "ray-overhead", "tracking_uri": f"sqlite:///{root}/mlflow.db"},
    }


def run_ours(model: str, steps: int) -> dict:
    """`lossweep train` as a user runs it; step stamps come back from the MLflow store."""
    from mlflow.tracking import MlflowClient

    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    (root / "spec.yaml").write_text(yaml.safe_dump(spec(root, model, steps)))
    start = time.time()
    command = Path(sys.executable).with_name("lossweep")  # this environment's console script
    subprocess.run(
        [str(command) if command.exists() else "lossweep", "train", str(root / "spec.yaml")],
        check=True,
        capture_output=True,
        text=True,
    )
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("ray-overhead").experiment_id])[0]
    stamps = sorted((m.step, m.timestamp / 1000) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    return {"stamps": [t for _, t in stamps], "start": start}


def reference_child(model: str, steps: int, out: str) -> None:
    """The plain run, in its own process: SentenceTransformerTrainer on the same inputs."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers import TrainerCallback

    from lossweep.sweep.data import beir_pairs

    torch.set_num_threads(THREADS)
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.time())

    st = SentenceTransformer(model, device="cpu")
    st.max_seq_length = SEQ
    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-ref-"),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        warmup_ratio=0.0,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=42,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=st,
        args=args,
        train_dataset=beir_pairs(DATA_DIR / "cranfield", "train"),
        loss=losses.MultipleNegativesRankingLoss(st),
        callbacks=[Stamp()],
    )
    trainer.train()
    Path(out).write_text(json.dumps(stamps))


def run_reference(model: str, steps: int) -> dict:
    out = tempfile.mktemp(suffix=".json")
    start = time.time()
    subprocess.run(
        [sys.executable, __file__, "--child", model, str(steps), out], check=True, capture_output=True, text=True
    )
    return {"stamps": json.loads(Path(out).read_text()), "start": start}


def throughput(stamps: list[float]) -> float:
    """Samples/s over the steps after warm-up: from the end of step WARMUP_STEPS to the end of the last."""
    return (len(stamps) - WARMUP_STEPS) * BATCH / (stamps[-1] - stamps[WARMUP_STEPS - 1])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        reference_child(args.child[0], int(args.child[1]), args.child[2])
        return
    if args.smoke:
        from lossweep.sweep.models import tiny_model

        model, steps = tiny_model(Path(tempfile.mkdtemp()) / "tiny"), WARMUP_STEPS + 3
    else:
        from lossweep.sweep.models import resolve_model

        model, steps = resolve_model("minilm"), 25
    ours, theirs = [], []
    for _ in range(args.repeats):  # alternate, so drift on the machine hits both sides alike
        ours.append(run_ours(model, steps))
        theirs.append(run_reference(model, steps))
    speed_ours = summary([throughput(r["stamps"]) for r in ours])
    speed_ref = summary([throughput(r["stamps"]) for r in theirs])
    first_ours = summary([r["stamps"][0] - r["start"] for r in ours])
    first_ref = summary([r["stamps"][0] - r["start"] for r in theirs])
    ratio = speed_ours["median"] / speed_ref["median"]
    results = {
        "model": "all-MiniLM-L6-v2" if not args.smoke else "tiny",
        "batch_size": BATCH,
        "max_seq_length": SEQ,
        "threads": THREADS,
        "steps": steps,
        "warmup_steps": WARMUP_STEPS,
        "samples_per_second_lossweep": speed_ours,
        "samples_per_second_reference": speed_ref,
        "throughput_ratio": ratio,
        "seconds_to_first_step_lossweep": first_ours,
        "seconds_to_first_step_reference": first_ref,
        "target": "throughput_ratio >= 0.98",
        "met": ratio >= 0.98,
    }
    table(
        [
            ["samples/s after warm-up", fmt(speed_ours), fmt(speed_ref)],
            ["seconds from command start to first step done", fmt(first_ours, " s", 1), fmt(first_ref, " s", 1)],
        ],
        ["", "lossweep train (1 Ray worker)", "SentenceTransformerTrainer"],
    )
    print(f"\nthroughput ratio lossweep / reference: {ratio:.3f} (target >= 0.98)")
    write("ray_overhead", results, args.out, args.smoke)


if __name__ == "__main__":
    main()
