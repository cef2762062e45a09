"""Typed values of a recipe: a section's mapping checked against a dataclass (wrong types and
unknown keys are one-line errors naming the key), and what no recipe may hold anywhere."""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from typing import Any

from ..errors import HFTransferError
from ..rundir import HF_TOKEN


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false",
                "dict": "a mapping", "list": "a list"}.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the obvious cases (int -> float,
    "2e-4" -> 2e-4). Raise a one-line error naming ``where`` otherwise."""
    if tp is Any or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the precise one
            return coerce(value, options[0], where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except HFTransferError as exc:
                errors.append(exc)
        raise HFTransferError(
            f"{where} must be {' or '.join(_type_name(a) for a in args if a is not type(None))}, "
            f"got {quote(value)}"
        )
    if origin is not None:  # dict[...] / list[...]
        if not isinstance(value, origin):
            raise HFTransferError(f"{where} must be {_type_name(origin)}, got {quote(value)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
            except ValueError:
                pass
        if number is not None and not math.isfinite(number):  # "nan", "inf", 1e400
            raise HFTransferError(f"{where} is {quote(value)}: numbers in a recipe must be finite")
        if number is not None:
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:
        return value
    raise HFTransferError(f"{where} must be {_type_name(tp)}, got {quote(value)}")


def build(cls: type, data: Any, where: str, skip: tuple[str, ...] = ()) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HFTransferError(f"{where} must be a mapping, got {quote(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in skip}
    internal = ("task_options", "strategy_options", "members")
    public = sorted([n for n in fields if n not in internal] + list(skip))
    kwargs = {}
    for key, value in data.items():
        if key in skip:
            continue
        if not isinstance(key, str) or key not in fields or key in internal:
            raise HFTransferError(
                f"unknown key {_join(where, key)!r}; allowed keys: {', '.join(public)}"
            )
        kwargs[key] = coerce(value, hints[key], _join(where, key))
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required option is missing
        raise HFTransferError(f"{where}: {exc}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def quote(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error quotes what it refuses, never a
    whole (possibly huge) value."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxdict = 6
    short.maxlevel = 2
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def clip(text: str, limit: int = 300) -> str:
    """A message from a library, cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- what no recipe may hold

MAX_RECIPE_VALUES = 100_000
"""More values than this (after YAML aliases are expanded) is no recipe but an alias bomb."""
MAX_DEPTH = 32
"""Deeper nesting than this is no recipe (its sections are a few levels deep)."""


def check_tree(data: Any) -> None:
    """Refuse what no recipe section may hold, wherever it is: numbers that are not finite, NUL
    characters or text that is not UTF-8, strings that look like access tokens (the recipe is
    saved with the run and pushed with it), keys that are not plain values, a value that holds
    itself (a YAML alias inside its own anchor), nesting deeper than a recipe needs, and more
    values than it could need (YAML alias expansion)."""
    seen = 0
    # (where, value, depth, the containers it sits in: a cycle would come back to one of them)
    stack: list[tuple[str, Any, int, tuple[int, ...]]] = [("", data, 0, ())]
    while stack:
        where, value, depth, inside = stack.pop()
        seen += 1
        shown = where or "the recipe"
        if seen > MAX_RECIPE_VALUES:
            raise HFTransferError(
                f"the recipe expands to more than {MAX_RECIPE_VALUES:,} values (YAML aliases?); "
                "a recipe is a short list of settings")
        if isinstance(value, float) and not math.isfinite(value):
            raise HFTransferError(f"{shown} is {value}: numbers in a recipe must be finite")
        if isinstance(value, str):
            _check_text(value, shown)
        elif isinstance(value, (dict, list, tuple)):
            if id(value) in inside:
                raise HFTransferError(f"{shown} contains itself (a YAML alias inside its own anchor)")
            if depth >= MAX_DEPTH:
                raise HFTransferError(f"{shown} is nested more than {MAX_DEPTH} levels deep; a recipe "
                                      "is a short list of settings")
            inside = inside + (id(value),)
            if isinstance(value, dict):
                for key, child in value.items():
                    if not isinstance(key, (str, int, float, bool)) and key is not None:
                        raise HFTransferError(f"a key under {shown} is not a plain value ({quote(key)})")
                    if isinstance(key, str):
                        _check_text(key, f"a key under {shown}")
                    stack.append((_join(where, key), child, depth + 1, inside))
            else:
                stack.extend((f"{shown}[{i}]", child, depth + 1, inside) for i, child in enumerate(value))


def _check_text(value: str, shown: str) -> None:
    if "\x00" in value:
        raise HFTransferError(f"{shown} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HFTransferError(f"{shown} is not valid UTF-8 text") from None
    if HF_TOKEN.search(value):
        raise HFTransferError(
            f"{shown} looks like a Hugging Face access token; tokens never go in a recipe "
            f"(it is saved with the run): {TOKEN_HINT}")


TOKEN_HINT = "log in with `hf auth login` or set the HF_TOKEN environment variable"


def check_seed(value: Any, where: str) -> None:
    """Seeds feed numpy, which takes 0 .. 2**32 - 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 32:
        raise HFTransferError(f"{where} must be a whole number from 0 to {2 ** 32 - 1}, got {quote(value)}")


