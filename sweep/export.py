"""`lossweep export SWEEP DIR`: the best trial of a sweep as a sentence-transformers model folder.

The folder loads with `SentenceTransformer(DIR)`, carries a model card naming the loss and its
parameters, the data and the scores, and the model is also logged to the best trial's MLflow run with
MLflow's sentence-transformers flavour. A trial that trained a LoRA adapter exports the adapter and its
base model's name (PEFT's layout), or with `merge` the adapter folded into full weights; MLflow gets
the merged model, which loads without PEFT.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow

from . import adapters, storage
from .metrics import is_eval
from .models import load_model
from .protocol import Tag
from .report import SweepNotFound, find_sweep
from .runs import LOSS_LABEL
from .spec import Params
from .tracking import RUN_ID, Tracker, active_uri, redact


class ExportError(RuntimeError):
    """Nothing to export; the message says why and what to run first."""


@dataclass
class Exported:
    run_id: str
    path: Path
    model_uri: str


def best_run(tracker: Tracker, sweep_or_run: str):
    """The run to export: a sweep's best trial (by sweep name or parent run id), or a trial's own run
    (its id or a unique prefix)."""
    try:
        parent = find_sweep(tracker, sweep_or_run)
    except SweepNotFound:
        if not RUN_ID.fullmatch(sweep_or_run):
            raise
        return tracker.find_run(sweep_or_run)  # a trial's run, or a one-line RunNotFound
    best_id = parent.data.tags.get(Tag.BEST_RUN_ID)
    if not best_id:
        raise ExportError(
            f"sweep {parent.info.run_name!r} has no best trial yet; finish it (lossweep sweep ... --resume)"
        )
    return tracker.client.get_run(best_id)


def model_card(run, metrics: dict[str, float]) -> str:
    params = run.data.params
    loss_params = {
        k.removeprefix("loss."): v
        for k, v in sorted(params.items())
        if k.startswith("loss.params.") or k.startswith("loss.base.")
    }
    label = params.get(LOSS_LABEL, params.get(Params.LOSS_NAME, "?"))
    data = params.get(Params.TRAIN_PATH) or params.get(Params.TRAIN_HUB)
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, lossweep, " + params.get(Params.LOSS_NAME, "loss") + "]",
        "---",
        "",
        f"# {run.info.run_name}",
        "",
        f"Fine-tuned from `{params.get(Params.MODEL, '?')}` by lossweep with **{label}**.",
        "",
        "## Loss and parameters",
        "",
        "| parameter | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in loss_params.items()],
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        *[
            f"| {k} | {params[k]} |"
            for k in sorted(params)
            if k.startswith(("training.", "resources.", "matryoshka_dims"))
        ],
        f"| data | {data} (split {params.get(Params.TRAIN_SPLIT)}) |",
        f"| data fingerprint | {run.data.tags.get(Tag.DATA_FINGERPRINT, '?')} |",
        "",
        "## Evaluation (final step)",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if is_eval(k)],
        "",
        f"MLflow run `{run.info.run_id}`; reproduce it with `lossweep reproduce {run.info.run_id}`.",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer('path/to/this/folder')",
        "embeddings = model.encode(['a sentence'])",
        "```",
        "",
    ]
    return "\n".join(lines)


def export(
    tracker: Tracker, sweep_or_run: str, out_dir: Path | str, log_to_mlflow: bool = True, merge: bool = False
) -> Exported:
    run = best_run(tracker, sweep_or_run)
    checkpoint = run.data.tags.get(Tag.CHECKPOINT)
    if not checkpoint or not storage.exists(storage.join(checkpoint, "model", "modules.json")):
        raise ExportError(
            f"run {run.info.run_id} has no model checkpoint reachable from here (tag {Tag.CHECKPOINT}={checkpoint!r}); "
            "export where the sweep's output_dir is reachable (its disk, or its bucket with credentials)"
        )
    checkpoint = str(storage.local_copy(checkpoint))  # a bucket's checkpoint is downloaded once
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new folder")
    trained = Path(checkpoint) / "model"
    if merge and adapters.holds_adapter(trained):
        adapters.merge(load_model(str(trained))).save(str(out))
    else:
        shutil.copytree(trained, out, dirs_exist_ok=True)
    (out / "README.md").write_text(model_card(run, run.data.metrics), encoding="utf-8")
    (out / "lossweep.json").write_text(
        json.dumps(
            {"run_id": run.info.run_id, "tracking_uri": redact(tracker.uri), "params": run.data.params}, indent=2
        )
    )
    model = load_model(str(out))  # proves the folder loads
    model_uri = ""
    if log_to_mlflow:
        with active_uri(tracker.uri), mlflow.start_run(run_id=run.info.run_id):
            info = mlflow.sentence_transformers.log_model(adapters.merge(model), name="model")
        model_uri = info.model_uri
        tracker.set_tags(run.info.run_id, {Tag.EXPORTED_MODEL: model_uri})
    return Exported(run.info.run_id, out, model_uri)
