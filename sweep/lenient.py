"""Reading a spec leniently, so that one pass reports every error: the engine behind `spec.parse_spec`.

pydantic runs a model's own checks only when all its fields are valid. To report an unknown loss
beside a missing name, or the batch and the workers beside a bad eval set, the spec is read again
field by field: a field that fails its own check becomes `BROKEN`, and the checks that need it are
skipped (its own error is reported instead). Only the `BrokenField` such a field raises is caught:
a check that fails for any other reason is a bug, and it surfaces.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError


class BrokenField(TypeError):
    """A check touched a field that failed its own check (or is missing) in a spec read leniently."""


class _Broken:
    """A field that failed its own check: any use of it raises BrokenField."""

    def _refuse(self, *args: Any) -> Any:
        raise BrokenField("a broken field")

    __getattr__ = __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse
    __iter__ = __len__ = __contains__ = __mod__ = __rmod__ = __hash__ = _refuse


BROKEN = _Broken()


def given(value: Any) -> bool:
    """Whether an optional field is set (a broken one is neither set nor unset: BrokenField)."""
    if value is BROKEN:
        raise BrokenField("a broken field")
    return value is not None


def each(checks: list[Callable[[], list]], lenient: bool) -> list:
    """The problems each check finds; `lenient`: a check that needs a broken field is skipped."""
    found = []
    for check in checks:
        try:
            found += check()
        except BrokenField:
            if not lenient:
                raise
    return found


class SectionProblems(ValueError):
    """A section's values that are wrong together: (field, message) pairs, reported with their paths."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items
        super().__init__("; ".join(f"{field}: {message}" if field else message for field, message in items))


def members(annotation: Any) -> list[Any]:
    """The types an annotation admits, unions and Annotated unwrapped."""
    args = get_args(annotation)
    if not args:
        return [annotation]
    return [m for a in args for m in members(a)]


def annotation(field: Any) -> Any:
    """A model field's type with its checks (pydantic keeps them apart, in `metadata`)."""
    from typing import Annotated

    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


def lenient(
    cls: type[BaseModel],
    data: Any,
    loc: list,
    section: type[BaseModel],
    root_checks: Callable[[Any], list[str]] | None = None,
) -> tuple[Any, list[str]]:
    """`data` as a `cls` whose broken (or missing required) fields are BROKEN, and what its checks
    find in the rest: each `section`'s `problems(lenient=True)`, and `root_checks` on the root."""
    try:
        return TypeAdapter(cls).validate_python(data), []
    except ValidationError:
        pass
    if not isinstance(data, dict):
        return BROKEN, []
    values, found = {}, []
    for name, field in cls.model_fields.items():
        if name not in data:
            values[name] = BROKEN if field.is_required() else field.get_default(call_default_factory=True)
            continue
        try:
            values[name] = TypeAdapter(annotation(field)).validate_python(data[name])
        except ValidationError:
            kinds = [m for m in members(field.annotation) if m is not type(None)]
            inner = kinds[0] if len(kinds) == 1 and isinstance(kinds[0], type) else None
            inner = inner if inner is not None and issubclass(inner, section) else None
            values[name], more = lenient(inner, data[name], loc + [name], section) if inner else (BROKEN, [])
            found += more
    partial = cls.model_construct(**values)
    if root_checks is not None:
        found += root_checks(partial)
    else:
        problems = each([lambda: partial.problems(lenient=True)], lenient=True)
        found += [located(loc, field, text) for field, text in problems]
    return partial, found


def describe(error: dict, root: type[BaseModel], union_tags: set[str]) -> list[str]:
    """A pydantic error as lossweep's 'field.path: message (and the fix)' lines."""
    loc = [part for part in error["loc"] if part not in union_tags]
    where = path(loc)
    kind, value = error["type"], error.get("input")
    if kind == "value_error":
        cause = error["ctx"]["error"]
        if isinstance(cause, SectionProblems):
            return [
                f"{path(loc + field.split('.')) if field else where or 'spec'}: {message}"
                for field, message in cause.items
            ]
        return [f"{where}: {cause}"]
    if kind == "missing":
        parent = model_at(root, loc[:-1])
        field = parent.model_fields.get(loc[-1]) if parent else None
        is_section = field is not None and any(
            isinstance(m, type) and issubclass(m, BaseModel) for m in members(field.annotation)
        )
        return [f"{where}: required; set it to {'a mapping' if is_section else 'a value'}"]
    if kind == "extra_forbidden":
        parent = model_at(root, loc[:-1])
        valid = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return [f"{where}: unknown key; {hint}valid keys: {', '.join(valid)}"]
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return [f"{where}: {value!r} is not one of {options}{hint}"]
    expected = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string"}
    expected |= {"dict": "a mapping", "model": "a mapping", "tuple": "a list", "list": "a list"}
    for prefix, text in expected.items():
        if kind.startswith(prefix):
            return [f"{where}: expected {text}, got {value!r}"]
    return [f"{where}: {error['msg']}"]


def located(loc: list, field: str, text: str) -> str:
    """A section's problem with its path: the section's location, then the field inside it."""
    return f"{path(loc + field.split('.')) if field else path(loc) or 'spec'}: {text}"


def path(loc: list) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def model_at(root: type[BaseModel], loc: list) -> type[BaseModel] | None:
    """The model class at a location of a spec (for the valid keys of an unknown one)."""
    model: Any = root
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = next((a for a in members(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model
