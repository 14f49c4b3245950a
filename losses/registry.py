"""The loss catalogue: one entry per loss class of `sentence_transformers.sentence_transformer.losses`.

An entry says what data the loss takes, its hyperparameters (default and search range), whether it
uses in-batch negatives, which class runs it on several workers, and what else it needs. A
`LossConfig` (names and numbers only) plus a model is all `build_loss` needs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses as st_losses
from torch import nn

from . import gather, params
from .formats import InputFormat, LabelKind, num_classes
from .params import Param

PAIRS = InputFormat(("anchor", "positive"))
PAIRS_OR_TUPLES = InputFormat(("anchor", "positive"), more="negative")
TRIPLETS = InputFormat(("anchor", "positive", "negative"))
SCORED_PAIRS = InputFormat(("sentence1", "sentence2"), LabelKind.SCORE)
BINARY_PAIRS = InputFormat(("sentence1", "sentence2"), LabelKind.BINARY)
CLASS_TEXTS = InputFormat(("text",), LabelKind.CLASS)
ANY_TEXTS = InputFormat(("text",), more="text")


class Sampler(str, Enum):
    """How a loss's global batches are drawn (`lossweep.sweep.sampler` builds them across all workers)."""

    RANDOM = "random"
    NO_DUPLICATES = "no_duplicates"  # no text twice in a batch: a duplicate would be a false negative
    GROUP_BY_LABEL = "group_by_label"  # every label at least twice: batch-triplet losses need positives

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LossConfig:
    """A loss by name with its parameters; `base` is the wrapped loss of a modifier (Matryoshka...)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    base: LossConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "params": dict(self.params)}
        if self.base is not None:
            out["base"] = self.base.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LossConfig:
        base = data.get("base")
        return cls(data["name"], dict(data.get("params") or {}), None if base is None else cls.from_dict(base))

    @property
    def leaf(self) -> LossConfig:
        """The loss that takes the data: a modifier's base (all the way down), else this one."""
        return self if self.base is None else self.base.leaf

    def label(self) -> str:
        """Short display name, e.g. 'MatryoshkaLoss(MultipleNegativesRankingLoss)'."""
        return self.name if self.base is None else f"{self.name}({self.base.label()})"


@dataclass(frozen=True)
class LossEntry:
    """What lossweep knows about one sentence-transformers loss."""

    name: str
    cls: type[nn.Module]
    summary: str
    formats: tuple[InputFormat, ...]
    params: tuple[Param, ...] = ()
    in_batch: bool = False
    multi_worker: type[nn.Module] | None = None
    native_gather: bool = False
    needs: tuple[str, ...] = ()
    sampler: Sampler = Sampler.RANDOM
    modifier: bool = False
    constraints: Callable[[dict[str, Any]], list[str]] | None = None
    build: Callable[..., nn.Module] | None = None
    # What the entry knows that a sweep or a modifier needs to know:
    same_objective_as: str | None = None  # a GradCache twin: same objective, less memory
    truncates: bool = False  # a modifier that trains the base on truncated embeddings (Matryoshka)
    cuts_layers: bool = False  # a modifier that trains the base on earlier layers (AdaptiveLayer)
    breaks_truncation: str | None = None  # why truncated embeddings break this loss, if they do
    named_components: bool = False  # returns a dict of loss parts, which no modifier can weight
    gradient_cache: Callable[[Mapping[str, Any]], bool] | None = None  # back-propagates from a hook (GradCache)
    label_range: tuple[float, float] | None = None  # scores the loss regresses onto (a cosine: [-1, 1])

    @property
    def distributed_class(self) -> type[nn.Module]:
        """The class that trains on several workers exactly as one worker on the global batch."""
        return self.multi_worker or self.cls

    def param(self, name: str) -> Param:
        return next(param for param in self.params if param.name == name)

    def defaults(self) -> dict[str, Any]:
        return {param.name: param.default for param in self.params}

    def refuses(self, base: LossConfig) -> str | None:
        """Why this modifier cannot wrap `base`, or None. Which pairs fail was found by building every
        modifier around every loss (tests/losses/test_modifiers.py fails if the entries and reality disagree)."""
        if not self.modifier:
            return f"{self.name} is not a modifier and takes no base loss"
        base_entry = LOSSES.get(base.name)
        if base_entry is None:
            return None  # reported as an unknown loss
        if base_entry.modifier:
            return f"{self.name} cannot wrap another modifier ({base.name}); give it a plain loss"
        if base_entry.named_components:
            return (
                f"{self.name} cannot wrap {base.name}: it returns named loss components, which modifiers cannot weight"
            )
        if self.truncates and base_entry.breaks_truncation:
            return f"{self.name} cannot wrap {base.name}: {base_entry.breaks_truncation}"
        if self.cuts_layers and base_entry.gradient_cache and base_entry.gradient_cache(base.params):
            return (
                f"{self.name} cannot wrap {base.name}: gradient-caching losses back-propagate from a hook "
                "after the layer decorator is gone. Use the non-cached variant "
                "(or MegaBatchMarginLoss with use_mini_batched_version: false)"
            )
        return None

    def required_params(self) -> list[str]:
        """Parameters with no default that works: a spec must name them (a guide model)."""
        return [param.name for param in self.params if param.required]

    def from_data(self, params: Mapping[str, Any], data) -> dict[str, Any]:
        """The parameters left unset that the training data determines (SoftmaxLoss's num_labels)."""
        return {
            param.name: param.from_data(data)
            for param in self.params
            if param.from_data is not None and params.get(param.name) is None
        }


TRUNCATED_SECOND_ENCODER = "its second encoder is not truncated: the two sizes differ"


def _always(params: Mapping[str, Any]) -> bool:
    return True


def _mini_batched(params: Mapping[str, Any]) -> bool:
    return bool(params.get("use_mini_batched_version", True))


def _mnrl_constraints(values: dict[str, Any]) -> list[str]:
    directions = set(values.get("directions") or ())
    if values.get("partition_mode") == "per_direction" and directions & {"query_to_query", "doc_to_doc"}:
        return [
            "partition_mode 'per_direction' cannot be combined with the 'query_to_query' or 'doc_to_doc' "
            "directions (their candidates never contain the positive); use partition_mode 'joint'"
        ]
    return []


def _gor_constraints(values: dict[str, Any]) -> list[str]:
    if not values.get("mean_weight") and not values.get("second_moment_weight"):
        return ["at least one of mean_weight or second_moment_weight must be non-zero"]
    return []


def _matryoshka_constraints(values: dict[str, Any]) -> list[str]:
    dims, weights = values.get("matryoshka_dims"), values.get("matryoshka_weights")
    if dims is not None and weights is not None and len(dims) != len(weights):
        return [f"matryoshka_weights has {len(weights)} entries but matryoshka_dims has {len(dims)}"]
    return []


def _softmax_constraints(values: dict[str, Any]) -> list[str]:
    keys = ("concatenation_sent_rep", "concatenation_sent_difference", "concatenation_sent_multiplication")
    return [] if any(values.get(k) for k in keys) else [f"at least one of {', '.join(keys)} must be true"]


def default_matryoshka_dims(dim: int) -> list[int]:
    """The model's size, then powers of two below it down to 64 (or to a quarter for small models)."""
    floor = min(64, max(1, dim // 4))
    dims, power = [dim], 1
    while power * 2 < dim:
        power *= 2
    while power >= floor:
        if power < dim:
            dims.append(power)
        power //= 2
    return dims


def _build_softmax(cls, model: SentenceTransformer, kwargs: dict[str, Any], **_) -> nn.Module:
    if kwargs.get("num_labels") is None:
        raise ValueError("SoftmaxLoss needs num_labels: set it, or train on a class-labelled dataset to infer it")
    return cls(model, embedding_dimension=model.get_embedding_dimension(), **kwargs)


def _build_gist(cls, model: SentenceTransformer, kwargs: dict[str, Any], load_model, **_) -> nn.Module:
    guide = kwargs.pop("guide")
    if guide is None:
        raise ValueError(f"{cls.__name__} needs a guide model: set params.guide to a model path or hub id")
    guide_model = load_model(guide) if isinstance(guide, str) else guide
    guide_model.requires_grad_(False)
    return cls(model, guide_model, **kwargs)


def _build_matryoshka(cls, model: SentenceTransformer, kwargs: dict[str, Any], base: nn.Module, **_) -> nn.Module:
    if kwargs.get("matryoshka_dims") is None:
        kwargs["matryoshka_dims"] = default_matryoshka_dims(model.get_embedding_dimension())
    return cls(model, base, **kwargs)


def _build_adaptive(cls, model: SentenceTransformer, kwargs: dict[str, Any], base: nn.Module, **_) -> nn.Module:
    return cls(model, base, **kwargs)


def _entries() -> list[LossEntry]:
    mnrl_params = params.mnrl_family(cached=False, symmetric=False)
    return [
        LossEntry(
            "AdaptiveLayerLoss",
            st_losses.AdaptiveLayerLoss,
            "Trains the base loss on earlier layers too, so the model can be cut to fewer layers.",
            formats=(),
            params=params.adaptive_layer(),
            modifier=True,
            build=_build_adaptive,
            cuts_layers=True,
        ),
        LossEntry(
            "AnglELoss",
            st_losses.AnglELoss,
            "CoSENT ranking of pairs by angle difference in complex space.",
            formats=(SCORED_PAIRS, InputFormat(("anchor", "positive", "negative"), more="negative")),
            params=(params.scale(),),
            in_batch=True,
            multi_worker=gather.GatheredAnglELoss,
        ),
        LossEntry(
            "BatchAllTripletLoss",
            st_losses.BatchAllTripletLoss,
            "Mean over all valid triplets mined in the batch.",
            formats=(CLASS_TEXTS,),
            params=params.batch_triplet(margin=True),
            in_batch=True,
            multi_worker=gather.GatheredBatchAllTripletLoss,
            sampler=Sampler.GROUP_BY_LABEL,
        ),
        LossEntry(
            "BatchHardSoftMarginTripletLoss",
            st_losses.BatchHardSoftMarginTripletLoss,
            "Hardest positive and negative per anchor, soft margin (no margin to tune).",
            formats=(CLASS_TEXTS,),
            params=params.batch_triplet(margin=False),
            in_batch=True,
            multi_worker=gather.GatheredBatchHardSoftMarginTripletLoss,
            sampler=Sampler.GROUP_BY_LABEL,
        ),
        LossEntry(
            "BatchHardTripletLoss",
            st_losses.BatchHardTripletLoss,
            "Hardest positive and negative per anchor in the batch.",
            formats=(CLASS_TEXTS,),
            params=params.batch_triplet(margin=True),
            in_batch=True,
            multi_worker=gather.GatheredBatchHardTripletLoss,
            sampler=Sampler.GROUP_BY_LABEL,
        ),
        LossEntry(
            "BatchSemiHardTripletLoss",
            st_losses.BatchSemiHardTripletLoss,
            "Semi-hard negatives (farther than the positive, within the margin) mined in the batch.",
            formats=(CLASS_TEXTS,),
            params=params.batch_triplet(margin=True),
            in_batch=True,
            multi_worker=gather.GatheredBatchSemiHardTripletLoss,
            sampler=Sampler.GROUP_BY_LABEL,
        ),
        LossEntry(
            "CachedGISTEmbedLoss",
            st_losses.CachedGISTEmbedLoss,
            "GIST with GradCache: guide-filtered in-batch negatives at large batch, bounded memory.",
            formats=(PAIRS_OR_TUPLES,),
            params=params.gist_family(cached=True),
            in_batch=True,
            multi_worker=gather.GatheredCachedGISTEmbedLoss,
            needs=("guide model",),
            sampler=Sampler.NO_DUPLICATES,
            build=_build_gist,
            same_objective_as="GISTEmbedLoss",
            gradient_cache=_always,
        ),
        LossEntry(
            "CachedMultipleNegativesRankingLoss",
            st_losses.CachedMultipleNegativesRankingLoss,
            "MNRL with GradCache: the same loss at any batch size in bounded memory.",
            formats=(PAIRS_OR_TUPLES,),
            params=params.mnrl_family(cached=True, symmetric=False),
            in_batch=True,
            native_gather=True,
            sampler=Sampler.NO_DUPLICATES,
            constraints=_mnrl_constraints,
            same_objective_as="MultipleNegativesRankingLoss",
            gradient_cache=_always,
        ),
        LossEntry(
            "CachedMultipleNegativesSymmetricRankingLoss",
            st_losses.CachedMultipleNegativesSymmetricRankingLoss,
            "Symmetric MNRL (query->doc and doc->query) with GradCache.",
            formats=(PAIRS,),
            params=params.mnrl_family(cached=True, symmetric=True),
            in_batch=True,
            native_gather=True,
            sampler=Sampler.NO_DUPLICATES,
            same_objective_as="MultipleNegativesSymmetricRankingLoss",
            gradient_cache=_always,
        ),
        LossEntry(
            "ContrastiveLoss",
            st_losses.ContrastiveLoss,
            "Pulls positive pairs together, pushes negatives past a margin.",
            formats=(BINARY_PAIRS,),
            params=(
                Param("distance_metric", "choice", "cosine", objects=params.SIAMESE_DISTANCE),
                Param("margin", "float", 0.5, (0.1, 2.0), log=True, gt=0),
                Param("size_average", "bool", True, tune=False, doc="mean (true) or sum over the batch"),
            ),
            multi_worker=gather.GatheredContrastiveLoss,
        ),
        LossEntry(
            "ContrastiveTensionLoss",
            st_losses.ContrastiveTensionLoss,
            "Unsupervised: two encoders agree on identical sentences (label 1), not on others (0).",
            formats=(InputFormat(("sentence1", "sentence2"), LabelKind.BINARY),),
            multi_worker=gather.GatheredContrastiveTensionLoss,
            breaks_truncation=TRUNCATED_SECOND_ENCODER,
        ),
        LossEntry(
            "ContrastiveTensionLossInBatchNegatives",
            st_losses.ContrastiveTensionLossInBatchNegatives,
            "Unsupervised: two encoders of the same sentence are positives, the rest of the batch negatives.",
            formats=(InputFormat(("text",)),),
            params=(params.scale(), params.similarity()),
            in_batch=True,
            multi_worker=gather.GatheredContrastiveTensionLossInBatchNegatives,
            sampler=Sampler.NO_DUPLICATES,
            breaks_truncation=TRUNCATED_SECOND_ENCODER,
        ),
        LossEntry(
            "CoSENTLoss",
            st_losses.CoSENTLoss,
            "Ranks every pair of the batch by its gold score (consistent sentence).",
            formats=(SCORED_PAIRS,),
            params=(params.scale(), params.pairwise_similarity("pairwise_cos_sim", ("pairwise_cos_sim",))),
            in_batch=True,
            multi_worker=gather.GatheredCoSENTLoss,
        ),
        LossEntry(
            "CosineSimilarityLoss",
            st_losses.CosineSimilarityLoss,
            "Regresses the cosine of each pair onto its score.",
            formats=(SCORED_PAIRS,),
            params=(Param("loss_fct", "choice", "mse", objects=params.REGRESSION_LOSS),),
            label_range=(-1.0, 1.0),
        ),
        LossEntry(
            "DenoisingAutoEncoderLoss",
            st_losses.DenoisingAutoEncoderLoss,
            "TSDAE: decode the original sentence from the embedding of a damaged copy.",
            formats=(InputFormat(("damaged", "original")),),
            params=(
                Param("decoder_name_or_path", "str", None, tune=False, doc="null: the encoder itself (tied)"),
                Param("tie_encoder_decoder", "bool", True, tune=False),
            ),
            multi_worker=gather.TokenWeightedDenoisingAutoEncoderLoss,
            needs=("decoder (the encoder by default)",),
            breaks_truncation="its decoder cross-attends to full-size sentence embeddings",
        ),
        LossEntry(
            "DistillKLDivLoss",
            st_losses.DistillKLDivLoss,
            "KL divergence from teacher to student candidate scores.",
            formats=(InputFormat(("query", "positive", "negative"), LabelKind.TEACHER_SCORES, more="negative"),),
            params=(
                params.pairwise_similarity("pairwise_dot_score", ("pairwise_dot_score", "pairwise_cos_sim")),
                Param("temperature", "float", 1.0, (0.05, 5.0), log=True, gt=0),
                Param("student_temperature", "float", None, tune=False, gt=0),
                Param("teacher_temperature", "float", None, tune=False, gt=0),
            ),
            needs=("teacher scores",),
        ),
        LossEntry(
            "EmbedDistillLoss",
            st_losses.EmbedDistillLoss,
            "Matches the student's embeddings to a teacher's.",
            formats=(InputFormat(("text",), LabelKind.TEACHER_EMBEDDINGS, more="text"),),
            params=(
                Param("distance_metric", "choice", "cosine", choices=("mse", "l2", "cosine")),
                Param("projection_dim", "int", None, tune=False, gt=0, doc="teacher size when it differs"),
            ),
            needs=("teacher embeddings",),
        ),
        LossEntry(
            "GISTEmbedLoss",
            st_losses.GISTEmbedLoss,
            "MNRL whose in-batch negatives a guide model filters for false negatives.",
            formats=(InputFormat(("anchor", "positive"), more="negative", max_more=1),),
            params=params.gist_family(cached=False),
            in_batch=True,
            multi_worker=gather.GatheredGISTEmbedLoss,
            needs=("guide model",),
            sampler=Sampler.NO_DUPLICATES,
            build=_build_gist,
        ),
        LossEntry(
            "GlobalOrthogonalRegularizationLoss",
            st_losses.GlobalOrthogonalRegularizationLoss,
            "Spreads embeddings out: penalises mean and second moment of in-batch similarities.",
            formats=(ANY_TEXTS,),
            params=(
                Param("similarity_fct", "choice", "cos_sim", objects=params.SIMILARITY, tune=False),
                Param("mean_weight", "float", 1.0, (0.1, 2.0), ge=0),
                Param("second_moment_weight", "float", 1.0, (0.1, 2.0), ge=0),
                Param("aggregation", "choice", "mean", choices=("mean", "sum")),
            ),
            in_batch=True,
            multi_worker=gather.GatheredGlobalOrthogonalRegularizationLoss,
            constraints=_gor_constraints,
            named_components=True,
        ),
        LossEntry(
            "MarginMSELoss",
            st_losses.MarginMSELoss,
            "Regresses the student's score margins onto a teacher's.",
            formats=(InputFormat(("query", "positive", "negative"), LabelKind.TEACHER_MARGINS, more="negative"),),
            params=(params.pairwise_similarity("pairwise_dot_score", ("pairwise_dot_score", "pairwise_cos_sim")),),
            needs=("teacher margins",),
        ),
        LossEntry(
            "MatryoshkaLoss",
            st_losses.MatryoshkaLoss,
            "Trains the base loss at several embedding sizes, so embeddings can be truncated.",
            formats=(),
            params=params.matryoshka(n_dims_per_step=-1),
            modifier=True,
            constraints=_matryoshka_constraints,
            build=_build_matryoshka,
            truncates=True,
        ),
        LossEntry(
            "Matryoshka2dLoss",
            st_losses.Matryoshka2dLoss,
            "Matryoshka over embedding sizes and over layers at once.",
            formats=(),
            params=params.matryoshka(n_dims_per_step=1) + params.adaptive_layer(),
            modifier=True,
            constraints=_matryoshka_constraints,
            build=_build_matryoshka,
            truncates=True,
            cuts_layers=True,
        ),
        LossEntry(
            "MegaBatchMarginLoss",
            st_losses.MegaBatchMarginLoss,
            "Margin loss against the hardest in-batch negative; meant for very large batches.",
            formats=(PAIRS,),
            params=(
                Param("positive_margin", "float", 0.8, (0.5, 1.0)),
                Param("negative_margin", "float", 0.3, (0.0, 0.5)),
                Param("use_mini_batched_version", "bool", True, tune=False),
                params.mini_batch_size(50),
            ),
            in_batch=True,
            multi_worker=gather.GatheredMegaBatchMarginLoss,
            sampler=Sampler.NO_DUPLICATES,
            gradient_cache=_mini_batched,
        ),
        LossEntry(
            "MSELoss",
            st_losses.MSELoss,
            "Mean squared error to teacher embeddings (multilingual distillation).",
            formats=(InputFormat(("text",), LabelKind.TEACHER_EMBEDDINGS, more="text"),),
            params=(Param("projection_dim", "int", None, tune=False, gt=0),),
            needs=("teacher embeddings",),
        ),
        LossEntry(
            "MultipleNegativesRankingLoss",
            st_losses.MultipleNegativesRankingLoss,
            "InfoNCE: each anchor against its positive and every other candidate of the batch.",
            formats=(PAIRS_OR_TUPLES,),
            params=mnrl_params,
            in_batch=True,
            native_gather=True,
            sampler=Sampler.NO_DUPLICATES,
            constraints=_mnrl_constraints,
        ),
        LossEntry(
            "MultipleNegativesSymmetricRankingLoss",
            st_losses.MultipleNegativesSymmetricRankingLoss,
            "InfoNCE in both directions: query->doc and doc->query.",
            formats=(PAIRS,),
            params=params.mnrl_family(cached=False, symmetric=True),
            in_batch=True,
            native_gather=True,
            sampler=Sampler.NO_DUPLICATES,
        ),
        LossEntry(
            "OnlineContrastiveLoss",
            st_losses.OnlineContrastiveLoss,
            "Contrastive loss on the hard positive and hard negative pairs of the batch only.",
            formats=(BINARY_PAIRS,),
            params=(
                Param("distance_metric", "choice", "cosine", objects=params.SIAMESE_DISTANCE),
                Param("margin", "float", 0.5, (0.1, 2.0), log=True, gt=0),
            ),
            in_batch=True,
            multi_worker=gather.GatheredOnlineContrastiveLoss,
        ),
        LossEntry(
            "SoftmaxLoss",
            st_losses.SoftmaxLoss,
            "Classifier on (u, v, |u-v|) of a pair, as in SBERT's NLI training.",
            formats=(InputFormat(("sentence1", "sentence2"), LabelKind.CLASS),),
            params=(
                Param(
                    "num_labels",
                    "int",
                    None,
                    tune=False,
                    gt=0,
                    from_data=num_classes,
                    doc="null: the number of classes in the data",
                ),
                Param("concatenation_sent_rep", "bool", True),
                Param("concatenation_sent_difference", "bool", True),
                Param("concatenation_sent_multiplication", "bool", False),
            ),
            needs=("num_labels (from the data)",),
            constraints=_softmax_constraints,
            build=_build_softmax,
            breaks_truncation="its classifier takes full-size embeddings",
        ),
        LossEntry(
            "TripletLoss",
            st_losses.TripletLoss,
            "Anchor closer to its positive than to its negative by a margin.",
            formats=(TRIPLETS,),
            params=(
                Param("distance_metric", "choice", "euclidean", objects=params.TRIPLET_DISTANCE),
                Param("triplet_margin", "float", 5.0, (0.1, 10.0), log=True, gt=0),
            ),
        ),
    ]


LOSSES: dict[str, LossEntry] = {entry.name: entry for entry in _entries()}


class UnknownLossError(KeyError):
    """An unknown loss name; the message lists the closest known names."""

    def __str__(self) -> str:
        return self.args[0]


def get_entry(name: str) -> LossEntry:
    """The registry entry for `name`, or an error that suggests the closest names."""
    try:
        return LOSSES[name]
    except KeyError:
        close = difflib.get_close_matches(name, LOSSES, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `lossweep losses` for the list"
        raise UnknownLossError(f"unknown loss {name!r}: {hint}") from None


MATRYOSHKA = "MatryoshkaLoss"  # what a spec's `matryoshka_dims` wraps its loss in


def with_matryoshka(config: LossConfig, dims: list[int]) -> LossConfig:
    """The loss trained at every embedding size of `dims` (prefixes of the embedding), as a spec's
    `matryoshka_dims` asks."""
    return LossConfig(MATRYOSHKA, {"matryoshka_dims": list(dims)}, config)


def replays_forward(config: LossConfig) -> bool:
    """Whether the loss (or the base a modifier wraps) back-propagates through a GradCache hook, which
    runs the model again inside the backward pass."""
    leaf = config.leaf
    cache = get_entry(leaf.name).gradient_cache
    return bool(cache and cache(leaf.params))


def config_errors(config: LossConfig, path: str = "loss") -> list[str]:
    """Every problem with a loss config, each prefixed with its field path (relative when `path` is
    empty); empty when valid."""

    def at(field: str) -> str:
        return f"{path}.{field}" if path else field

    try:
        entry = get_entry(config.name)
    except UnknownLossError as error:
        return [f"{at('name')}: {error}"]
    errors = []
    known = {param.name: param for param in entry.params}
    for key, value in config.params.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            errors.append(f"{at('params.' + key)}: {entry.name} has no parameter {key!r}; {hint}valid: {sorted(known)}")
            continue
        problem = known[key].error(known[key].normalise(value))
        if problem:
            errors.append(f"{at('params.' + key)}: {problem}")
    if entry.constraints and not errors:
        errors += [f"{at('params')}: {problem}" for problem in entry.constraints(resolve_params(entry, config.params))]
    if entry.modifier and config.base is None:
        errors.append(f"{at('base')}: {entry.name} wraps a base loss; add base: {{name: MultipleNegativesRankingLoss}}")
    elif config.base is not None:
        reason = entry.refuses(config.base)
        if reason:
            errors.append(f"{at('base')}: {reason}")
        errors += config_errors(config.base, at("base"))
    return errors


def resolve_params(entry: LossEntry, params: Mapping[str, Any]) -> dict[str, Any]:
    """The entry's defaults overridden by `params`, normalised (YAML lists to tuples and so on)."""
    values = entry.defaults()
    for key, value in params.items():
        values[key] = entry.param(key).normalise(value)
    return values


def build_loss(
    config: LossConfig,
    model: SentenceTransformer,
    *,
    distributed: bool | None = None,
    load_model: Callable[[str], SentenceTransformer] = SentenceTransformer,
) -> nn.Module:
    """Build the loss module for `config` around `model`.

    With `distributed` (default: a process group of more than one worker exists) every loss whose
    value couples the rows of a batch is built in its gathering form, so N workers with B rows each
    train exactly like one worker with N*B rows (see `losses.gather`).
    """
    errors = config_errors(config)
    if errors:
        raise ValueError("invalid loss config:\n  " + "\n  ".join(errors))
    if distributed is None:
        distributed = gather.world_size() > 1
    entry = get_entry(config.name)
    values = resolve_params(entry, config.params)
    kwargs = {key: entry.param(key).resolve(value) for key, value in values.items()}
    cls = entry.distributed_class if distributed else entry.cls
    if entry.native_gather:
        kwargs["gather_across_devices"] = distributed
    extra: dict[str, Any] = {"load_model": load_model}
    if config.base is not None:
        extra["base"] = build_loss(config.base, model, distributed=distributed, load_model=load_model)
    if entry.build is not None:
        return entry.build(cls, model, kwargs, **extra)
    return cls(model, **kwargs)
