"""Experiment specs (version 1): pydantic models, safe YAML loading, every error found in one pass.

A spec is data: model, data, loss, budget, seed, resources, tracking, and (for sweeps) the search.
`load_spec` parses it with `yaml.safe_load` (no tags, no code); the models forbid unknown keys and
check each section's values; checks that relate sections (the batch size and the workers, the sweep
metric and the eval sets) run even when another section is broken, so one pass reports every error,
each naming its field path, the bad value, what is allowed and the fix. `lossweep schema` prints the
JSON Schema these models define (a copy ships as `experiments/spec.schema.json`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic import Tag as UnionTag  # not lossweep's MLflow Tag: a member of a tagged union
from pydantic_core import core_schema

from lossweep.losses import LOSSES, LossConfig, Param, config_errors, with_matryoshka

from .lenient import SectionProblems, annotation, describe, each, given, lenient, members
from .relations import relation_problems

SPEC_VERSION = 1
NEGATIVES_SUFFIX = " + mined negatives"  # the name of a loss that opted in to mined negatives
MODEL_SEPARATOR = " @ "  # a candidate of a sweep over several models: `<loss> @ <model label>`
MLFLOW_NAME = re.compile(r"^[/\w.\- :]*$")  # what MLflow accepts in metric and param names


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_no_bool)]  # lax: YAML 1.1 reads 2e-5 as a string
Bool = Annotated[bool, Strict()]


class _Bound:
    """A field check: `message` (with {value}) when `ok(value)` is false (None always passes); `schema`
    adds the same bound to the JSON Schema (`minimum`, `exclusiveMinimum`...), so editors check it too."""

    def __init__(self, ok: Callable[[Any], bool], message: str, **schema: Any) -> None:
        self.ok, self.message, self.schema = ok, message, schema

    def check(self, value: Any) -> Any:
        if value is not None and not self.ok(value):
            raise ValueError(self.message.format(value=value))
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        return handler(schema) | self.schema


def _bound(ok: Callable[[Any], bool], message: str, **schema: Any) -> _Bound:
    return _Bound(ok, message, **schema)


class _Schema:
    """JSON Schema keywords for a field whose checks live in Python (e.g. an enum of loss names, which
    the spec checks with a did-you-mean instead of pydantic's own message)."""

    def __init__(self, **schema: Any) -> None:
        self.schema = schema

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        return handler(schema) | self.schema


def _sizes(value: tuple[int, ...]) -> bool:
    return bool(value) and all(size >= 1 for size in value)


Positive = Annotated[Int, _bound(lambda v: v >= 1, "{value} must be >= 1", minimum=1)]
Sizes = Annotated[
    tuple[Annotated[Int, _Schema(minimum=1)], ...],
    _bound(_sizes, "{value} must be a non-empty list of positive sizes", minItems=1),
]
LossName = Annotated[str, _Schema(enum=list(LOSSES))]


class _Section(BaseModel):
    """A part of a spec: frozen, unknown keys refused. Each field checks its own value; `problems()`
    lists what is wrong between fields, as (field, message) pairs ('' for the section itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        return []

    @model_validator(mode="after")
    def _checked(self):
        found = self.problems()
        if found:
            raise SectionProblems(found)
        return self

    def replace(self, **changes: Any):
        """A copy with `changes` (values already of the right types)."""
        return self.model_copy(update=changes)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Holdout(_Section):
    """A validation set carved from the training data: `size` training queries (retrieval: BEIR
    queries, or distinct anchors of pairs), rows (sts, triplet) or texts drawn per class (classes),
    with `seed`; every training row of what is held out leaves training."""

    size: Annotated[
        Int, _bound(lambda v: v >= 1, "{value} must be a positive number of queries (or rows)", minimum=1)
    ] = Field(description="held-out queries (retrieval), rows (sts, triplet) or texts (classes)")
    seed: Int = Field(0, description="the seed of the draw: the same seed holds out the same items")


Limit = Annotated[
    Int, _bound(lambda v: v >= 1, "{value} must be a positive row count, or null for all rows", minimum=1)
]
Columns = dict[str, str]


class _Source(_Section):
    """Where rows come from: `path` (under data_dir, or absolute) or `hub` (a Hugging Face dataset id)."""

    path: str | None = Field(None, description="a folder or file (csv, tsv, jsonl, json, parquet), under data_dir")
    hub: str | None = Field(None, description="a Hugging Face dataset id")
    subset: str | None = Field(None, description="the hub dataset's configuration (subset)")
    view: str | None = Field(None, description="the layout built from a folder, e.g. pairs, triplets, top-pairs")
    limit: Limit | None = Field(None, description="keep the first rows only (retrieval folders: the first queries)")
    columns: Columns = Field(
        default_factory=dict,
        description="rename columns after loading, old: new (e.g. {question: anchor, similarity: score}): "
        "text columns in order, then one label column named label or score",
    )
    encode_labels: Bool = Field(
        False, description="turn a label column of strings into class ids (names sorted, 0..n-1), for class losses"
    )

    def source_problems(self) -> list[tuple[str, str]]:
        found = []
        if self.subset is not None and self.hub is None:
            found.append(("subset", "is a hub dataset's configuration; a local path has none: drop it"))
        targets = list(self.columns.values())
        for name in sorted({t for t in targets if targets.count(t) > 1}):
            found.append(("columns", f"two columns would be renamed to {name!r}; each new name once"))
        return found


class DataRef(_Source):
    """Training data: `path` (relative to data_dir, or absolute) or `hub` (a Hugging Face dataset id)."""

    split: str = Field("train", description="the split to read (a folder's split, a file ignores it)")

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        found = self.source_problems()
        if (self.path is None) == (self.hub is None):
            found.append(("", "set exactly one of path (a local folder or file) or hub (a Hugging Face dataset id)"))
        return found


EVAL_TYPES = ("retrieval", "sts", "triplet", "classes")


class CorpusSample(_Section):
    """A retrieval set's corpus cut to `size` documents for the search's decisions: every document judged
    for its queries, then distractors (hard: the untrained model's top-ranked unjudged documents per
    query for half the slots left, random ones for the rest; random: random only), seeded, cached."""

    size: Positive = Field(description="documents kept (every judged one, then distractors)")
    distractors: Literal["hard", "random"] = Field("hard", description="hard (and random) or random distractors")
    seed: Int = Field(0, description="seeds the random distractors")
    model: str | None = Field(
        None, description="the untrained model that ranks the hard distractors (its own prompts); default: the spec's"
    )


class EvalRef(_Source):
    """An evaluation set: retrieval (a BEIR folder, or rows of (query, document) pairs), sts (scored
    pairs), triplet (anchor, positive, negative) or classes (class-labelled texts, each text querying
    the others). It comes from `path` or `hub`, or is carved `from_train` from the training data."""

    type: Literal["retrieval", "sts", "triplet", "classes"] = Field(description="what the set measures")
    from_train: Holdout | None = Field(None, description="a validation set carved from the training data")
    split: str = Field("test", description="the split to read")
    role: Literal["verdict", "guard"] = Field(
        "verdict",
        description="verdict: judges the losses; guard: what the model already did well (another task or "
        "domain), scored for the untrained model and every final run, tested for regressions, never deciding",
    )
    sample: CorpusSample | None = Field(
        None, description="retrieval: search on a sample of the corpus (the selection set only in a sweep)"
    )
    corpus: Literal["with_train", "own"] | None = Field(
        None,
        description="retrieval from pairs: the documents searched: the set's own and the training data's "
        "(with_train, the default) or the set's own only (own); a BEIR folder searches its corpus",
    )
    name: (
        Annotated[
            str,
            _bound(
                lambda v: bool(MLFLOW_NAME.match(v)),
                "{value!r} cannot name MLflow metrics (eval/<name>/...): use letters, digits and _ - . : / or spaces",
                pattern=MLFLOW_NAME.pattern,
            ),
        ]
        | None
    ) = Field(None, description="the metric namespace, eval/<name>/...; default: the folder's name")

    @property
    def label(self) -> str:
        """The metric namespace: `eval/<label>/...`."""
        return self.name or Path(self.path or self.hub or "validation").name

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        found = self.source_problems()
        if (self.path is not None) + (self.hub is not None) + (self.from_train is not None) != 1:
            found.append(("", "set exactly one of path, hub, or from_train (a validation set carved from training)"))
        if self.name is None and not MLFLOW_NAME.match(self.label):
            found.append(("name", f"the folder name {self.label!r} cannot name MLflow metrics; set a name"))
        if self.corpus is not None and self.type != "retrieval":
            found.append(("corpus", f"only retrieval evaluation searches a corpus; drop it for a {self.type} set"))
        if self.sample is not None and self.type != "retrieval":
            found.append(("sample", f"only retrieval evaluation searches a corpus; drop it for a {self.type} set"))
        return found


class LossSpec(_Section):
    """A loss by name with its parameters. `negatives`: train on mined hard negatives (true), on the
    pairs (false), or automatically (null: mined negatives only for a loss that cannot take pairs)."""

    name: LossName = Field(description="a loss of `lossweep losses`")
    params: dict[str, Any] = Field(default_factory=dict, description="constructor arguments, by name")
    base: LossSpec | None = Field(None, description="the wrapped loss of a modifier (MatryoshkaLoss...)")
    negatives: Bool | None = Field(
        None, description="train on mined hard negatives (true), on the pairs (false), or decide by the data (null)"
    )

    def config(self) -> LossConfig:
        return LossConfig(self.name, dict(self.params), None if self.base is None else self.base.config())

    @property
    def leaf(self) -> str:
        """The loss that takes the data (a modifier's base)."""
        return self.base.leaf if self.base is not None else self.name

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        return [tuple(problem.split(": ", 1)) for problem in config_errors(self.config(), path="")]


def _label(what: str) -> Any:
    """A name lossweep builds MLflow metric names, tags and candidate names from (no `/`, not blank)."""
    return Annotated[
        str,
        _bound(
            lambda v: bool(MLFLOW_NAME.match(v)) and "/" not in v and bool(v.strip()),
            "{value!r} cannot name " + what + ": use letters, digits and _ - . : or spaces",
            pattern=MLFLOW_NAME.pattern,
        ),
    ]


SetLabel = _label("MLflow metrics (train_set/<name>/...)")
ModelLabel = _label("a model in runs and leaderboards")


class TrainPart(DataRef):
    """One of several training sets (`train` as a list): its rows and, optionally, the loss that fits
    them; without one it trains with the swept loss, where that loss fits its rows."""

    name: SetLabel | None = Field(
        None, description="its name in metrics (train_set/<name>/loss); default: the folder's or hub id's name"
    )
    loss: LossSpec | None = Field(None, description="its own loss; default: the swept loss (the spec's `loss`)")

    @property
    def label(self) -> str:
        return self.name or Path((self.path or self.hub or "train").rstrip("/")).name


TrainData = Annotated[
    Annotated[DataRef, UnionTag("one-set")] | Annotated[tuple[TrainPart, ...], UnionTag("several-sets")],
    Discriminator(lambda v: "several-sets" if isinstance(v, (list, tuple)) else "one-set"),
]

NonNegative = Annotated[Int, _bound(lambda v: v >= 0, "{value} must be >= 0", minimum=0)]


class PromptSpec(_Section):
    """Prompts of one's own: a query side, a document side, and training columns given their own."""

    query: str = Field("", description="prepended to every query (and to every text of symmetric data)")
    document: str = Field("", description="prepended to every document (retrieval corpus, positives, negatives)")
    columns: dict[str, str] = Field(default_factory=dict, description="training columns given their own prompt")


class AdapterSpec(_Section):
    """A LoRA adapter trained in place of every weight (PEFT; the lora extra). The base model stays frozen;
    checkpoints hold the adapter and its optimiser state only."""

    method: Literal["lora"] = Field("lora", description="the adapter kind (LoRA)")
    r: Positive = Field(8, description="the rank of each adapter matrix")
    alpha: PositiveFloat = Field(16.0, description="LoRA's scaling numerator: updates are scaled by alpha / r")
    dropout: Annotated[
        Float, _bound(lambda v: 0 <= v < 1, "{value} must be in [0, 1)", minimum=0, exclusiveMaximum=1)
    ] = Field(0.0, description="dropout on the adapter's input")
    target_modules: tuple[str, ...] | None = Field(
        None, description="names of the layers to adapt; default: PEFT's for the architecture (BERT: query, value)"
    )


class ModelChoice(_Section):
    """A base model a sweep compares, with the settings that belong to it (null: the spec's own)."""

    model: str = Field(description="minilm (the packaged all-MiniLM-L6-v2), minilm-l<k>, a model folder or a hub id")
    name: ModelLabel | None = Field(None, description="its name in runs and leaderboards; default: the folder's name")
    max_seq_length: Positive | None = Field(None, description="cut inputs at this many tokens (null: the spec's)")
    prompts: Literal["model", "none"] | PromptSpec | None = Field(
        None, description="model, none or your own (null: the spec's `prompts`)"
    )

    @property
    def label(self) -> str:
        """How runs and leaderboards name it: `name`, else the last part of the reference."""
        return self.name or Path(self.model.rstrip("/")).name


ModelItem = Annotated[
    Annotated[str, UnionTag("model-ref")] | Annotated[ModelChoice, UnionTag("model-choice")],
    Discriminator(lambda v: "model-ref" if isinstance(v, str) else "model-choice"),
]


class NegativesSpec(_Section):
    """Hard negatives mined for (anchor, positive) training pairs with sentence-transformers'
    `util.mine_hard_negatives` (its knobs, by the same names); `model` defaults to the spec's."""

    model: str | None = Field(None, description="the mining model; default: the spec's model")
    num_negatives: Positive = Field(1, description="negatives per anchor")
    range_min: NonNegative = Field(0, description="skip the top-ranked candidates (they are often unjudged positives)")
    range_max: Positive | None = Field(None, description="take negatives among the top range_max candidates")
    max_score: Float | None = Field(None, description="only candidates scoring below this similarity")
    absolute_margin: Float | None = Field(None, description="negative score <= positive score - margin")
    relative_margin: Float | None = Field(None, description="negative score <= positive score * (1 - margin)")
    sampling_strategy: Literal["top", "random"] = Field(
        "top", description="the best-ranked candidates that pass, or a random draw of them"
    )
    shape: Literal["auto", "n-tuple", "triplets", "labeled-pairs"] = Field(
        "auto", description="auto: each loss gets the shape it takes"
    )
    seed: Int = Field(0, description="seeds sampling_strategy: random")
    batch_size: Positive = Field(64, description="encoding batch size")

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        if self.range_max is not None and self.range_min >= self.range_max:
            return [("range_min", f"{self.range_min} >= range_max {self.range_max}; range_min must be the smaller")]
        if self.range_max is not None and self.num_negatives > self.range_max - self.range_min:
            return [
                (
                    "num_negatives",
                    f"{self.num_negatives} per anchor, but only {self.range_max - self.range_min} candidates "
                    f"rank between range_min {self.range_min} and range_max {self.range_max}; raise range_max or "
                    "ask for fewer",
                )
            ]
        return []


Steps = Annotated[Int, _bound(lambda v: v >= 1, "{value} must be a positive number of optimizer steps", minimum=1)]
Memory = Annotated[Float, _bound(lambda v: v > 0, "{value} must be > 0, or null for no budget", exclusiveMinimum=0)]
PositiveFloat = Annotated[Float, _bound(lambda v: v > 0, "{value} must be > 0", exclusiveMinimum=0)]


class TrainingSpec(_Section):
    """The budget and the optimiser of one training run."""

    batch_size: Annotated[Int, _bound(lambda v: v >= 1, "{value} must be a positive global batch size", minimum=1)] = (
        Field(32, description="the global batch: every worker takes an equal share")
    )
    steps: Steps | None = Field(None, description="optimizer steps (set steps or epochs; sweeps need steps)")
    epochs: PositiveFloat | None = Field(None, description="passes over the training data (instead of steps)")
    learning_rate: PositiveFloat = Field(2e-5, description="the peak learning rate")
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "linear", description="the learning-rate schedule (transformers' get_scheduler)"
    )
    warmup_ratio: Annotated[
        Float, _bound(lambda v: 0 <= v < 1, "{value} must be in [0, 1)", minimum=0, exclusiveMaximum=1)
    ] = Field(0.1, description="share of the steps spent warming up")
    weight_decay: Annotated[Float, _bound(lambda v: v >= 0, "{value} must be >= 0", minimum=0)] = Field(
        0.01, description="AdamW's weight decay (not on biases and norms)"
    )
    max_grad_norm: (
        Annotated[Float, _bound(lambda v: v > 0, "{value} must be > 0, or null for no clipping", exclusiveMinimum=0)]
        | None
    ) = Field(1.0, description="clip the gradient norm (null: no clipping)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision (fp16 needs a GPU)")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="sgd: an update linear in the gradient")
    seed: Int = Field(42, description="seeds the model's random parts, dropout and the batch order")
    mixing: Literal["proportional", "round_robin"] = Field(
        "proportional",
        description="several training sets: the order of their batches (sentence-transformers' "
        "multi_dataset_batch_sampler): proportional to their sizes, or one of each in turn",
    )
    log_every_steps: Positive = Field(10, description="log train/loss and speed every N steps")


CORPUS_CHUNK_SIZE = 50_000  # sentence-transformers' InformationRetrievalEvaluator default


class EvaluationSpec(_Section):
    """When and how the eval sets are scored."""

    every_steps: Annotated[
        Int, _bound(lambda v: v >= 0, "{value} must be >= 0 (0: evaluate at the end only)", minimum=0)
    ] = Field(0, description="evaluate every N steps (0: at the end only)")
    at_start: Bool = Field(True, description="also score the model before the first step")
    batch_size: Positive = Field(32, description="encoding batch size")
    corpus_chunk_size: Positive = Field(
        CORPUS_CHUNK_SIZE, description="retrieval corpus documents encoded and scored at once: bounds evaluation memory"
    )
    dims: Sizes | None = Field(None, description="embedding sizes to score (Matryoshka truncation)")
    distributed: Bool = Field(True, description="share the encoding across the workers of a trial")
    sets: tuple[str, ...] | None = Field(None, description="the eval sets this run scores, by name; null: all")
    at_steps: tuple[Positive, ...] | None = Field(
        None, description="also evaluate at these steps, keeping each query's values (a verdict at several budgets)"
    )


class ResourcesSpec(_Section):
    """What one trial takes: `workers` Ray Train workers, each with its CPUs, GPUs and memory."""

    workers: Annotated[Int, _bound(lambda v: v >= 1, "{value} must be at least 1", minimum=1)] = Field(
        1, description="Ray Train workers per trial; in-batch negatives are gathered across them"
    )
    cpus_per_worker: PositiveFloat = Field(1.0, description="CPUs each worker reserves")
    gpus_per_worker: Annotated[Float, _bound(lambda v: v >= 0, "{value} must be >= 0", minimum=0)] = Field(
        0.0, description="GPUs each worker reserves (> 0: NCCL and the GPU)"
    )
    max_failures: Annotated[
        Int, _bound(lambda v: v >= -1, "{value}: use -1 (retry forever), 0 or a positive count", minimum=-1)
    ] = Field(1, description="worker-group restarts per trial (-1: forever)")
    memory_per_worker_gb: Memory | None = Field(None, description="a worker that needs more fails alone")
    in_trial: Bool = Field(
        True,
        description="a 1-worker sweep trial trains in its Tune trial's process, reused by the next trial, "
        "instead of starting a Ray Train worker group (false: always a worker group)",
    )

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        # NCCL refuses two ranks of one group on one GPU; Ray would place fractional workers together.
        g = self.gpus_per_worker
        if self.workers > 1 and 0 < g < 1:
            return [("gpus_per_worker", f"{g}: several workers cannot share a GPU (NCCL needs one per rank); use 1")]
        return []


class MLflowSpec(_Section):
    """Where runs are tracked."""

    tracking_uri: str | None = Field(
        None, description="the MLflow store (the --tracking-uri flag and MLFLOW_TRACKING_URI come first)"
    )
    experiment: str = Field("lossweep", description="the MLflow experiment")


class ParamRange(_Section):
    """A search range: `low`/`high` (with `log`) for numbers, or `choices`."""

    low: Float | None = Field(None, description="the smallest value")
    high: Float | None = Field(None, description="the largest value")
    log: Bool = Field(False, description="draw uniformly on a log scale")
    choices: tuple[Any, ...] | None = Field(None, description="the values to choose from (instead of low/high)")

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                return [("", "give either choices or low/high, not both")]
            return [] if self.choices else [("choices", "must list at least one value")]
        if self.low is None or self.high is None:
            return [("", "a range needs low and high (or choices)")]
        if self.low > self.high:
            return [("", f"low={self.low} > high={self.high}; swap them")]
        if self.log and self.low <= 0:
            return [("low", f"{self.low}: a log range needs low > 0")]
        return []


SHARED_SEARCH = ("learning_rate", "batch_size", "matryoshka_dims", "warmup_ratio", "weight_decay", "prompts", "mixing")
ADAPTER_SEARCH = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout"}  # searched name -> adapter field
SHARED_SEARCH += tuple(ADAPTER_SEARCH)
MINING_SEARCH = (
    "num_negatives",
    "range_min",
    "range_max",
    "max_score",
    "absolute_margin",
    "relative_margin",
    "sampling_strategy",
)
# The tags of the discriminated unions below, which pydantic puts in error locations.
UNION_TAGS = {
    "all-losses",
    "loss-list",
    "loss-name",
    "loss-spec",
    "model-ref",
    "model-choice",
    "one-set",
    "several-sets",
}
LossItem = Annotated[
    Annotated[LossName, UnionTag("loss-name")] | Annotated[LossSpec, UnionTag("loss-spec")],
    Discriminator(lambda v: "loss-name" if isinstance(v, str) else "loss-spec"),
]
Losses = Annotated[
    Annotated[Literal["all"], UnionTag("all-losses")] | Annotated[tuple[LossItem, ...], UnionTag("loss-list")],
    Discriminator(lambda v: "all-losses" if isinstance(v, str) else "loss-list"),
]
NUMERIC_KINDS = ("float", "int")


class SeedRange(_Section):
    """Adaptive seeds: `min` seed runs per loss, then one more per round for each loss whose comparison
    is still undecided, up to `max` (a group-sequential rule keeps the error rate; `sequential.py`)."""

    min: Annotated[Int, _bound(lambda v: v >= 3, "{value}: at least 3 seeds measure training noise", minimum=3)] = (
        Field(3, description="seed runs every loss gets")
    )
    max: Positive = Field(description="seed runs no loss goes beyond")

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        if self.max < self.min:
            return [("max", f"{self.max} < min {self.min}; max is the larger")]
        return []


class Rescore(_Section):
    """Selection that resists the winner's curse: each loss's `top` best tuning trials re-trained with
    `seeds` fresh seeds; the configuration with the best mean selection score is the loss's choice."""

    top: Annotated[Int, _bound(lambda v: v >= 1, "{value} must be >= 1", minimum=1)] = Field(
        2, description="tuning trials per loss re-trained"
    )
    seeds: Positive = Field(2, description="fresh seeds for each of them")


class SweepSpec(_Section):
    """The search (`search`: the loss is one more categorical) or the fair shoot-out (`compare`: one
    study per loss, the same budget each, then fresh seeds of each loss's best configuration)."""

    mode: Literal["search", "compare"] = Field("search", description="search, or compare (one study per loss)")
    select_on: str | None = Field(None, description="the eval set that drives the search; default: the first")
    losses: Losses = Field("all", description="all losses that fit the data, or a list of names or loss specs")
    models: tuple[ModelItem, ...] | None = Field(
        None,
        description="base models compared: references or {model, name, max_seq_length, prompts}; every "
        "(model, loss) pair is a candidate (compare: its own study and budget; search: one categorical)",
    )
    params: dict[str, dict[str, ParamRange]] = Field(default_factory=dict, description="per loss: param -> range")
    shared: dict[str, ParamRange] = Field(default_factory=dict, description=f"ranges of {', '.join(SHARED_SEARCH)}")
    trials: Positive = Field(8, description="trials of the search (compare: per loss)")
    seeds: Positive | SeedRange = Field(
        3, description="compare: fresh-seed re-trainings of each loss's chosen configuration, or {min, max}"
    )
    max_concurrent: Positive = Field(1, description="trials running at once")
    metric: str | None = Field(None, description="the selection metric; default: the selection set's headline")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna's TPE, random draws, or a grid")
    scheduler: Literal["asha", "none"] = Field("asha", description="ASHA stops hopeless trials early; none")
    grace_steps: Positive | None = Field(None, description="ASHA's first decision; default: evaluation.every_steps")
    reduction_factor: Annotated[Int, _bound(lambda v: v >= 2, "{value} must be >= 2", minimum=2)] = Field(
        2, description="ASHA keeps 1 in reduction_factor trials at each rung"
    )
    seed: Int = Field(0, description="seeds the sampler")
    warm_start: Bool = Field(
        False, description="tell Optuna the completed trials of earlier sweeps on the same data, model and budget"
    )
    keep_checkpoints: Literal["final", "all"] = Field(
        "final", description="final: a finished trial keeps its final model only (no optimiser state); all: everything"
    )
    negatives: dict[str, ParamRange] = Field(default_factory=dict, description="mining knobs searched, over choices")
    rescore: Rescore | None = Field(
        None, description="compare: re-train each loss's top tuning trials with fresh seeds, choose by the mean"
    )
    budgets: (
        tuple[
            Annotated[
                Float,
                _bound(lambda v: 0 < v <= 1, "{value} must be a fraction in (0, 1]", exclusiveMinimum=0, maximum=1),
            ],
            ...,
        ]
        | None
    ) = Field(
        None,
        description="compare: fractions of training.steps at which the seed runs are also judged (the verdict at "
        "each budget; no decision reads them), e.g. [0.25, 0.5, 1.0]; default: the end only",
    )

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        return each([self._seeds, self._params, self._shared, self._mining, self._rescore, self._models], lenient)

    def model_choices(self) -> tuple[ModelChoice, ...]:
        """`models` with each plain reference as a choice of its own (empty: the spec's one model)."""
        return tuple(ModelChoice(model=item) if isinstance(item, str) else item for item in self.models or ())

    def _models(self) -> list[tuple[str, str]]:
        if not given(self.models):
            return []
        if not self.models:
            return [("models", "lists no model; list at least one, or drop it to train the spec's model")]
        found = []
        labels = [choice.label for choice in self.model_choices()]
        for label in sorted({x for x in labels if labels.count(x) > 1}):
            found.append(("models", f"two models are named {label!r}; give them distinct `name`s"))
        if self.warm_start:
            found.append(("warm_start", "is not yet for sweeps over several models (sweep.models); drop one of them"))
        if "prompts" in self.shared and any(given(c.prompts) for c in self.model_choices()):
            found.append(("shared.prompts", "searched while sweep.models sets a model's prompts; keep one of them"))
        return found

    def _rescore(self) -> list[tuple[str, str]]:
        found = []
        if given(self.rescore) and self.mode != "compare":
            found.append(
                ("rescore", "re-training the best trials is for mode: compare (a search keeps its best trial)")
            )
        if given(self.budgets) and self.mode != "compare":
            found.append(("budgets", "verdicts at several budgets come from a compare's seed runs; use mode: compare"))
        return found

    def budget_steps(self, steps: int) -> tuple[int, ...]:
        """The steps before the last at which seed runs are judged too (`budgets` x training.steps)."""
        return tuple(sorted({max(1, round(f * steps)) for f in self.budgets or ()} - {steps}))

    def _seeds(self) -> list[tuple[str, str]]:
        if isinstance(self.seeds, SeedRange):
            return [] if self.mode == "compare" else [("seeds", "adaptive seeds are for mode: compare")]
        if self.mode == "compare" and self.seeds < 3:
            noise = "to measure training noise"
            return [("seeds", f"{self.seeds}: compare mode needs at least 3 seeds per loss {noise}")]
        return []

    def _params(self) -> list[tuple[str, str]]:
        found, names = [], self.loss_names()
        for loss, ranges in self.params.items():
            if loss not in LOSSES:
                found.append((f"params.{loss}", "not a loss of the catalogue (run `lossweep losses`)"))
                continue
            if names and loss not in names:
                found.append((f"params.{loss}", f"{loss} is not among sweep.losses {names}"))
            known = {p.name: p for p in LOSSES[loss].params}
            fixed = self._fixed_params(loss)
            for param, rng in ranges.items():
                where = f"params.{loss}.{param}"
                if param not in known:
                    valid = sorted(known)
                    found.append((where, f"{loss} has no parameter {param!r}; valid: {valid}"))
                elif param in fixed:
                    found.append((where, f"fixed to {fixed[param]!r} by sweep.losses; search it or fix it, not both"))
                else:
                    found += [(where, problem) for problem in _range_problems(known[param], rng)]
        return found

    def _fixed_params(self, loss: str) -> dict[str, Any]:
        """The parameters `sweep.losses` fixes for a loss (none when it lists it by name only)."""
        listed = [] if self.losses == "all" else self.losses
        return next((dict(item.params) for item in listed if not isinstance(item, str) and item.name == loss), {})

    def _shared(self) -> list[tuple[str, str]]:
        found = []
        for param, rng in self.shared.items():
            if param not in SHARED_SEARCH:
                found.append((f"shared.{param}", f"cannot be searched; shared parameters are {list(SHARED_SEARCH)}"))
                continue
            field = (
                AdapterSpec.model_fields[ADAPTER_SEARCH[param]]
                if param in ADAPTER_SEARCH
                else TrainingSpec.model_fields.get(param) or Spec.model_fields[param]
            )
            values = rng.choices if rng.choices is not None else (rng.low, rng.high)
            if param == "batch_size" and rng.choices is None:
                values = tuple(int(v) if v is not None and float(v).is_integer() else v for v in values)
            for value in values:
                problem = _field_problem(field, value)
                if problem:
                    found.append((f"shared.{param}", f"cannot search {value!r}: {problem}"))
                    break
        return found

    def _mining(self) -> list[tuple[str, str]]:
        found = []
        for knob, rng in self.negatives.items():
            if knob not in MINING_SEARCH:
                found.append((f"negatives.{knob}", f"cannot be searched; mining knobs are {list(MINING_SEARCH)}"))
            elif rng.choices is None:
                found.append(
                    (
                        f"negatives.{knob}",
                        "mining knobs are searched over choices (each distinct mining config is mined once, before "
                        "the trials), e.g. {choices: [0.0, 0.05]}",
                    )
                )
        return found

    def seed_counts(self) -> tuple[int, int]:
        """(min, max) seed runs per loss: equal for a fixed count."""
        if isinstance(self.seeds, SeedRange):
            return self.seeds.min, self.seeds.max
        return self.seeds, self.seeds

    def loss_names(self) -> list[str]:
        """The losses listed (empty for `all`)."""
        if self.losses == "all":
            return []
        return [item if isinstance(item, str) else item.name for item in self.losses]


def _range_problems(param: Param, rng: ParamRange) -> list[str]:
    """A searched range the parameter cannot take: a numeric range on a choice, or values it refuses."""
    if rng.choices is None and param.kind not in NUMERIC_KINDS:
        options = list(param.allowed or param.search or ())
        example = f" e.g. {{choices: {options}}}" if options else ""
        return [f"{param.name} is a {param.kind} parameter, not a number: search it over choices,{example}"]
    values = rng.choices if rng.choices is not None else (rng.low, rng.high)
    for value in values:
        if param.kind == "int" and rng.choices is None and isinstance(value, float) and value.is_integer():
            value = int(value)
        problem = param.error(param.normalise(value))
        if problem:
            return [f"{value!r} cannot be searched: {problem}"]
    return []


def _field_problem(field: Any, value: Any) -> str | None:
    """Why `value` fails a spec field's own checks, or None."""
    try:
        TypeAdapter(annotation(field)).validate_python(value)
    except ValidationError as error:
        first = error.errors()[0]
        cause = first.get("ctx", {}).get("error")
        return str(cause) if cause is not None else first["msg"]
    return None


class Spec(_Section):
    """An experiment: one trial (`lossweep train`) or, with a `sweep` section, a search or a compare."""

    name: str = Field(description="the experiment's name: the sweep's MLflow parent run, its output folder")
    train: TrainData = Field(
        description="the training data, or several sets (a list), each with its own loss or the swept one"
    )
    loss: LossSpec = Field(description="the loss (a sweep's default; the sweep picks among sweep.losses)")
    version: Int = Field(SPEC_VERSION, description="the spec format's version")
    description: str | None = Field(None, description="free text, kept with the runs")
    data_dir: str | None = Field(
        None, description="where relative data paths start; default $LOSSWEEP_DATA_DIR, else ../shared/data"
    )
    model: str = Field(
        "minilm",
        description="minilm (the packaged all-MiniLM-L6-v2), minilm-l<k> (its first k layers), a folder or a hub id",
    )
    max_seq_length: Positive | None = Field(None, description="cut inputs at this many tokens (default: the model's)")
    teacher: str | None = Field(None, description="a model whose scores or embeddings distillation losses learn")
    prompts: Literal["model", "none"] | PromptSpec = Field(
        "model",
        description="model: the model's own query/document prompts (none if it declares none); none; or your own",
    )
    adapter: AdapterSpec | None = Field(None, description="train a LoRA adapter instead of every weight")
    negatives: NegativesSpec | None = Field(None, description="hard negatives mined for (anchor, positive) pairs")
    eval: tuple[EvalRef, ...] = Field((), description="the eval sets: the first (or sweep.select_on) selects")
    matryoshka_dims: Sizes | None = Field(None, description="wrap the loss in MatryoshkaLoss at these dims")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="budget and optimiser")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="when and how to evaluate")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="workers and their resources")
    mlflow: MLflowSpec = Field(default_factory=MLflowSpec, description="where runs are tracked")
    output_dir: str = Field("lossweep-runs", description="checkpoints, sweep state and mined negatives (or a URI)")
    sweep: SweepSpec | None = Field(None, description="a search or a compare; without it, one training run")

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"title": "lossweep experiment spec (version 1)"}
    )

    def problems(self, lenient: bool = False) -> list[tuple[str, str]]:
        return [tuple(problem.split(": ", 1)) for problem in relation_problems(self)]

    def loss_config(self, loss: LossSpec | None = None) -> LossConfig:
        """The loss to build (`loss`, by default the spec's), wrapped in MatryoshkaLoss when
        `matryoshka_dims` is set."""
        config = (loss or self.loss).config()
        if self.matryoshka_dims:
            return with_matryoshka(config, list(self.matryoshka_dims))
        return config

    @property
    def mixture(self) -> bool:
        """Whether the spec trains on several training sets (`train` is a list)."""
        return isinstance(self.train, tuple)

    def train_parts(self) -> tuple[TrainPart, ...]:
        """The training sets: the list, or the one set as a part without a loss of its own."""
        if isinstance(self.train, tuple):
            return self.train
        return (TrainPart.model_validate(self.train.model_dump()),)

    @property
    def train_ref(self) -> DataRef:
        """The training set the swept loss is chosen for: the one set, or the first of several without
        a loss of its own (else the first)."""
        parts = self.train_parts()
        return self.train if not self.mixture else next((p for p in parts if p.loss is None), parts[0])

    def loss_label(self) -> str:
        """The loss as leaderboards and MLflow name it; a loss that opted in to mined negatives says so."""
        return self.loss_config().label() + (NEGATIVES_SUFFIX if self.loss.negatives else "")

    def selection_set(self) -> EvalRef:
        """The eval set that drives search and selection: `sweep.select_on`, else the first."""
        wanted = self.sweep.select_on if self.sweep else None
        return next((ref for ref in self.eval if ref.label == wanted), self.eval[0])

    def verdict_sets(self) -> tuple[EvalRef, ...]:
        """The eval sets that give the verdict: every set but the selection set and the guards, scored
        only for the final configurations, after every search decision."""
        selection = self.selection_set().label
        return tuple(ref for ref in self.eval if ref.label != selection and ref.role == "verdict")

    def guard_sets(self) -> tuple[EvalRef, ...]:
        """The eval sets that guard what the model already did well: scored like verdict sets, tested
        for regressions against the untrained model, never used for a decision."""
        return tuple(ref for ref in self.eval if ref.role == "guard")

    def holdout(self) -> EvalRef | None:
        """The eval set carved from the training data, if any."""
        return next((ref for ref in self.eval if ref.from_train is not None), None)

    def with_model(self, choice: ModelChoice) -> Spec:
        """The spec training `choice` (of `sweep.models`): its model, and its sequence length and prompts
        where it sets them."""
        return self.replace(
            model=choice.model,
            max_seq_length=choice.max_seq_length or self.max_seq_length,
            prompts=self.prompts if choice.prompts is None else choice.prompts,
        )

    def model_specs(self) -> dict[str, Spec]:
        """The spec once per base model the sweep trains, by the model's label ("" for the spec's one model)."""
        choices = self.sweep.model_choices() if self.sweep is not None else ()
        return {choice.label: self.with_model(choice) for choice in choices} or {"": self}

    def mining_variants(self) -> list[Spec]:
        """The spec once per distinct mining config a sweep may pick (its searched knobs' choices)."""
        searched = self.sweep.negatives if self.sweep and self.negatives else {}
        if not searched:
            return [self]
        names = list(searched)
        return [
            self.replace(negatives=self.negatives.replace(**dict(zip(names, values, strict=True))))
            for values in itertools.product(*(searched[n].choices or () for n in names))
        ]

    def hash(self) -> str:
        """A stable hash of what the spec asks for (MLflow tag `lossweep.spec_hash`). Where files live
        (data_dir, output_dir, the tracking URI) is left out: the same sweep resumed from another folder,
        machine or `ray job submit` copy has the same hash; the data is identified by its fingerprint.
        Fields left at their defaults are left out too, so a spec keeps its hash when a field is added."""
        data = self.model_dump(mode="json", exclude_defaults=True)  # a field added later changes no hash
        for where in ("data_dir", "output_dir"):
            data.pop(where, None)
        data.get("mlflow", {}).pop("tracking_uri", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- Reading specs -------------------------------------------------------------------------------------------


class SpecError(ValueError):
    """An invalid spec; `problems` holds one 'field.path: message' per error."""

    def __init__(self, source: str, problems: list[str]) -> None:
        problems = list(dict.fromkeys(problems))  # the same problem found twice is reported once
        self.source, self.problems = source, problems
        count = f"{len(problems)} error{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source}: {count}\n" + "\n".join(f"  {p}" for p in problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one
    silently, so a second `training:` section would erase the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (first on line {seen[key] + 1}); keep one", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file safely: plain data only, each key once, errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        where = "it is a folder" if path.is_dir() else f"looked in {path.resolve().parent}"
        raise SpecError(str(path), [f"file not found ({where})"])
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
    except UnicodeDecodeError as error:
        raise SpecError(
            str(path), [f"not a text file ({error.reason} at byte {error.start}); a spec is YAML"]
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(str(path), [f"{where}not valid YAML ({getattr(error, 'problem', error)})"]) from None


def parse_spec(data: Any, source: str = "spec") -> Spec:
    """A spec from plain data (parsed YAML); raises SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(
            source, [f"a spec is a YAML mapping of fields (name, train, loss, ...), got {type(data).__name__}"]
        )
    try:
        return Spec.model_validate(data)
    except ValidationError as error:
        problems = [p for e in error.errors() for p in describe(e, Spec, UNION_TAGS)]
        # the checks the broken parts kept from running
        _, unchecked = lenient(Spec, data, [], _Section, lambda spec: relation_problems(spec, lenient=True))
        raise SpecError(source, problems + unchecked) from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file, for editors (`# yaml-language-server: $schema=...`) and CI."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def load_spec(path: Path | str) -> Spec:
    """Read and check a spec file (data and models are checked by `inputs.validate`)."""
    return parse_spec(read_yaml(path), str(path))


# --- The MLflow param names of spec fields ------------------------------------------------------------------


def field_path(*parts: str) -> str:
    """The MLflow param name of a spec field (`training.batch_size`), checked against the models when
    this module loads: a renamed field breaks here, not in a reader that falls back to a default."""
    models: list[Any] = [Spec]
    for part in parts:
        model = next((m for m in models if part in m.model_fields), None)
        if model is None:
            raise KeyError(f"no spec field {'.'.join(parts)!r}")
        kinds = members(model.model_fields[part].annotation)
        models = [m for m in kinds if isinstance(m, type) and issubclass(m, BaseModel)]
    return ".".join(parts)


class Params:
    """The spec fields read back from runs' MLflow params (the verdict's budgets and expectations)."""

    BATCH_SIZE = field_path("training", "batch_size")
    STEPS = field_path("training", "steps")
    WORKERS = field_path("resources", "workers")
    GPUS_PER_WORKER = field_path("resources", "gpus_per_worker")
    TRIALS = field_path("sweep", "trials")
    SEEDS = field_path("sweep", "seeds")
    MOST_SEEDS = field_path("sweep", "seeds", "max")
    RESCORE_TOP = field_path("sweep", "rescore", "top")
    BUDGETS = field_path("sweep", "budgets")
    MODEL = field_path("model")
    TRAIN_PATH = field_path("train", "path")
    TRAIN_HUB = field_path("train", "hub")
    TRAIN_SPLIT = field_path("train", "split")
    MIXING = field_path("training", "mixing")
    LOSS_NAME = field_path("loss", "name")
