"""The search space of a sweep: which losses, which of their hyperparameters, which shared settings.

Ranges default to the registry's and may be narrowed in the spec. The space is conditional: a trial
only samples the parameters of the loss it picked, written as plain `if`s in an Optuna define-by-run
function. Optuna keys are `loss`, `<Loss>/<param>` and `shared/<name>`; Tune turns the `/` into
nesting, so a trial's config reads `{"loss": ..., "<Loss>": {...}, "shared": {...}}`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import datasets
import optuna

from lossweep.losses import LOSSES, LossConfig, Sampler, fit_report, get_entry
from lossweep.losses.fit import fit
from lossweep.losses.params import Param

from .negatives import mined_shape
from .spec import ADAPTER_SEARCH, MODEL_SEPARATOR, NEGATIVES_SUFFIX, LossSpec, ModelChoice, ParamRange, PromptSpec, Spec


@dataclass(frozen=True)
class Dim:
    """One searched value: a float/int range or a categorical over JSON-able choices."""

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    step: int = 1  # int ranges: values low, low + step, ... (batch sizes in multiples of the workers)

    def suggest(self, trial: optuna.Trial, key: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(key, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), step=self.step, log=self.log)
        encoded = [_encode(c) for c in self.choices]
        return _decode(trial.suggest_categorical(key, encoded))

    def holds(self, value: Any) -> bool:
        """Whether `value` is one this dimension can draw."""
        if self.kind == "categorical":
            return _encode(value) in [_encode(c) for c in self.choices]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not self.low <= value <= self.high:
            return False
        return self.kind == "float" or (float(value).is_integer() and (value - self.low) % self.step == 0)

    def grid(self) -> list[Any]:
        if self.kind != "categorical":
            raise ValueError(f"{self.name}: a grid sweep needs explicit choices for every searched parameter")
        return list(self.choices)


def _encode(value: Any) -> Any:
    """Optuna categoricals take None, bool, int, float, str: lists, tuples and mappings travel as JSON."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return json.dumps(dict(value), sort_keys=True) if isinstance(value, Mapping) else value


def _decode(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value.startswith(("[", "{")) else value


def _dim_from_param(param: Param) -> Dim:
    if param.kind in ("float", "int") and param.search:
        low, high = param.search
        return Dim(param.name, param.kind, low, high, param.log)
    return Dim(param.name, "categorical", choices=tuple(param.search))


def _dim_from_range(name: str, rng: ParamRange, kind: str) -> Dim:
    if rng.choices is not None:
        return Dim(name, "categorical", choices=tuple(rng.choices))
    return Dim(name, "int" if kind == "int" else "float", rng.low, rng.high, rng.log)


@dataclass(frozen=True)
class Candidate:
    """A loss a sweep may pick: its fixed parameters, the dimensions searched for it, and whether it
    trains on mined negatives (`negatives` as the spec asked: true, false or null for automatic;
    `mined` as resolved on the data)."""

    config: LossConfig
    dims: tuple[Dim, ...] = ()
    negatives: bool | None = None
    mined: bool = False
    model: ModelChoice | None = None  # the base model it trains (`sweep.models`); None: the spec's

    @property
    def name(self) -> str:
        """The candidate's name in the sweep: the loss, marked when it opted in to mined negatives
        (so MNRL on pairs and MNRL on mined negatives are two candidates), and its base model's label
        when the sweep compares models (`MultipleNegativesRankingLoss @ minilm`)."""
        return self.config.name + (NEGATIVES_SUFFIX if self.negatives else "") + self.model_suffix

    @property
    def model_suffix(self) -> str:
        """` @ <model label>` in a sweep over several base models, else nothing."""
        return "" if self.model is None else f"{MODEL_SEPARATOR}{self.model.label}"


SHARED_KINDS = {
    "learning_rate": "float",
    "batch_size": "int",
    "warmup_ratio": "float",
    "weight_decay": "float",
    "lora_r": "int",
    "lora_alpha": "float",
    "lora_dropout": "float",
}


@dataclass(frozen=True)
class Space:
    candidates: tuple[Candidate, ...]
    shared: tuple[Dim, ...] = field(default_factory=tuple)
    negatives: tuple[Dim, ...] = field(default_factory=tuple)  # mining knobs, for candidates that mine

    def describe(self) -> dict[str, Any]:
        """The space as data, for the parent run's `search_space.json`."""

        def dim(d: Dim) -> dict:
            return {"kind": d.kind, "low": d.low, "high": d.high, "log": d.log, "choices": list(d.choices)}

        return {
            "losses": {
                c.name: {"fixed": dict(c.config.params), "searched": {d.name: dim(d) for d in c.dims}}
                | ({"model": c.model.to_dict()} if c.model is not None else {})
                for c in self.candidates
            },
            "shared": {d.name: dim(d) for d in self.shared},
            "negatives": {d.name: dim(d) for d in self.negatives},
        }

    def only(self, name: str) -> Space:
        return Space(tuple(c for c in self.candidates if c.name == name), self.shared, self.negatives)

    def candidate(self, name: str) -> Candidate:
        """The candidate a trial config names (`TrialConfig.loss`)."""
        return next(c for c in self.candidates if c.name == name)


def candidates_for(spec: Spec, train: datasets.Dataset | None) -> tuple[list[Candidate], list[str]]:
    """The sweep's losses with their searched dimensions, and notes on losses left out of 'all'."""
    sweep = spec.sweep
    notes: list[str] = []
    if sweep.losses == "all":
        if train is not None:
            fitting = [f.loss for f in fit_report(train) if f.ok]
            if spec.negatives is not None:  # and those that fit once negatives are mined
                fitting += [name for name in LOSSES if name not in fitting and _mines(spec, name, train.features)]
        else:
            fitting = [name for name, entry in LOSSES.items() if not entry.modifier]
        configs = []
        for name in fitting:
            entry = get_entry(name)
            if entry.same_objective_as in fitting:
                notes.append(
                    f"{name} left out: same objective as {entry.same_objective_as} (GradCache changes memory only)"
                )
            elif entry.required_params():
                required = ", ".join(f"params.{p}" for p in entry.required_params())
                notes.append(f"{name} left out: it needs {required}; list it in sweep.losses with them")
            else:
                configs.append(LossConfig(name))
    else:
        configs = [LossConfig(item) if isinstance(item, str) else item.config() for item in sweep.losses]
    # Whether each loss asked for mined negatives (null: decided by the data).
    listed = () if sweep.losses == "all" else sweep.losses
    asked = [getattr(item, "negatives", None) for item in listed] or [None] * len(configs)
    candidates = []
    for config, negatives in zip(configs, asked, strict=True):
        entry = get_entry(config.name)
        overrides = sweep.params.get(config.name, {})
        dims = []
        for param in entry.params:
            if param.name in config.params:
                continue  # fixed by the spec
            if param.name in overrides:
                dims.append(_dim_from_range(param.name, overrides[param.name], param.kind))
            elif param.tune and param.search:
                dims.append(_dim_from_param(param))
        leaf = config.leaf.name
        mined = spec.negatives is not None and (
            bool(negatives) or (negatives is None and train is not None and _mines(spec, leaf, train.features))
        )
        candidates.append(Candidate(config, tuple(dims), negatives, mined))
    models = sweep.model_choices()
    if models:  # every (model, loss) pair: each model with every loss, in the order listed
        candidates = [dataclasses.replace(c, model=m) for m in models for c in candidates]
    return candidates, notes


def _mines(spec: Spec, loss: str, pairs: datasets.Features) -> bool:
    """A loss that cannot take the pairs as they are, but can take them with mined negatives."""
    return not fit(loss, pairs).ok and mined_shape(loss, spec.negatives.shape) is not None


def build_space(spec: Spec, train: datasets.Dataset | None) -> tuple[Space, list[str]]:
    candidates, notes = candidates_for(spec, train)
    mining = tuple(
        Dim(knob, "categorical", choices=tuple(rng.choices or ())) for knob, rng in spec.sweep.negatives.items()
    )
    if spec.negatives is not None and not any(c.mined for c in candidates):
        notes.append("negatives: no loss of this sweep trains on mined negatives, so nothing is mined")
    shared = []
    for name, rng in spec.sweep.shared.items():
        kind = SHARED_KINDS.get(name, "categorical")
        dim = (
            _dim_from_range(name, rng, kind) if kind != "categorical" else Dim(name, "categorical", choices=rng.choices)
        )
        if name == "batch_size" and dim.kind == "int":  # every worker takes an equal share of each global batch
            pairs = any(get_entry(c.config.leaf.name).sampler == Sampler.GROUP_BY_LABEL for c in candidates)
            dim = dataclasses.replace(dim, step=math.lcm(spec.resources.workers, 2 if pairs else 1))
        shared.append(dim)
    return Space(tuple(candidates), tuple(shared), mining if any(c.mined for c in candidates) else ()), notes


def space_problems(space: Space) -> list[str]:
    """Combinations a loss refuses that its numeric ranges could sample (categorical ones never are:
    `valid_choices` fixes them). Checked at the ranges' ends, the other parameters as given."""
    problems = []
    for candidate in space.candidates:
        entry = get_entry(candidate.config.name)
        numeric = [d for d in candidate.dims if d.kind in ("float", "int")]
        if entry.constraints is None or not numeric:
            continue
        base = entry.defaults() | dict(candidate.config.params)
        for corner in itertools.product(*((d.low, d.high) for d in numeric)):
            values = dict(zip((d.name for d in numeric), corner, strict=True))
            refused = entry.constraints(base | values)
            if refused:
                sample = ", ".join(f"{k}={v:g}" for k, v in values.items())
                problems.append(
                    f"sweep.params.{candidate.config.name}: the search can sample {sample}, which "
                    f"{candidate.config.name} refuses ({refused[0]}); narrow the ranges"
                )
                break
    return problems


class DefineByRun:
    """The Optuna define-by-run space: pick a loss, then only that loss's parameters, then shared ones.

    A class (not a closure) so that Tune can pickle it with the searcher's state for `--resume`.
    """

    def __init__(self, space: Space) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any] | None:
        names = [c.name for c in self.space.candidates]
        loss = trial.suggest_categorical("loss", names) if len(names) > 1 else names[0]
        candidate = self.space.candidates[names.index(loss)]
        constants: dict[str, Any] = {} if len(names) > 1 else {"loss": loss}
        values = dict(candidate.config.params)
        for dim in candidate.dims:
            allowed = valid_choices(candidate.config.name, dim, values)
            if allowed is None:
                values[dim.name] = dim.suggest(trial, f"{loss}/{dim.name}")
            else:  # an earlier pick leaves one valid value (e.g. GTE directions need partition_mode joint)
                values[dim.name] = constants[f"{loss}/{dim.name}"] = _encode(allowed)
        for dim in self.space.shared:
            dim.suggest(trial, f"shared/{dim.name}")
        if candidate.mined:  # conditional: only a loss that trains on mined negatives picks how they are mined
            for dim in self.space.negatives:
                dim.suggest(trial, f"negatives/{dim.name}")
        return constants or None


def starting_point(space: Space, spec: Spec) -> dict[str, Any]:
    """Where an expert starts, as Optuna params: the study's loss (the spec's own where the study has
    it) at its registry defaults, the shared settings at the spec's values. A default the searched
    range leaves out is drawn by the sampler instead."""
    names = [c.name for c in space.candidates]
    candidate = next((c for c in space.candidates if c.config.name == spec.loss.name), space.candidates[0])
    point: dict[str, Any] = {"loss": candidate.name} if len(names) > 1 else {}
    defaults = {param.name: param.default for param in get_entry(candidate.config.name).params}
    values = dict(candidate.config.params)
    for dim in candidate.dims:
        default = defaults.get(dim.name)
        if dim.name in defaults and dim.holds(default) and valid_choices(candidate.config.name, dim, values) is None:
            point[f"{candidate.name}/{dim.name}"] = _encode(default)
            values[dim.name] = default
    training = spec.training.to_dict()
    prompts = spec.prompts if isinstance(spec.prompts, str) else spec.prompts.to_dict()
    own = training | {"matryoshka_dims": list(spec.matryoshka_dims or ()) or None, "prompts": prompts}
    if spec.adapter is not None:
        own |= {name: getattr(spec.adapter, field) for name, field in ADAPTER_SEARCH.items()}
    for dim in space.shared:
        if dim.holds(own.get(dim.name)):
            point[f"shared/{dim.name}"] = _encode(own[dim.name])
    return point


def valid_choices(loss: str, dim: Dim, values: dict[str, Any]) -> Any | None:
    """None when every choice of `dim` is valid given `values`; else the one valid choice.

    Uses the registry's own cross-parameter constraints, so a trial never samples a combination
    the loss would refuse. Optuna needs a fixed set of choices per name, so a restricted dimension
    is fixed rather than sampled from a subset.
    """
    entry = get_entry(loss)
    if dim.kind != "categorical" or entry.constraints is None:
        return None
    defaults = entry.defaults()
    valid = [c for c in dim.choices if not entry.constraints(defaults | values | {dim.name: _as_param(c)})]
    if len(valid) == len(dim.choices):
        return None
    if not valid:
        raise ValueError(f"{loss}: no value of {dim.name} is valid with {values}")
    return valid[0]


def _as_param(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def decode_config(config: dict[str, Any]) -> dict[str, Any]:
    """Undo the JSON encoding of list-valued choices in a trial config (nested as Tune gives it)."""
    return {k: decode_config(v) if isinstance(v, dict) else _decode(v) for k, v in config.items()}


SHARED, NEGATIVES = "shared", "negatives"  # the trial config's groups beside the loss's own


@dataclass(frozen=True)
class TrialConfig:
    """A trial's sampled configuration, as Tune nests it: `{"loss": <name>, <name>: {its parameters},
    "shared": {...}, "negatives": {mining knobs}}` (Optuna keys `<Loss>/<param>`, `shared/<name>`,
    `negatives/<knob>`). This is the one reader of that layout."""

    loss: str
    params: dict[str, Any]
    shared: dict[str, Any]
    negatives: dict[str, Any]

    @classmethod
    def of(cls, config: dict[str, Any]) -> TrialConfig:
        config = decode_config(config)
        loss = config.get("loss", "?")
        return cls(
            loss, dict(config.get(loss) or {}), dict(config.get(SHARED) or {}), dict(config.get(NEGATIVES) or {})
        )

    @classmethod
    def of_run(cls, run) -> TrialConfig:
        """The configuration a trial's MLflow run records (tag `lossweep.trial_config`)."""
        from .protocol import Tag

        return cls.of(json.loads(run.data.tags.get(Tag.TRIAL_CONFIG, "{}")))

    def flat(self, qualified: bool = False) -> dict[str, Any]:
        """Every sampled value: the loss's parameters, then the shared settings and mining knobs, by name
        (`qualified`: those two prefixed `shared.` and `negatives.`, as the search space names them)."""
        if not qualified:
            return self.params | self.shared | self.negatives
        shared = {f"{SHARED}.{k}": v for k, v in self.shared.items()}
        return self.params | shared | {f"{NEGATIVES}.{k}": v for k, v in self.negatives.items()}


def grid_configs(space: Space) -> list[dict[str, Any]]:
    """Every combination of choices, loss by loss (a grid needs choices for every dimension)."""
    configs = []
    for candidate in space.candidates:
        mining = list(space.negatives) if candidate.mined else []
        dims = list(candidate.dims) + list(space.shared) + mining
        entry = get_entry(candidate.config.name)
        for values in itertools.product(*(d.grid() for d in dims)):
            config: dict[str, Any] = {"loss": candidate.name, candidate.name: {}, SHARED: {}}
            if mining:
                config[NEGATIVES] = {}
            for dim, value in zip(dims, values, strict=True):
                group = SHARED if dim in space.shared else NEGATIVES if dim in mining else candidate.name
                config[group][dim.name] = value
            params = (
                entry.defaults()
                | dict(candidate.config.params)
                | {k: _as_param(v) for k, v in config[candidate.name].items()}
            )
            if entry.constraints is None or not entry.constraints(params):
                configs.append(config)
    return configs


def trial_spec(spec: Spec, space: Space, config: dict[str, Any], seed: int | None = None) -> Spec:
    """The spec one trial trains: the chosen loss with its sampled parameters and shared settings."""
    config = TrialConfig.of(config)
    candidate = space.candidate(config.loss)
    if candidate.model is not None:
        spec = spec.with_model(candidate.model)
    params = dict(candidate.config.params) | config.params
    base = candidate.config.base
    base_spec = None if base is None else LossSpec(name=base.name, params=dict(base.params))
    loss = LossSpec(name=candidate.config.name, params=params, base=base_spec, negatives=candidate.negatives)
    if config.negatives:
        spec = spec.replace(negatives=spec.negatives.replace(**config.negatives))
    shared = dict(config.shared)
    dims = shared.pop("matryoshka_dims", spec.matryoshka_dims)
    training = spec.training
    training_fields = ("learning_rate", "batch_size", "warmup_ratio", "weight_decay", "mixing")
    changes = {k: shared[k] for k in training_fields if k in shared}
    if seed is not None:
        changes["seed"] = seed
    training = training.replace(**changes)
    prompts = shared.get("prompts", spec.prompts)
    prompts = PromptSpec.model_validate(prompts) if isinstance(prompts, Mapping) else prompts
    adapter = spec.adapter
    if adapter is not None:
        adapter = adapter.replace(**{field: shared[name] for name, field in ADAPTER_SEARCH.items() if name in shared})
    return spec.replace(
        loss=loss,
        training=training,
        matryoshka_dims=tuple(dims) if dims else None,
        prompts=prompts,
        adapter=adapter,
        sweep=None,
    )
