"""Hyperparameters of a loss: default, validity and search range, as plain data.

Specs and MLflow hold names and numbers only; a `Param` with `objects` turns a name such as
"dot_score" into the callable sentence-transformers expects, at build time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sentence_transformers import util
from sentence_transformers.sentence_transformer.losses import (
    BatchHardTripletLossDistanceFunction,
    SiameseDistanceMetric,
    TripletDistanceMetric,
)
from torch import nn

KINDS = ("float", "int", "bool", "choice", "str", "ints", "floats")


@dataclass(frozen=True)
class Param:
    """One constructor argument of a loss.

    `search` is the default search range: (low, high) for numbers (`log` for a log-uniform draw), the
    candidate values for choices and booleans. `tune=False` marks arguments that change speed or
    memory but not the result (mini-batch sizes) or that name a resource (a guide model): sweeps
    leave them at their value. `objects` maps the names a spec uses to the objects the loss takes.
    """

    name: str
    kind: str
    default: Any
    search: tuple = ()
    log: bool = False
    tune: bool = True
    gt: float | None = None
    ge: float | None = None
    choices: tuple | None = None
    objects: Mapping[str, Any] | None = None
    check: Callable[[Any], str | None] | None = None
    doc: str = ""
    required: bool = False  # no default that works: the user names it (a guide model)
    from_data: Callable[[Any], Any] | None = None  # left unset, it is read off the training data

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Param {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if not self.search and self.kind in ("choice", "bool"):
            object.__setattr__(self, "search", self.allowed)

    @property
    def allowed(self) -> tuple | None:
        """The closed set of valid values for names and flags; None for open-ended kinds."""
        if self.objects is not None:
            return tuple(self.objects)
        if self.choices is not None:
            return self.choices
        if self.kind == "bool":
            return (True, False)
        return None

    def normalise(self, value: Any) -> Any:
        """YAML lists become tuples for tuple-valued choices; ints are accepted for floats."""
        if self.kind == "choice" and isinstance(value, list):
            return tuple(value)
        if self.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def error(self, value: Any) -> str | None:
        """Why `value` is not valid for this parameter, or None."""
        if value is None:
            if self.default is None or (self.allowed is not None and None in self.allowed):
                return None
            return f"{self.name} may not be null"
        expected = {
            "float": (float,),
            "int": (int,),
            "bool": (bool,),
            "str": (str,),
            "ints": (list, tuple),
            "floats": (list, tuple),
        }.get(self.kind)
        if expected and (
            not isinstance(value, expected) or (self.kind in ("int", "float") and isinstance(value, bool))
        ):
            return f"{self.name} must be {self.kind}, got {value!r} ({type(value).__name__})"
        if self.kind == "ints" and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return f"{self.name} must be a list of integers, got {value!r}"
        if self.kind == "floats" and not all(isinstance(v, (int, float)) for v in value):
            return f"{self.name} must be a list of numbers, got {value!r}"
        allowed = self.allowed
        if allowed is not None and value not in allowed:
            return f"{self.name}={value!r} is not one of {list(allowed)}"
        if self.gt is not None and value <= self.gt:
            return f"{self.name} must be > {self.gt}, got {value!r}"
        if self.ge is not None and value < self.ge:
            return f"{self.name} must be >= {self.ge}, got {value!r}"
        return self.check(value) if self.check else None

    def resolve(self, value: Any) -> Any:
        """The object the loss constructor takes for `value`."""
        value = self.normalise(value)
        if self.objects is not None and value is not None:
            return self.objects[value]
        return value

    def describe(self) -> str:
        if self.kind in ("float", "int") and self.search:
            low, high = self.search
            span = f"[{low}, {high}{', log' if self.log else ''}]"
        elif self.search:
            span = "{" + ", ".join(_short(v) for v in self.search) + "}"
        else:
            span = ""
        return f"{self.name}={_short(self.default)}" + (f" {span}" if span else "")


def _short(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(str(v) for v in value)
    return str(value)


# Named callables, so that specs stay data. Keys are sentence-transformers' own names.
SIMILARITY = {"cos_sim": util.cos_sim, "dot_score": util.dot_score}
PAIRWISE_SIMILARITY = {
    "pairwise_cos_sim": util.pairwise_cos_sim,
    "pairwise_dot_score": util.pairwise_dot_score,
    "pairwise_euclidean_sim": util.pairwise_euclidean_sim,
    "pairwise_manhattan_sim": util.pairwise_manhattan_sim,
}
SIAMESE_DISTANCE = {
    "cosine": SiameseDistanceMetric.COSINE_DISTANCE,
    "euclidean": SiameseDistanceMetric.EUCLIDEAN,
    "manhattan": SiameseDistanceMetric.MANHATTAN,
}
TRIPLET_DISTANCE = {
    "euclidean": TripletDistanceMetric.EUCLIDEAN,
    "cosine": TripletDistanceMetric.COSINE,
    "manhattan": TripletDistanceMetric.MANHATTAN,
}
BATCH_DISTANCE = {
    "euclidean": BatchHardTripletLossDistanceFunction.euclidean_distance,
    "cosine": BatchHardTripletLossDistanceFunction.cosine_distance,
}
REGRESSION_LOSS = {"mse": nn.MSELoss(), "l1": nn.L1Loss()}

MNRL_DIRECTIONS = {"query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"}
DIRECTION_PRESETS = (
    ("query_to_doc",),
    ("query_to_doc", "doc_to_query"),
    ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"),
)


def _check_directions(value: Any) -> str | None:
    bad = set(value) - MNRL_DIRECTIONS
    if bad:
        return f"directions has unknown entries {sorted(bad)}; valid: {sorted(MNRL_DIRECTIONS)}"
    if "query_to_doc" not in value:
        return "directions must include 'query_to_doc' (it holds the positive pair)"
    return None


# Building blocks shared by several losses.
def scale(default: float = 20.0) -> Param:
    return Param("scale", "float", default, (5.0, 100.0), log=True, gt=0, doc="1 / temperature of the softmax")


def similarity(default: str = "cos_sim") -> Param:
    return Param("similarity_fct", "choice", default, objects=SIMILARITY)


def pairwise_similarity(default: str, search: tuple[str, ...]) -> Param:
    return Param("similarity_fct", "choice", default, search, objects=PAIRWISE_SIMILARITY)


def mini_batch_size(default: int) -> Param:
    return Param(
        "mini_batch_size",
        "int",
        default,
        (8, 256),
        log=True,
        tune=False,
        gt=0,
        doc="rows per GradCache chunk: memory, not the result",
    )


def mnrl_family(cached: bool, symmetric: bool) -> tuple[Param, ...]:
    params = [scale(), similarity()]
    if cached:
        params.append(mini_batch_size(32))
    if not symmetric:
        params += [
            Param("directions", "choice", ("query_to_doc",), DIRECTION_PRESETS, check=_check_directions),
            Param("partition_mode", "choice", "joint", choices=("joint", "per_direction")),
            Param(
                "hardness_mode", "choice", None, choices=(None, "in_batch_negatives", "hard_negatives", "all_negatives")
            ),
            Param("hardness_strength", "float", 0.0, (0.0, 10.0), ge=0),
        ]
    return tuple(params)


def gist_family(cached: bool) -> tuple[Param, ...]:
    params = [
        Param("guide", "str", None, tune=False, required=True, doc="guide model: local path, hub id or 'minilm'"),
        Param("temperature", "float", 0.01, (0.005, 0.1), log=True, gt=0),
        Param("margin_strategy", "choice", "absolute", choices=("absolute", "relative")),
        Param("margin", "float", 0.0, (0.0, 0.2), ge=0),
        Param("contrast_anchors", "bool", True),
        Param("contrast_positives", "bool", True),
    ]
    if cached:
        params.append(mini_batch_size(32))
    return tuple(params)


def batch_triplet(margin: bool) -> tuple[Param, ...]:
    params = [Param("distance_metric", "choice", "euclidean", objects=BATCH_DISTANCE)]
    if margin:
        params.append(Param("margin", "float", 5.0, (0.05, 10.0), log=True, gt=0))
    return tuple(params)


def adaptive_layer(n_layers_per_step: int = 1) -> tuple[Param, ...]:
    return (
        Param("n_layers_per_step", "int", n_layers_per_step, (1, 4), doc="prior layers trained per step (-1: all)"),
        Param("last_layer_weight", "float", 1.0, (0.5, 2.0), ge=0),
        Param("prior_layers_weight", "float", 1.0, (0.1, 2.0), ge=0),
        Param("kl_div_weight", "float", 1.0, (0.1, 2.0), ge=0),
        Param("kl_temperature", "float", 0.3, (0.1, 1.0), ge=0),
        Param("layer_weighting", "choice", "uniform", choices=("uniform", "log", "linear")),
    )


def _check_dims(value: Any) -> str | None:
    if value is not None and (not value or any(d <= 0 for d in value)):
        return "matryoshka_dims must be a non-empty list of positive integers"
    return None


def matryoshka(n_dims_per_step: int) -> tuple[Param, ...]:
    return (
        Param(
            "matryoshka_dims",
            "ints",
            None,
            tune=False,
            check=_check_dims,
            doc="embedding sizes to train; null: the model's size and powers of two below it",
        ),
        Param("matryoshka_weights", "floats", None, tune=False, doc="one weight per dim; null: all 1"),
        Param(
            "n_dims_per_step",
            "int",
            n_dims_per_step,
            () if n_dims_per_step == -1 else (1, 4),
            tune=n_dims_per_step != -1,
            doc="dims trained per step (-1: all)",
        ),
    )
