"""`lossweep train` of one worker against sentence-transformers' own trainer (`SentenceTransformerTrainer`),
the same settings side by side: all-MiniLM-L6-v2, MultipleNegativesRankingLoss, Cranfield's (query,
abstract) training pairs without duplicates in a batch, batch 16, 128 tokens, 40 steps, AdamW with a
linear schedule and 10% warm-up, one checkpoint (model and optimizer) at the end, no evaluation.

Each run is a fresh process, as a user starts one: its wall time counts imports, data, model, the
steps, the checkpoint and (ours) the MLflow run; the step time is the mean from step 10 to the last.
The two alternate, `--repeats` times. Target: lossweep's wall time <= 1.15x the trainer's.

    python bench/train_vs_st.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA_DIR, fmt, lossweep_train, mnrl_spec, parse_or_run_child, parser, summary, table, write

STEPS, BATCH, SEQ, LR = 40, 16, 128, 2e-5


def reference(model: str, steps: str, out: str) -> None:
    """sentence-transformers' trainer, as its documentation sets it up; prints the step stamps."""
    steps = int(steps)
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers import TrainerCallback

    from lossweep.sweep.data import beir_pairs
    from lossweep.sweep.models import resolve_model

    stamps: list[float] = []

    class Stamps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    st = SentenceTransformer(resolve_model(model), device="cpu")
    st.max_seq_length = SEQ
    arguments = SentenceTransformerTrainingArguments(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        warmup_ratio=0.1,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="steps",
        save_steps=steps,
        logging_steps=10,
        report_to="none",
        seed=42,
        dataloader_drop_last=True,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=st,
        args=arguments,
        train_dataset=beir_pairs(DATA_DIR / "cranfield", "train"),
        loss=MultipleNegativesRankingLoss(st),
        callbacks=[Stamps()],
    )
    trainer.train()
    print(json.dumps({"stamps": stamps}))


def run_ours(model: str, steps: int) -> dict:
    """`lossweep train` as a user runs it; step stamps come back from the MLflow store."""
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    training = {"batch_size": BATCH, "steps": steps, "learning_rate": LR, "log_every_steps": 10}
    resources = {"workers": 1, "cpus_per_worker": 2}
    _, wall, history = lossweep_train(mnrl_spec("train-vs-st", root, model, SEQ, training, resources), root)
    first, last = next(m for m in history if m.step >= 10), history[-1]
    return {"wall": wall, "step": (last.timestamp - first.timestamp) / 1000 / (last.step - first.step)}


def run_reference(model: str, steps: int) -> dict:
    out = tempfile.mkdtemp(prefix="bench-st-")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", model, str(steps), out], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    stamps = json.loads(done.stdout.strip().splitlines()[-1])["stamps"]
    return {"wall": wall, "step": (stamps[-1] - stamps[9]) / (len(stamps) - 10)}


def main() -> None:
    args = parse_or_run_child(parser(__doc__), reference)
    if args is None:
        return
    if args.smoke:
        from lossweep.sweep.models import tiny_model

        model, steps = tiny_model(tempfile.mkdtemp() + "/tiny"), 12
    else:
        model, steps = "minilm", STEPS
    ours, theirs = [], []
    for _ in range(args.repeats):
        theirs.append(run_reference(model, steps))
        ours.append(run_ours(model, steps))
    wall = {"ours": summary([r["wall"] for r in ours]), "reference": summary([r["wall"] for r in theirs])}
    step = {"ours": summary([r["step"] for r in ours]), "reference": summary([r["step"] for r in theirs])}
    ratio = wall["ours"]["median"] / wall["reference"]["median"]
    table(
        [
            ["wall time of the command, s", fmt(wall["ours"], digits=1), fmt(wall["reference"], digits=1)],
            ["seconds per step after step 10", fmt(step["ours"]), fmt(step["reference"])],
        ],
        ["", "lossweep train (1 worker, in process)", "SentenceTransformerTrainer"],
    )
    met = ratio <= 1.15
    print(f"\nwall-time ratio {ratio:.2f}x (target <= 1.15x): {'met' if met else 'missed'}")
    write(
        "train_vs_st",
        {"steps": steps, "wall": wall, "step": step, "wall_ratio": ratio, "met": met},
        args.out,
        args.smoke,
    )


if __name__ == "__main__":
    main()
