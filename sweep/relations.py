"""The checks that relate a spec's sections: what no section can see alone (the batch and the workers,
the loss and the data steps, the sweep and the eval sets), one small function each.

Each takes the spec and returns its problems as 'field.path: message' lines. On a spec read
leniently (`lenient.py`) a check that needs a broken field raises `BrokenField` and is skipped; the
field's own error is reported instead.
"""

from __future__ import annotations

import difflib
import re
from functools import partial
from typing import TYPE_CHECKING

from lossweep.losses import LOSSES, LossConfig, config_errors

from .lenient import BROKEN, each, given
from .metrics import metric_names

if TYPE_CHECKING:
    from .spec import Spec


def relation_problems(spec: Spec, lenient: bool = False) -> list[str]:
    """What no section can see alone: the batch and the workers, the loss and the data steps, the
    sweep and the eval sets, one small check each. `lenient`: the spec has broken sections (None);
    a check that needs one is skipped (its section's own error is reported)."""
    checks = RELATIONS + (SWEEP_RELATIONS if spec.sweep is not None and spec.sweep is not BROKEN else [])
    return each([partial(check, spec) for check in checks], lenient)


def _version(spec: Spec) -> list[str]:
    from .spec import SPEC_VERSION

    if spec.version != SPEC_VERSION:
        return [f"version: {spec.version} is not supported; this lossweep reads version {SPEC_VERSION}"]
    return []


def _steps_or_epochs(spec: Spec) -> list[str]:
    t = spec.training
    return ["training: set exactly one of steps or epochs"] if given(t.steps) == given(t.epochs) else []


def _batch_and_workers(spec: Spec) -> list[str]:
    size, workers = spec.training.batch_size, spec.resources.workers
    if size < 1 or not size % workers:
        return []
    near = max(workers, round(size / workers) * workers)
    return [
        f"training.batch_size: {size} is not divisible by resources.workers={workers}: each worker takes an "
        f"equal share of the global batch; use a multiple of {workers}, e.g. {near}"
    ]


def _precision_and_gpus(spec: Spec) -> list[str]:
    if spec.training.precision == "fp16" and spec.resources.gpus_per_worker <= 0:
        return ["training.precision: fp16 needs GPUs (resources.gpus_per_worker > 0); on CPU use bf16 or fp32"]
    return []


def _loss_and_data_steps(spec: Spec) -> list[str]:
    found, loss = [], spec.loss
    if spec.matryoshka_dims and loss.name in LOSSES and LOSSES[loss.name].truncates:
        found.append(f"matryoshka_dims: the loss is already {loss.name}; set its dims in loss.params instead")
    if loss.negatives and spec.negatives is None:
        found.append("loss.negatives: true needs mined negatives: add a negatives section (e.g. `negatives: {}`)")
    return found


def _eval_sets(spec: Spec) -> list[str]:
    found = []
    labels = [ref.label for ref in spec.eval]
    for label in sorted({x for x in labels if labels.count(x) > 1}):
        found.append(f"eval: two evaluation sets are named {label!r}; give them distinct `name`s")
    carved = [i for i, ref in enumerate(spec.eval) if ref.from_train is not None]
    if len(carved) > 1:
        found.append(f"eval[{carved[1]}].from_train: only one evaluation set can be carved from the training data")
    for name in sorted(set(spec.evaluation.sets if given(spec.evaluation.sets) else ()) - set(labels)):
        found.append(f"evaluation.sets: {name!r} is not an eval set; eval sets are {labels}")
    return found


def _training_sets(spec: Spec) -> list[str]:
    """Several training sets: named apart, and without what reads one training set (not yet for several)."""
    if not spec.mixture:
        return []
    if not spec.train:
        return ["train: lists no training set; give one set, or a list of them"]
    found = []
    labels = [part.label for part in spec.train]
    for label in sorted({x for x in labels if labels.count(x) > 1}):
        found.append(f"train: two training sets are named {label!r}; give them distinct `name`s")
    later = "is not yet for several training sets"
    for i, ref in enumerate(spec.eval):
        if ref.from_train is not None:
            found.append(f"eval[{i}].from_train: carving a validation set {later}; give the set a path or hub id")
    if given(spec.negatives):
        found.append(f"negatives: mining {later}; drop it, or train on one set")
    if given(spec.teacher):
        found.append(f"teacher: distillation {later}; drop it, or train on one set")
    return found


RELATIONS = [
    _version,
    _steps_or_epochs,
    _batch_and_workers,
    _precision_and_gpus,
    _loss_and_data_steps,
    _eval_sets,
    _training_sets,
]


def _sweep_budget(spec: Spec) -> list[str]:
    found = []
    if not spec.eval:
        found.append("eval: a sweep needs at least one evaluation set to rank trials")
    if not given(spec.training.steps):
        found.append("training.epochs: sweeps compare trials on a fixed budget; set training.steps instead")
    if spec.sweep.scheduler == "asha" and spec.evaluation.every_steps == 0:
        found.append("evaluation.every_steps: ASHA stops trials at intermediate evaluations; set every_steps > 0")
    return found


def _selection(spec: Spec) -> list[str]:
    sweep, labels = spec.sweep, [ref.label for ref in spec.eval]
    if given(sweep.select_on) and sweep.select_on not in labels:
        return [f"sweep.select_on: {sweep.select_on!r} is not an eval set; eval sets are {labels}"]
    if spec.eval and spec.selection_set().role == "guard":
        name = spec.selection_set().label
        return [f"sweep.select_on: {name!r} is a guard set, which never decides; select on a set of role verdict"]
    if not spec.eval or sweep.mode != "compare" or spec.verdict_sets():
        return []
    name = spec.selection_set().label
    return [
        f"sweep.select_on: compare mode would judge the losses on {name!r}, the set that chose their "
        "configurations: that inflates every winner, most of all the losses with more hyperparameters. Add a "
        f"validation set and select on it, e.g. `- {{type: retrieval, from_train: {{size: 30}}, name: {name}-val}}` "
        f"in eval and `select_on: {name}-val` in sweep, keeping {name!r} for the verdict"
    ]


def _metric(spec: Spec) -> list[str]:
    metric = spec.sweep.metric
    if not metric or not spec.eval:
        return []
    selection = spec.selection_set()
    produced = metric_names(selection.type, selection.label, spec.evaluation.dims or spec.matryoshka_dims)
    full_size = re.sub(r"/dim_\d+$", "", metric)  # a suffix naming the model's own size is checked with the model
    if metric in produced or (full_size != metric and full_size in produced):
        return []
    close = difflib.get_close_matches(metric, produced, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(produced[:8]) + (", ..." if len(produced) > 8 else "")
    return [
        f"sweep.metric: {metric!r} is not a metric of the selection set {selection.label!r}; {hint}it produces {listed}"
    ]


def _sweep_losses(spec: Spec) -> list[str]:
    found, sweep = [], spec.sweep
    for i, item in enumerate(() if sweep.losses == "all" else sweep.losses):
        if isinstance(item, str):
            found += config_errors(LossConfig(item), f"sweep.losses[{i}]")
        elif item.negatives and spec.negatives is None:
            found.append(f"sweep.losses[{i}].negatives: true needs mined negatives: add a negatives section")
    if spec.negatives is None:
        found += [
            f"sweep.negatives.{knob}: searches a mining knob, but the spec mines nothing: add a negatives section"
            for knob in sweep.negatives
        ]
    return found


def _searched_batch(spec: Spec) -> list[str]:
    batch, workers = spec.sweep.shared.get("batch_size"), spec.resources.workers
    if batch is None:
        return []
    if batch.choices:
        bad = [b for b in batch.choices if not isinstance(b, int) or isinstance(b, bool) or b % workers]
        return [f"sweep.shared.batch_size.choices: {bad} not divisible by resources.workers={workers}"] if bad else []
    if workers > 1 and batch.low % workers:
        suggested = workers * max(1, round(batch.low / workers))
        return [
            f"sweep.shared.batch_size.low: {batch.low:g} is not a multiple of resources.workers={workers}; batch "
            f"sizes are drawn from low in steps of {workers}, so low must be one (e.g. {suggested})"
        ]
    return []


def _sampled_verdict(spec: Spec) -> list[str]:
    """A sample of the corpus may drive the search's decisions, never the verdict."""
    selection = spec.selection_set().label if spec.eval else None
    return [
        f"eval[{i}].sample: {ref.label!r} judges the winner, on its whole corpus; sample only the selection set "
        f"({selection!r})"
        for i, ref in enumerate(spec.eval)
        if given(ref.sample) and ref.label != selection
    ]


def _searched_mixing(spec: Spec) -> list[str]:
    if "mixing" in spec.sweep.shared and not spec.mixture:
        return ["sweep.shared.mixing: orders the batches of several training sets, but `train` is one set; drop it"]
    return []


def _searched_adapter(spec: Spec) -> list[str]:
    from .spec import ADAPTER_SEARCH

    searched = [name for name in spec.sweep.shared if name in ADAPTER_SEARCH]
    if not searched or given(spec.adapter):
        return []
    return [
        f"sweep.shared.{searched[0]}: searches a LoRA adapter, but the spec trains every weight; "
        "add `adapter: {method: lora}` (its r, alpha and dropout are the values outside the search)"
    ]


SWEEP_RELATIONS = [
    _sweep_budget,
    _selection,
    _metric,
    _sweep_losses,
    _searched_batch,
    _searched_adapter,
    _searched_mixing,
    _sampled_verdict,
]
