"""What Ray costs a trial: `lossweep train` on 1 Ray Train worker against a plain sentence-transformers
training loop (the model and its loss, AdamW, a bare Python loop: the least overhead there is), back
to back in one run.

Same model (all-MiniLM-L6-v2), data (Cranfield's query/abstract pairs), loss (MNRL), batch, sequence
length, threads (2, all cores: `resources.cpus_per_worker: 2` gives the Ray worker OMP_NUM_THREADS=2),
optimiser and steps. Each side runs as its own command, alternating, so both pay their start-up:

- throughput: samples/s over the steps after warm-up, from wall-clock stamps of the training steps
  (ours: the timestamps MLflow stores with `train/loss`, logged at the first step and every 10 as by
  default; theirs: after each optimiser step), from the end of step 10 to the end of step 40, so
  everything between steps (MLflow logging, Ray's bookkeeping) is counted;
- time to first step: from just before the command is started to the end of its first step.

Target: ours / reference >= 0.98.

    python bench/ray_overhead.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from common import (
    DATA_DIR,
    fmt,
    lossweep_train,
    mnrl_spec,
    parse_or_run_child,
    parser,
    run_child,
    summary,
    table,
    write,
)

BATCH, SEQ, LR, WARMUP_STEPS, THREADS = 16, 64, 2e-5, 10, 2


def run_ours(model: str, steps: int) -> dict:
    """`lossweep train` as a user runs it; step stamps come back from the MLflow store."""
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    training = {"batch_size": BATCH, "steps": steps, "learning_rate": LR, "warmup_ratio": 0.0}
    resources = {"workers": 1, "cpus_per_worker": THREADS, "in_trial": False}  # on a Ray Train worker
    start, _, history = lossweep_train(mnrl_spec("ray-overhead", root, model, SEQ, training, resources), root)
    return {"stamps": {m.step: m.timestamp / 1000 for m in history}, "start": start}


def reference_child(model: str, steps: str, out: str) -> None:
    """The plain run, in its own process: a sentence-transformers model and loss in a bare loop."""
    import random

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import get_scheduler

    from lossweep.sweep.data import beir_pairs

    torch.set_num_threads(THREADS)
    torch.manual_seed(42)
    st = SentenceTransformer(model, device="cpu")
    st.max_seq_length = SEQ
    loss = MultipleNegativesRankingLoss(st)
    optimizer = torch.optim.AdamW(st.parameters(), lr=LR, weight_decay=0.01)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=int(steps))
    pairs = beir_pairs(DATA_DIR / "cranfield", "train")
    order = list(range(len(pairs)))
    random.Random(42).shuffle(order)
    st.train()
    stamps = []
    for step in range(int(steps)):
        rows = pairs[order[step * BATCH : (step + 1) * BATCH]]
        features = [st.preprocess(rows[column]) for column in ("anchor", "positive")]
        value = loss(features, torch.empty(0))
        value.backward()
        torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        stamps.append(time.time())
    Path(out).write_text(json.dumps(stamps))


def run_reference(model: str, steps: int) -> dict:
    out = tempfile.mktemp(suffix=".json")
    start = time.time()
    run_child(__file__, model, str(steps), out)
    return {"stamps": dict(enumerate(json.loads(Path(out).read_text()), start=1)), "start": start}


def throughput(stamps: dict[int, float]) -> float:
    """Samples/s after warm-up: from the end of step WARMUP_STEPS to the end of the last step."""
    last = max(stamps)
    return (last - WARMUP_STEPS) * BATCH / (stamps[last] - stamps[WARMUP_STEPS])


def main() -> None:
    args = parse_or_run_child(parser(__doc__), reference_child)
    if args is None:
        return
    if args.smoke:
        from lossweep.sweep.models import tiny_model

        model, steps = tiny_model(Path(tempfile.mkdtemp()) / "tiny"), 2 * WARMUP_STEPS
    else:
        from lossweep.sweep.models import resolve_model

        model, steps = resolve_model("minilm"), 40
    ours, theirs = [], []
    for _ in range(args.repeats):  # alternate, so drift on the machine hits both sides alike
        ours.append(run_ours(model, steps))
        theirs.append(run_reference(model, steps))
    speed_ours = summary([throughput(r["stamps"]) for r in ours])
    speed_ref = summary([throughput(r["stamps"]) for r in theirs])
    first_ours = summary([r["stamps"][1] - r["start"] for r in ours])
    first_ref = summary([r["stamps"][1] - r["start"] for r in theirs])
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
        ["", "lossweep train (1 Ray worker)", "plain loop"],
    )
    print(f"\nthroughput ratio lossweep / reference: {ratio:.3f} (target >= 0.98)")
    write("ray_overhead", results, args.out, args.smoke)


if __name__ == "__main__":
    main()
