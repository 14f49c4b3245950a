"""Read plain data (parsed YAML) into frozen dataclasses, collecting every error with its field path.

Each error names the field path, the bad value, what is allowed and, where it can, the fix; unknown
keys are errors (with a close match when there is one). Specs only ever hold names and numbers.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


@dataclasses.dataclass
class Problems:
    """Errors found so far, each 'path: message'."""

    items: list[str] = dataclasses.field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def __bool__(self) -> bool:
        return bool(self.items)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def parse(cls: type, data: Any, path: str, problems: Problems) -> Any:
    """Build dataclass `cls` from `data`; returns None (after recording why) when it cannot."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(path, f"expected a mapping of {cls.__name__} fields, got {data!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.add(_join(path, key), f"unknown key; {hint}valid keys: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        child = _join(path, name)
        if name in data:
            values[name] = convert(hints[name], data[name], child, problems)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.add(child, f"required; set it to {_type_name(hints[name])}")
            values[name] = None
    try:
        return cls(**{k: v for k, v in values.items() if v is not _INVALID})
    except TypeError:
        return None


_INVALID = object()


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def convert(tp: Any, value: Any, path: str, problems: Problems) -> Any:
    """Check `value` against annotation `tp` and convert (lists to tuples, dicts to dataclasses)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        attempt = Problems()
        for arg in args:
            converted = convert(arg, value, path, attempt)
            if not attempt:
                return converted
            attempt = Problems()
        problems.add(path, f"expected {_type_name(tp)}, got {value!r}")
        return _INVALID
    if origin is Literal:
        if value not in get_args(tp):
            close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.add(path, f"{value!r} is not one of {list(get_args(tp))}{hint}")
            return _INVALID
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            problems.add(path, f"expected {_type_name(tp)}, got {value!r}")
            return _INVALID
        item = get_args(tp)[0]
        return tuple(convert(item, v, _join(path, i), problems) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            problems.add(path, f"expected a mapping, got {value!r}")
            return _INVALID
        _, item = get_args(tp)
        return {k: convert(item, v, _join(path, k), problems) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        result = parse(tp, value, path, problems)
        return _INVALID if result is None else result
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 2e-5 as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tp) or (tp in (int, float) and isinstance(value, bool)):
        problems.add(path, f"expected {_type_name(tp)}, got {value!r}")
        return _INVALID
    return value


def to_data(obj: Any) -> Any:
    """A dataclass tree back to plain dicts and lists (for YAML, MLflow and Ray)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj
