"""Name -> class registries for tasks and strategies, and loading by name.

A task or strategy registers itself where it is defined, so adding one is adding one class::

    @register_strategy("my-strategy")
    class MyStrategy(Strategy): ...

The registry knows names, not code: it finds a built-in by the module named for it below and
imports that module (which runs its decorator) only when the name is first asked for. The doors
of the package (the CLI and the lazy top-level API) load their implementations by name too,
through :func:`load`, so that ``hftransfer --help`` imports no deep-learning library.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

from .errors import HFTransferError

T = TypeVar("T")

TASKS: dict[str, type] = {}
STRATEGIES: dict[str, type] = {}

BUILTIN_TASKS = {
    "text-classification": "hftransfer.tasks.text",
    "token-classification": "hftransfer.tasks.token",
    "image-classification": "hftransfer.tasks.image",
    "audio-classification": "hftransfer.tasks.audio",
    "masked-lm": "hftransfer.tasks.masked_lm",
}
BUILTIN_STRATEGIES = {
    "full": "hftransfer.strategies.finetune",
    "partial-freeze": "hftransfer.strategies.finetune",
    "scratch": "hftransfer.strategies.finetune",
    "feature-extraction": "hftransfer.strategies.features",
    "lora": "hftransfer.strategies.peft",
    "multitask": "hftransfer.strategies.multitask",
    "distill": "hftransfer.strategies.distill",
    "fusion": "hftransfer.strategies.fusion",
    "dann": "hftransfer.strategies.dann",
}


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def decorator(cls: type[T]) -> type[T]:
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice")
        cls.name = name  # type: ignore[attr-defined]
        table[name] = cls
        return cls

    return decorator


def register_task(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a Task subclass available as ``task.type: NAME``."""
    return _register(TASKS, "task", name)


def register_strategy(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a Strategy subclass available as ``strategy.name: NAME``."""
    return _register(STRATEGIES, "strategy", name)


def _lookup(table: dict[str, type], builtins: dict[str, str], kind: str, name: str, where: str) -> type:
    if name not in table and name in builtins:
        load(builtins[name])
    if name not in table:
        known = sorted(set(table) | set(builtins))
        shown = repr(name) if len(str(name)) <= 60 else repr(str(name)[:60]) + "..."
        raise HFTransferError(f"unknown {kind} {shown} at {where}; valid: {', '.join(known)}")
    return table[name]


def get_task(name: str, where: str = "task.type") -> type:
    """The registered task class called ``name`` (a clear error lists the valid names)."""
    return _lookup(TASKS, BUILTIN_TASKS, "task", name, where)


def get_strategy(name: str, where: str = "strategy.name") -> type:
    """The registered strategy class called ``name`` (a clear error lists the valid names)."""
    return _lookup(STRATEGIES, BUILTIN_STRATEGIES, "strategy", name, where)


def all_tasks() -> dict[str, type]:
    """Every registered task, built-ins loaded."""
    for module in sorted(set(BUILTIN_TASKS.values())):
        load(module)
    return dict(sorted(TASKS.items()))


def all_strategies() -> dict[str, type]:
    """Every registered strategy, built-ins loaded."""
    for module in sorted(set(BUILTIN_STRATEGIES.values())):
        load(module)
    return dict(sorted(STRATEGIES.items()))


def load(name: str) -> Any:
    """A module by its dotted name, or one of its attributes as ``module:attribute``."""
    module, _, attribute = name.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded
