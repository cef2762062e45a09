"""Name -> class registries for tasks and strategies.

A task or strategy registers itself where it is defined, so adding one is adding one class::

    @register_strategy("my-strategy")
    class MyStrategy(Strategy): ...
"""
from __future__ import annotations

from typing import Callable, TypeVar

from .errors import HFTransferError

T = TypeVar("T")

TASKS: dict[str, type] = {}
STRATEGIES: dict[str, type] = {}


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def decorator(cls: type[T]) -> type[T]:
        if name in table:
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


def _lookup(table: dict[str, type], kind: str, name: str, where: str) -> type:
    _load_builtins()
    if name not in table:
        shown = repr(name) if len(str(name)) <= 60 else repr(str(name)[:60]) + "..."
        raise HFTransferError(f"unknown {kind} {shown} at {where}; valid: {', '.join(sorted(table))}")
    return table[name]


def get_task(name: str, where: str = "task.type") -> type:
    """The registered task class called ``name`` (a clear error lists the valid names)."""
    return _lookup(TASKS, "task", name, where)


def get_strategy(name: str, where: str = "strategy.name") -> type:
    """The registered strategy class called ``name`` (a clear error lists the valid names)."""
    return _lookup(STRATEGIES, "strategy", name, where)


def _load_builtins() -> None:
    # Importing the modules runs their @register decorators.
    from . import features, multitask, strategies, tasks  # noqa: F401
