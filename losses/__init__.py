"""The sentence-transformers loss catalogue behind one registry, with exact cross-worker gathering.

from lossweep.losses import LOSSES, LossConfig, build_loss, check_dataset
"""

from .fit import check_dataset, fit_report
from .formats import DataFormatError, InputFormat, LabelKind, inspect_dataset
from .gather import average_gradients
from .params import Param
from .registry import (
    LOSSES,
    LossConfig,
    LossEntry,
    Sampler,
    UnknownLossError,
    build_loss,
    config_errors,
    get_entry,
    replays_forward,
    with_matryoshka,
)

__all__ = [
    "LOSSES",
    "DataFormatError",
    "InputFormat",
    "LabelKind",
    "LossConfig",
    "LossEntry",
    "Param",
    "Sampler",
    "UnknownLossError",
    "average_gradients",
    "build_loss",
    "check_dataset",
    "config_errors",
    "fit_report",
    "get_entry",
    "inspect_dataset",
    "replays_forward",
    "with_matryoshka",
]
