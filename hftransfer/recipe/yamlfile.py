"""Reading recipe files: YAML 1.2 scalars, duplicate keys refused, ``key.path=value`` overrides."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import HFTransferError


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise HFTransferError(f"recipe file {str(path)!r} does not exist")
    if path.is_dir():
        raise HFTransferError(f"recipe {str(path)!r} is a directory; pass a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise HFTransferError(f"recipe {str(path)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise HFTransferError(f"cannot read recipe {str(path)!r}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HFTransferError(f"recipe {str(path)!r} is not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise HFTransferError(f"recipe {str(path)!r} is nested too deeply; a recipe is a short list "
                              "of settings") from None
    if data is None:
        raise HFTransferError(f"recipe {str(path)!r} is empty")
    if not isinstance(data, dict):
        raise HFTransferError(f"recipe {str(path)!r} must be a YAML mapping of sections")
    return data


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: ``2e-4`` is a float (YAML 1.1 wants ``2.0e-4``) and only
    true/false are booleans (so ``save_strategy: no`` stays the string "no")."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    # PyYAML keeps the last of two equal keys silently; in a recipe that hides a mistake (two
    # tasks with one name, a learning rate given twice).
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:  # `? [a, b]`
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given at line {seen[key].line + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """An override's value, typed as YAML would type it (``2e-4`` -> float, ``[a,b]`` -> list)."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else ""
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise HFTransferError(f"override value {text[:40]!r}... is nested too deeply") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to a recipe mapping (a new dict is returned)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise HFTransferError(
                f"bad override {item!r}: write key.path=value, e.g. train.learning_rate=2e-4"
            )
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise HFTransferError(f"bad override {item!r}: {where} is not a mapping")
            node = child
        node[parts[-1]] = parse_value(raw)
    return data


