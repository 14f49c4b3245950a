"""Which losses can train on a dataset, and a clear error for the ones that cannot."""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from .formats import (
    DataFormatError,
    DatasetShape,
    InputFormat,
    LabelKind,
    class_counts_problem,
    inspect_dataset,
    mismatch,
)
from .registry import LOSSES, LossConfig, LossEntry, Sampler, get_entry


@dataclass(frozen=True)
class Fit:
    """A loss fits a dataset through `format`; `reason` says why not when `format` is None."""

    loss: str
    format: InputFormat | None
    reason: str = ""
    fix: str = ""  # when the values, not the layout, are wrong: what to change

    @property
    def ok(self) -> bool:
        return self.format is not None


def _formats(config: LossConfig) -> tuple[LossEntry, tuple[InputFormat, ...]]:
    entry = get_entry(config.name)
    if entry.modifier:
        if config.base is None:
            raise ValueError(f"{entry.name} wraps a base loss; its data format is the base's")
        return entry, _formats(config.base)[1]
    return entry, entry.formats


def fit(config: LossConfig | str, data: datasets.Dataset | datasets.Features, shape: DatasetShape | None = None) -> Fit:
    """Whether the loss in `config` can train on `data`, and through which input format."""
    config = LossConfig(config) if isinstance(config, str) else config
    entry, formats = _formats(config)
    shape = shape or inspect_dataset(data)
    if shape.problems:
        return Fit(config.label(), None, "; ".join(shape.problems))
    reasons: list[tuple[str, str]] = []
    for fmt in formats:
        reason, fix = mismatch(fmt, shape), ""
        if reason is None and isinstance(data, datasets.Dataset):
            leaf = get_entry(config.base.name) if entry.modifier and config.base else entry
            if leaf.sampler == Sampler.GROUP_BY_LABEL:
                reason = class_counts_problem(data, shape.label_column)
            elif leaf.label_range is not None and shape.label_column is not None:
                reason, fix = label_range_problem(leaf, data, shape.label_column) or (None, "")
        if reason is None:
            return Fit(config.label(), fmt)
        reasons.append((reason, fix))
    reason, fix = min(reasons, key=lambda r: len(r[0]))
    return Fit(config.label(), None, reason, fix)


def label_range_problem(entry: LossEntry, data: datasets.Dataset, column: str) -> tuple[str, str] | None:
    """Scores outside what the loss regresses onto (STS Benchmark's 0-5 for a cosine in [-1, 1]):
    (reason, fix), or None."""
    low, high = entry.label_range
    values = [v for v in data.select(range(min(len(data), 10_000)))[column] if v is not None]
    if not values or (low <= min(values) and max(values) <= high):
        return None
    reason = (
        f"it regresses a cosine similarity onto the label, which must lie in [{low:g}, {high:g}], but label "
        f"{column!r} ranges {min(values):g} to {max(values):g}"
    )
    fix = (
        f"scale the label into [{low:g}, {high:g}] (e.g. score / {max(values):g}), or use a loss that ranks pairs by it"
    )
    return reason, fix


def fit_report(data: datasets.Dataset | datasets.Features) -> list[Fit]:
    """One `Fit` per plain loss of the catalogue (modifiers fit whatever their base fits)."""
    shape = inspect_dataset(data)
    return [fit(name, data, shape) for name, entry in LOSSES.items() if not entry.modifier]


def check_dataset(
    config: LossConfig | str, data: datasets.Dataset | datasets.Features, name: str = "the dataset"
) -> InputFormat:
    """The input format through which the loss takes `data`; a `DataFormatError` if it cannot.

    The error names the loss, the formats it takes, what the dataset has and how to fix it.
    """
    config = LossConfig(config) if isinstance(config, str) else config
    shape = inspect_dataset(data)
    result = fit(config, data, shape)
    if result.ok:
        return result.format
    _, formats = _formats(config)
    alternatives = [f.loss for f in fit_report(data) if f.ok]
    fix = _with_alternatives(result.fix, alternatives) if result.fix else _fix(formats, shape, alternatives)
    lines = [
        f"{config.label()} cannot train on {name}: {result.reason}.",
        "  it takes: " + " | ".join(fmt.describe() for fmt in formats),
        f"  found:    {shape.describe()}",
        f"  fix:      {fix}",
    ]
    raise DataFormatError("\n".join(lines))


def _with_alternatives(fix: str, alternatives: list[str]) -> str:
    return f"{fix}: {', '.join(alternatives)}" if alternatives else fix


def _fix(formats: tuple[InputFormat, ...], shape: DatasetShape, alternatives: list[str]) -> str:
    others = (
        f"or choose a loss that fits this data: {', '.join(alternatives)}"
        if alternatives
        else "no loss of the catalogue fits this data as it is"
    )
    if shape.label_type == "strings" and len(shape.problems) == 1:
        column = shape.label_column
        if LabelKind.CLASS in {fmt.label for fmt in formats}:
            return f"map the label strings to class ids: dataset.class_encode_column({column!r})"
        return f"map the label strings to numbers, e.g. dataset.map(lambda row: {{{column!r}: float(...)}}), {others}"
    if shape.problems:
        return f"{shape.problems[0]}"
    wants_label = {fmt.label for fmt in formats}
    if shape.label_column is not None and wants_label == {LabelKind.NONE}:
        return (
            f"drop the label column (dataset.remove_columns({shape.label_column!r})) if every row is a positive "
            f"example (rows labelled as negatives would be trained as positives), {others}"
        )
    if shape.label_column is None and LabelKind.NONE not in wants_label:
        kinds = " or ".join(sorted(k.description for k in wants_label))
        teacher = wants_label & {LabelKind.TEACHER_SCORES, LabelKind.TEACHER_MARGINS, LabelKind.TEACHER_EMBEDDINGS}
        hint = " (or set the spec's `teacher:` to a model that computes them)" if teacher else ""
        return f"add a 'label' column holding {kinds}{hint}, {others}"
    counts = sorted({len(fmt.roles) for fmt in formats})
    if all(not fmt.accepts_texts(len(shape.text_columns)) for fmt in formats):
        roles = " | ".join("(" + ", ".join(fmt.roles) + (", ..." if fmt.more else "") + ")" for fmt in formats)
        return (
            f"keep {' or '.join(map(str, counts))} text columns in the order {roles}, e.g. "
            f"dataset.select_columns([...]); {others}"
        )
    kinds = " or ".join(sorted(k.description for k in wants_label))
    return f"convert label {shape.label_column!r} to {kinds}, {others}"
