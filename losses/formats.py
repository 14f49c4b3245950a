"""Input formats of the losses, what a dataset provides, and the check that pairs the two.

A loss takes text columns in a fixed order (anchor, positive, negatives...) and at most one label
column, named as sentence-transformers expects (`label`, `labels`, `score` or `scores`). The check
runs on a `datasets.Dataset` (features and values) or on bare `datasets.Features` (types only), so a
spec can be refused before any model is loaded.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

import datasets

LABEL_COLUMNS = ("label", "labels", "score", "scores")
"""The names sentence-transformers reads as the label column (any other column is a text input)."""


class LabelKind(str, Enum):
    """What a loss wants in the label column."""

    NONE = "none"
    BINARY = "binary"
    SCORE = "score"
    CLASS = "class"
    TEACHER_SCORES = "teacher_scores"
    TEACHER_MARGINS = "teacher_margins"
    TEACHER_EMBEDDINGS = "teacher_embeddings"

    @property
    def description(self) -> str:
        return _LABEL_DESCRIPTIONS[self]


_LABEL_DESCRIPTIONS = {
    LabelKind.NONE: "no label column",
    LabelKind.BINARY: "a 0/1 label (1 = similar pair)",
    LabelKind.SCORE: "a float similarity score",
    LabelKind.CLASS: "an integer class id",
    LabelKind.TEACHER_SCORES: "teacher scores, one float per candidate column",
    LabelKind.TEACHER_MARGINS: "teacher margins M(q,pos)-M(q,neg_i) (or the per-candidate teacher scores)",
    LabelKind.TEACHER_EMBEDDINGS: "teacher embeddings (a float vector per row, or per text column)",
}


@dataclass(frozen=True)
class InputFormat:
    """One column layout a loss accepts, as in the "Inputs" tables of sentence-transformers.

    `roles` are the required text columns in order; `more` names optional extra trailing text columns
    (hard negatives), of which at most `max_more` (None: any number) may follow.
    """

    roles: tuple[str, ...]
    label: LabelKind = LabelKind.NONE
    more: str | None = None
    max_more: int | None = None

    def accepts_texts(self, n: int) -> bool:
        extra = n - len(self.roles)
        if extra < 0:
            return False
        if self.more is None:
            return extra == 0
        return self.max_more is None or extra <= self.max_more

    def describe(self) -> str:
        columns = ", ".join(self.roles)
        if self.more is not None:
            columns += f"[, {self.more}]" if self.max_more == 1 else f"[, {self.more}...]"
        return f"({columns}) + {self.label.description}"


@dataclass
class DatasetShape:
    """What a dataset offers a loss: its text columns, its label column and what that label can be."""

    text_columns: list[str]
    label_column: str | None
    label_kinds: set[LabelKind]
    label_type: str
    label_length: int | None = None
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        texts = ", ".join(repr(c) for c in self.text_columns) or "none"
        label = "no label column" if self.label_column is None else f"label {self.label_column!r} ({self.label_type})"
        return f"text columns [{texts}] and {label}"


class DataFormatError(ValueError):
    """A dataset does not fit a loss; the message names the loss, the columns it needs and the fix."""


def _is_string(feature) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _float_sequence_length(feature) -> tuple[bool, int | None, int]:
    """(is a sequence of floats, its fixed length or None, nesting depth)."""
    depth, length = 0, None
    while isinstance(feature, (datasets.List, datasets.LargeList, list)):
        inner = feature[0] if isinstance(feature, list) else feature.feature
        if depth == 0:
            length = getattr(feature, "length", -1)
            length = None if length in (-1, None) else length
        feature, depth = inner, depth + 1
    ok = depth > 0 and isinstance(feature, datasets.Value) and feature.dtype.startswith("float")
    return ok, length, depth


def not_text_problem(column: str, feature, label_column: str | None) -> str:
    """A non-text column where a text column belongs; a number is most likely a misnamed label."""
    problem = f"column {column!r} holds {feature!r}, not text: every column except the label must be a string"
    numeric = isinstance(feature, (datasets.Value, datasets.ClassLabel)) and (
        isinstance(feature, datasets.ClassLabel) or feature.dtype.startswith(("float", "int", "uint", "bool"))
    )
    if numeric and label_column is None:
        new = "score" if isinstance(feature, datasets.Value) and feature.dtype.startswith("float") else "label"
        problem += (
            f"; if it is the label, name it {new!r} (sentence-transformers reads {', '.join(LABEL_COLUMNS)}): "
            f"in a spec `columns: {{{column}: {new}}}` on the data entry, "
            f"in Python dataset.rename_column({column!r}, {new!r})"
        )
    return problem


def inspect_dataset(data: datasets.Dataset | datasets.Features, sample: int = 10_000) -> DatasetShape:
    """Describe a dataset's columns as a loss sees them; value checks use up to `sample` rows."""
    features = data if isinstance(data, datasets.Features) else data.features
    rows = None if isinstance(data, datasets.Features) else data.select(range(min(len(data), sample)))
    label_column = next((c for c in features if c in LABEL_COLUMNS), None)
    text_columns = [c for c in features if c != label_column]
    problems = [not_text_problem(c, features[c], label_column) for c in text_columns if not _is_string(features[c])]
    if rows is not None:
        for column in text_columns:
            if not _is_string(features[column]):
                continue
            empty = sum(1 for text in rows[column] if text is None or not str(text).strip())
            if empty:
                problems.append(f"column {column!r} has {empty} empty or missing texts: drop or fill those rows")
    if label_column is None:
        return DatasetShape(text_columns, None, {LabelKind.NONE}, "none", problems=problems)

    feature = features[label_column]
    kinds: set[LabelKind] = set()
    length = None
    values = None if rows is None else rows[label_column]
    if isinstance(feature, datasets.ClassLabel):
        label_type = f"class label, {feature.num_classes} classes"
        kinds = {LabelKind.CLASS} | ({LabelKind.BINARY, LabelKind.SCORE} if feature.num_classes == 2 else set())
    elif isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint", "bool")):
        label_type = f"{feature.dtype}"
        kinds = {LabelKind.CLASS}
        if values is None or set(values) <= {0, 1}:
            kinds |= {LabelKind.BINARY, LabelKind.SCORE}
    elif isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
        label_type = f"{feature.dtype} score"
        kinds = {LabelKind.SCORE, LabelKind.TEACHER_MARGINS}
        if values is not None and any(v is None or math.isnan(v) for v in values):
            problems.append(f"label column {label_column!r} has missing or NaN values: drop those rows")
        if values is None or set(values) <= {0.0, 1.0}:
            kinds.add(LabelKind.BINARY)
    elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        label_type = "strings"
        example = "" if not values else f" (e.g. {values[0]!r})"
        problems.append(f"label column {label_column!r} holds strings{example}, not numbers")
    else:
        is_floats, length, depth = _float_sequence_length(feature)
        if values is not None and length is None and values:
            length = len(values[0])
        label_type = f"float vectors of length {length}" if is_floats else repr(feature)
        if is_floats and depth == 1:
            kinds = {LabelKind.TEACHER_SCORES, LabelKind.TEACHER_MARGINS, LabelKind.TEACHER_EMBEDDINGS}
        elif is_floats and depth == 2:
            kinds = {LabelKind.TEACHER_EMBEDDINGS}
        else:
            problems.append(f"label column {label_column!r} has an unsupported type {feature!r}")
    return DatasetShape(text_columns, label_column, kinds, label_type, length, problems)


def num_classes(data: datasets.Dataset) -> int:
    """Classes of the label column: a ClassLabel's count, else the largest id + 1."""
    label = next(c for c in data.column_names if c in LABEL_COLUMNS)
    feature = data.features[label]
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes
    return int(max(data[label])) + 1


def class_counts_problem(data: datasets.Dataset, label_column: str) -> str | None:
    """Batch-triplet losses need at least 2 classes with at least 2 examples each."""
    counts = Counter(data[label_column])
    usable = [c for c, n in counts.items() if n >= 2]
    if len(usable) < 2:
        return (
            f"label column {label_column!r} has {len(usable)} classes with 2 or more examples; "
            "a batch-triplet loss needs at least 2 such classes (anchor and positive share a class)"
        )
    return None


def mismatch(fmt: InputFormat, shape: DatasetShape) -> str | None:
    """Why `shape` does not fit `fmt`, or None when it does."""
    n = len(shape.text_columns)
    if not fmt.accepts_texts(n):
        return f"it takes {fmt.describe()}, but the dataset has {n} text columns"
    if fmt.label is LabelKind.NONE:
        if shape.label_column is not None:
            return f"it takes no label, but the dataset has label column {shape.label_column!r} ({shape.label_type})"
        return None
    if shape.label_column is None:
        return f"it needs a label column ({fmt.label.description}), but the dataset has none"
    if fmt.label not in shape.label_kinds:
        return f"it needs {fmt.label.description}, but label {shape.label_column!r} holds {shape.label_type}"
    n_candidates = n - 1
    if fmt.label is LabelKind.TEACHER_SCORES and shape.label_length not in (None, n_candidates):
        return (
            f"it needs {n_candidates} teacher scores per row (one per candidate column), "
            f"but label {shape.label_column!r} holds {shape.label_length}"
        )
    if fmt.label is LabelKind.TEACHER_MARGINS and LabelKind.SCORE in shape.label_kinds and n_candidates != 2:
        return (
            f"a single float margin per row fits (query, positive, negative) triplets only; with {n} text columns "
            f"it needs {n_candidates - 1} teacher margins or {n_candidates} teacher scores per row"
        )
    if (
        fmt.label is LabelKind.TEACHER_MARGINS
        and shape.label_length is not None
        and shape.label_length not in (n_candidates, n_candidates - 1)
    ):
        return (
            f"it needs {n_candidates - 1} teacher margins or {n_candidates} teacher scores per row, "
            f"but label {shape.label_column!r} holds {shape.label_length}"
        )
    return None
