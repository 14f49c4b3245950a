"""Experiment specs (version 1): the schema, safe YAML loading, and validation before anything runs.

A spec is data: model, data, loss, budget, seed, resources, tracking, and (for sweeps) the search.
`load_spec` parses it with `yaml.safe_load` (no tags, no code) and `validate` collects every error at
once, each naming its field path, the bad value, what is allowed and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lossweep.losses import LOSSES, LossConfig, config_errors

from .schema import Problems, parse, to_data

SPEC_VERSION = 1
NEGATIVES_SUFFIX = " + mined negatives"  # the name of a loss that opted in to mined negatives


@dataclass(frozen=True)
class DataRef:
    """A dataset: `path` (relative to data_dir, or absolute) or `hub` (a Hugging Face dataset id)."""

    path: str | None = None
    hub: str | None = None
    subset: str | None = None
    split: str = "train"
    view: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class Holdout:
    """A validation set carved from the training data: `size` training queries (retrieval) or rows
    (sts, triplet), drawn with `seed`; their training pairs are removed from training."""

    size: int
    seed: int = 0


@dataclass(frozen=True)
class EvalRef:
    """An evaluation set: retrieval (a BEIR folder), sts (scored pairs) or triplet (anchor, pos, neg).

    It comes from `path` or `hub`, or is carved `from_train` when the data has no validation split.
    """

    type: Literal["retrieval", "sts", "triplet"]
    path: str | None = None
    hub: str | None = None
    from_train: Holdout | None = None
    subset: str | None = None
    split: str = "test"
    view: str | None = None
    limit: int | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """The metric namespace: `eval/<label>/...`."""
        return self.name or Path(self.path or self.hub or "validation").name


@dataclass(frozen=True)
class LossSpec:
    """A loss by name with its parameters. `negatives`: train on mined hard negatives (true), on the
    pairs (false), or automatically (null: mined negatives only for a loss that cannot take pairs)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    base: LossSpec | None = None
    negatives: bool | None = None

    def config(self) -> LossConfig:
        return LossConfig(self.name, dict(self.params), None if self.base is None else self.base.config())

    @property
    def leaf(self) -> str:
        """The loss that takes the data (a modifier's base)."""
        return self.base.leaf if self.base is not None else self.name


@dataclass(frozen=True)
class NegativesSpec:
    """Hard negatives mined for (anchor, positive) training pairs with sentence-transformers'
    `util.mine_hard_negatives` (its knobs, by the same names); `model` defaults to the spec's."""

    model: str | None = None
    num_negatives: int = 1
    range_min: int = 0
    range_max: int | None = None
    max_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    sampling_strategy: Literal["top", "random"] = "top"
    shape: Literal["auto", "n-tuple", "triplets", "labeled-pairs"] = "auto"
    seed: int = 0
    batch_size: int = 64


@dataclass(frozen=True)
class TrainingSpec:
    batch_size: int = 32
    steps: int | None = None
    epochs: float | None = None
    learning_rate: float = 2e-5
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    optimizer: Literal["adamw", "sgd"] = "adamw"
    seed: int = 42
    log_every_steps: int = 10


@dataclass(frozen=True)
class EvaluationSpec:
    every_steps: int = 0
    at_start: bool = True
    batch_size: int = 32
    dims: tuple[int, ...] | None = None
    distributed: bool = True
    sets: tuple[str, ...] | None = None  # the eval sets this run scores, by name; null: all


@dataclass(frozen=True)
class ResourcesSpec:
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 1
    memory_per_worker_gb: float | None = None


@dataclass(frozen=True)
class MLflowSpec:
    tracking_uri: str | None = None
    experiment: str = "lossweep"


@dataclass(frozen=True)
class ParamRange:
    """A search range: `low`/`high` (with `log`) for numbers, or `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class SweepSpec:
    mode: Literal["search", "compare"] = "search"
    select_on: str | None = None  # the eval set that drives the search; default: the first
    losses: Literal["all"] | tuple[str | LossSpec, ...] = "all"
    params: dict[str, dict[str, ParamRange]] = field(default_factory=dict)
    shared: dict[str, ParamRange] = field(default_factory=dict)
    trials: int = 8
    seeds: int = 3
    max_concurrent: int = 1
    metric: str | None = None
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    scheduler: Literal["asha", "none"] = "asha"
    grace_steps: int | None = None
    reduction_factor: int = 2
    seed: int = 0
    negatives: dict[str, ParamRange] = field(default_factory=dict)  # mining knobs searched (choices)


@dataclass(frozen=True)
class Spec:
    name: str
    train: DataRef
    loss: LossSpec
    version: int = SPEC_VERSION
    description: str | None = None
    data_dir: str | None = None
    model: str = "minilm"
    max_seq_length: int | None = None
    teacher: str | None = None
    negatives: NegativesSpec | None = None
    eval: tuple[EvalRef, ...] = ()
    matryoshka_dims: tuple[int, ...] | None = None
    training: TrainingSpec = field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    mlflow: MLflowSpec = field(default_factory=MLflowSpec)
    output_dir: str = "lossweep-runs"
    sweep: SweepSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_data(self)

    def replace(self, **changes: Any) -> Spec:
        return dataclasses.replace(self, **changes)

    def loss_config(self) -> LossConfig:
        """The loss to build: the spec's loss, wrapped in MatryoshkaLoss when `matryoshka_dims` is set."""
        config = self.loss.config()
        if self.matryoshka_dims:
            return LossConfig("MatryoshkaLoss", {"matryoshka_dims": list(self.matryoshka_dims)}, config)
        return config

    def selection_set(self) -> EvalRef:
        """The eval set that drives search and selection: `sweep.select_on`, else the first."""
        wanted = self.sweep.select_on if self.sweep else None
        return next((ref for ref in self.eval if ref.label == wanted), self.eval[0])

    def verdict_sets(self) -> tuple[EvalRef, ...]:
        """The eval sets that give the verdict: every set but the selection set, scored only for the
        final configurations, after every search decision."""
        selection = self.selection_set().label
        return tuple(ref for ref in self.eval if ref.label != selection)

    def mining_variants(self) -> list[Spec]:
        """The spec once per distinct mining config a sweep may pick (its searched knobs' choices)."""
        searched = self.sweep.negatives if self.sweep and self.negatives else {}
        if not searched:
            return [self]
        names = list(searched)
        return [
            self.replace(negatives=dataclasses.replace(self.negatives, **dict(zip(names, values, strict=True))))
            for values in itertools.product(*(searched[n].choices or () for n in names))
        ]

    def loss_label(self) -> str:
        """The loss as leaderboards and MLflow name it; a loss that opted in to mined negatives says so."""
        return self.loss_config().label() + (NEGATIVES_SUFFIX if self.loss.negatives else "")

    def holdout(self) -> EvalRef | None:
        """The eval set carved from the training data, if any."""
        return next((ref for ref in self.eval if ref.from_train is not None), None)

    def hash(self) -> str:
        """A stable hash of the resolved spec (MLflow tag `lossweep.spec_hash`)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


class SpecError(ValueError):
    """An invalid spec; `problems` holds one 'field.path: message' per error."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        count = f"{len(problems)} error{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source}: {count}\n" + "\n".join(f"  {p}" for p in problems))


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file safely: plain data only, errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), [f"file not found (looked in {path.resolve().parent})"])
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(str(path), [f"{where}not valid YAML ({getattr(error, 'problem', error)})"]) from None


def parse_spec(data: Any, source: str = "spec") -> Spec:
    """Structure only: fields, types, unknown keys. Raises SpecError listing every problem."""
    problems = Problems()
    if not isinstance(data, dict):
        raise SpecError(
            source, [f"a spec is a YAML mapping of fields (name, train, loss, ...), got {type(data).__name__}"]
        )
    spec = parse(Spec, data, "", problems)
    if problems or spec is None:
        raise SpecError(source, problems.items or ["could not be read"])
    return spec


def load_spec(path: Path | str) -> Spec:
    """Read and structurally parse a spec file (use `validate` for the full check)."""
    return parse_spec(read_yaml(path), str(path))


def check_values(spec: Spec) -> list[str]:
    """Every problem visible without touching data or models: numbers, names, the loss, the search."""
    problems = Problems()
    if spec.version != SPEC_VERSION:
        problems.add("version", f"{spec.version} is not supported; this lossweep reads version {SPEC_VERSION}")
    t, r, e = spec.training, spec.resources, spec.evaluation
    if r.workers < 1:
        problems.add("resources.workers", f"{r.workers} must be at least 1")
    if r.cpus_per_worker <= 0:
        problems.add("resources.cpus_per_worker", f"{r.cpus_per_worker} must be > 0")
    if r.gpus_per_worker < 0:
        problems.add("resources.gpus_per_worker", f"{r.gpus_per_worker} must be >= 0")
    if r.memory_per_worker_gb is not None and r.memory_per_worker_gb <= 0:
        problems.add("resources.memory_per_worker_gb", f"{r.memory_per_worker_gb} must be > 0, or null for no budget")
    if r.max_failures < -1:
        problems.add("resources.max_failures", f"{r.max_failures}: use -1 (retry forever), 0 or a positive count")
    if t.batch_size < 1:
        problems.add("training.batch_size", f"{t.batch_size} must be a positive global batch size")
    elif r.workers >= 1 and t.batch_size % r.workers:
        near = max(r.workers, round(t.batch_size / r.workers) * r.workers)
        problems.add(
            "training.batch_size",
            f"{t.batch_size} is not divisible by resources.workers={r.workers}: each worker takes an equal share "
            f"of the global batch; use a multiple of {r.workers}, e.g. {near}",
        )
    if (t.steps is None) == (t.epochs is None):
        problems.add("training", "set exactly one of steps or epochs")
    if t.steps is not None and t.steps < 1:
        problems.add("training.steps", f"{t.steps} must be a positive number of optimizer steps")
    if t.epochs is not None and t.epochs <= 0:
        problems.add("training.epochs", f"{t.epochs} must be > 0")
    if t.learning_rate <= 0:
        problems.add("training.learning_rate", f"{t.learning_rate} must be > 0")
    if not 0 <= t.warmup_ratio < 1:
        problems.add("training.warmup_ratio", f"{t.warmup_ratio} must be in [0, 1)")
    if t.weight_decay < 0:
        problems.add("training.weight_decay", f"{t.weight_decay} must be >= 0")
    if t.max_grad_norm is not None and t.max_grad_norm <= 0:
        problems.add("training.max_grad_norm", f"{t.max_grad_norm} must be > 0, or null for no clipping")
    if t.precision == "fp16" and r.gpus_per_worker <= 0:
        problems.add("training.precision", "fp16 needs GPUs (resources.gpus_per_worker > 0); on CPU use bf16 or fp32")
    if t.log_every_steps < 1:
        problems.add("training.log_every_steps", f"{t.log_every_steps} must be >= 1")
    if e.every_steps < 0:
        problems.add("evaluation.every_steps", f"{e.every_steps} must be >= 0 (0: evaluate at the end only)")
    if e.batch_size < 1:
        problems.add("evaluation.batch_size", f"{e.batch_size} must be >= 1")
    for name, dims in (("matryoshka_dims", spec.matryoshka_dims), ("evaluation.dims", e.dims)):
        if dims is not None and (not dims or any(d < 1 for d in dims)):
            problems.add(name, f"{list(dims)} must be a non-empty list of positive sizes")
    if spec.matryoshka_dims and spec.loss.name in ("MatryoshkaLoss", "Matryoshka2dLoss"):
        problems.add("matryoshka_dims", f"the loss is already {spec.loss.name}; set its dims in loss.params instead")
    for i, ref in enumerate(spec.eval):
        _check_ref(ref, f"eval[{i}]", problems)
    _check_ref(spec.train, "train", problems)
    labels = [ref.label for ref in spec.eval]
    for label in {x for x in labels if labels.count(x) > 1}:
        problems.add("eval", f"two evaluation sets are named {label!r}; give them distinct `name`s")
    carved = [i for i, ref in enumerate(spec.eval) if ref.from_train is not None]
    if len(carved) > 1:
        problems.add(f"eval[{carved[1]}].from_train", "only one evaluation set can be carved from the training data")
    if e.sets is not None:
        for name in set(e.sets) - set(labels):
            problems.add("evaluation.sets", f"{name!r} is not an eval set; eval sets are {labels}")
    for problem in config_errors(spec.loss.config()):
        problems.items.append(problem)
    if spec.loss.negatives and spec.negatives is None:
        problems.add("loss.negatives", "true needs mined negatives: add a negatives section (e.g. `negatives: {}`)")
    if spec.sweep is not None:
        _check_sweep(spec.sweep, spec, problems)
    return problems.items


def _check_ref(ref: DataRef | EvalRef, path: str, problems: Problems) -> None:
    carved = getattr(ref, "from_train", None)
    if sum(x is not None for x in (ref.path, ref.hub, carved)) != 1:
        options = "path (a local folder or file) or hub (a Hugging Face dataset id)"
        if isinstance(ref, EvalRef):
            options = "path, hub, or from_train (a validation set carved from the training data)"
        problems.add(path, f"set exactly one of {options}")
    if carved is not None and carved.size < 1:
        problems.add(f"{path}.from_train.size", f"{carved.size} must be a positive number of queries (or rows)")
    if ref.limit is not None and ref.limit < 1:
        problems.add(f"{path}.limit", f"{ref.limit} must be a positive row count, or null for all rows")


def _check_range(rng: ParamRange, path: str, problems: Problems) -> None:
    if rng.choices is not None:
        if rng.low is not None or rng.high is not None:
            problems.add(path, "give either choices or low/high, not both")
        elif not rng.choices:
            problems.add(f"{path}.choices", "must list at least one value")
        return
    if rng.low is None or rng.high is None:
        problems.add(path, "a range needs low and high (or choices)")
    elif rng.low > rng.high:
        problems.add(path, f"low={rng.low} > high={rng.high}; swap them")
    elif rng.log and rng.low <= 0:
        problems.add(f"{path}.low", f"{rng.low}: a log range needs low > 0")


SHARED_SEARCH = ("learning_rate", "batch_size", "matryoshka_dims", "warmup_ratio", "weight_decay")
MINING_SEARCH = (
    "num_negatives",
    "range_min",
    "range_max",
    "max_score",
    "absolute_margin",
    "relative_margin",
    "sampling_strategy",
)


def _check_sweep(sweep: SweepSpec, spec: Spec, problems: Problems) -> None:
    if not spec.eval:
        problems.add("eval", "a sweep needs at least one evaluation set to rank trials")
    if spec.training.steps is None:
        problems.add("training.epochs", "sweeps compare trials on a fixed budget; set training.steps instead")
    if sweep.scheduler == "asha" and spec.evaluation.every_steps == 0:
        problems.add("evaluation.every_steps", "ASHA stops trials at intermediate evaluations; set every_steps > 0")
    labels = [ref.label for ref in spec.eval]
    if sweep.select_on is not None and sweep.select_on not in labels:
        problems.add("sweep.select_on", f"{sweep.select_on!r} is not an eval set; eval sets are {labels}")
    elif spec.eval:
        selection = spec.selection_set().label
        if sweep.metric and not sweep.metric.startswith(f"eval/{selection}/"):
            problems.add(
                "sweep.metric",
                f"{sweep.metric!r} is not a metric of the selection set {selection!r}; "
                f"names start eval/{selection}/ (the set in sweep.select_on drives the search)",
            )
        if sweep.mode == "compare" and not spec.verdict_sets():
            problems.add(
                "sweep.select_on",
                f"compare mode would judge the losses on {selection!r}, the set that chose their "
                "configurations: that inflates every winner, most of all the losses with more "
                "hyperparameters. Add a validation set and select on it, e.g. "
                f"`- {{type: retrieval, from_train: {{size: 30}}, name: {selection}-val}}` in eval and "
                f"`select_on: {selection}-val` in sweep, keeping {selection!r} for the verdict",
            )
    if sweep.mode == "compare" and sweep.seeds < 3:
        problems.add(
            "sweep.seeds",
            f"{sweep.seeds}: compare mode needs at least 3 seeds per loss to measure training noise",
        )
    names = []
    if sweep.losses != "all":
        for i, item in enumerate(sweep.losses):
            config = LossConfig(item) if isinstance(item, str) else item.config()
            names.append(config.name)
            problems.items.extend(config_errors(config, f"sweep.losses[{i}]"))
            if isinstance(item, LossSpec) and item.negatives and spec.negatives is None:
                problems.add(
                    f"sweep.losses[{i}].negatives", "true needs mined negatives: add a negatives section to the spec"
                )
    for knob, rng in sweep.negatives.items():
        path = f"sweep.negatives.{knob}"
        if spec.negatives is None:
            problems.add(path, "searches a mining knob, but the spec mines nothing: add a negatives section")
        elif knob not in MINING_SEARCH:
            problems.add(path, f"cannot be searched; mining knobs are {list(MINING_SEARCH)}")
        elif rng.choices is None:
            problems.add(
                path,
                "mining knobs are searched over choices (each distinct mining config is mined once, before the "
                "trials), e.g. {choices: [0.0, 0.05]}",
            )
    for loss, ranges in sweep.params.items():
        if loss not in LOSSES:
            problems.add(f"sweep.params.{loss}", "not a loss of the catalogue (run `lossweep losses`)")
            continue
        if names and loss not in names:
            problems.add(f"sweep.params.{loss}", f"{loss} is not among sweep.losses {names}")
        known = {p.name for p in LOSSES[loss].params}
        for param, rng in ranges.items():
            if param not in known:
                problems.add(
                    f"sweep.params.{loss}.{param}", f"{loss} has no parameter {param!r}; valid: {sorted(known)}"
                )
            _check_range(rng, f"sweep.params.{loss}.{param}", problems)
    for param, rng in sweep.shared.items():
        if param not in SHARED_SEARCH:
            problems.add(f"sweep.shared.{param}", f"cannot be searched; shared parameters are {list(SHARED_SEARCH)}")
        _check_range(rng, f"sweep.shared.{param}", problems)
    rng = sweep.shared.get("batch_size")
    if rng is not None and rng.choices:
        bad = [b for b in rng.choices if not isinstance(b, int) or b % spec.resources.workers]
        if bad:
            problems.add(
                "sweep.shared.batch_size.choices", f"{bad} not divisible by resources.workers={spec.resources.workers}"
            )
    for key, value in (("trials", sweep.trials), ("seeds", sweep.seeds), ("max_concurrent", sweep.max_concurrent)):
        if value < 1:
            problems.add(f"sweep.{key}", f"{value} must be >= 1")
    if sweep.reduction_factor < 2:
        problems.add("sweep.reduction_factor", f"{sweep.reduction_factor} must be >= 2")
    if sweep.grace_steps is not None and sweep.grace_steps < 1:
        problems.add("sweep.grace_steps", f"{sweep.grace_steps} must be >= 1")
