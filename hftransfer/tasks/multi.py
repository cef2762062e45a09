"""Several named tasks trained together: what the engine sees of a multi-task recipe (``tasks:``).

:class:`TaskSet` answers the engine's Task calls by asking every member task; its splits,
datasets and collator keep each task's own examples and collation, every item tagged with its
task's index.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import load_splits
from ..errors import HFTransferError
from ..registry import get_task
from .base import length_sorted


def task_for(recipe: Any) -> Any:
    """The task object a recipe trains: its registered Task, or a TaskSet for ``tasks:``."""
    if recipe.is_multitask:
        return TaskSet({name: get_task(entry.task_type)(entry.task_options)
                        for name, entry in recipe.members.items()},
                       {name: entry.data for name, entry in recipe.members.items()})
    return get_task(recipe.task_type)(recipe.task_options)


@dataclass
class MultiSplits:
    """Per-task splits (``data.Splits`` each) seen through the engine's ``Splits`` interface."""

    parts: dict[str, Any]

    @property
    def labels(self) -> dict[str, list[str]]:
        return {name: s.labels for name, s in self.parts.items()}

    def missing_validation(self) -> list[str]:
        return [f"tasks.{name}.data" for name, s in self.parts.items() if s.validation is None]

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: s.counts() for name, s in self.parts.items()}


class MultiTaskDataset(torch.utils.data.Dataset):
    """The tasks' encoded examples one after another; every item carries its ``task_index``."""

    def __init__(self, parts: dict[str, Any], names: list[str]):
        self.parts = parts
        self.all_names = names  # every task of the recipe, in order: task_index is a position here
        self.index = {name: names.index(name) for name in parts}
        self.names = list(parts)
        self.starts = np.cumsum([0] + [len(parts[n]) for n in self.names]).tolist()

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        k = bisect.bisect_right(self.starts, i) - 1
        name = self.names[k]
        item = dict(self.parts[name][i - self.starts[k]])
        item["task_index"] = self.index[name]
        return item

    def sizes(self) -> list[int]:
        return [len(self.parts[n]) for n in self.names]

    def lengths(self) -> list[list[int]] | None:
        """Every task's example lengths (text tasks record them), or None."""
        if not all("length" in getattr(self.parts[n], "column_names", ()) for n in self.names):
            return None
        return [list(self.parts[n]["length"]) for n in self.names]

    def only(self, name: str) -> "MultiTaskDataset":
        """The examples of one task."""
        return MultiTaskDataset({name: self.parts[name]}, self.all_names)


class MultiTaskCollator:
    """Collates a single-task batch with that task's own collator."""

    def __init__(self, collators: list[Any]):
        self.collators = collators

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        tasks = {item["task_index"] for item in items}
        if len(tasks) != 1:
            raise RuntimeError(f"a multi-task batch mixes tasks {sorted(tasks)}; batches are single-task")
        index = tasks.pop()
        # "length" only orders batches; it is not a model input.
        rows = [{k: v for k, v in item.items() if k not in ("task_index", "length")} for item in items]
        batch = dict(self.collators[index](rows))
        batch["task_index"] = torch.full((len(items),), index, dtype=torch.long)
        return batch


class TaskSet:
    """Several named tasks trained together: what the engine sees of a multi-task recipe. It
    answers the engine's Task calls by asking every member task."""

    name = "multitask"
    # Batches carry task_index (not a parameter of any model's forward) and the labels' name
    # cannot be read off the MultiTaskModel's signature.
    training_defaults = {"remove_unused_columns": False, "label_names": ["labels"],
                         "ddp_find_unused_parameters": True}

    def __init__(self, members: dict[str, Any], data: dict[str, Any]):
        self.members = members
        self.data = data
        self.names = list(members)
        kinds = {name: task.input_kind for name, task in members.items()}
        if len(set(kinds.values())) > 1:
            shown = ", ".join(f"{name} ({task.name}) takes {kinds[name]}" for name, task in members.items())
            raise HFTransferError(
                f"the tasks of one encoder must read the same kind of input: {shown}; "
                "train them in separate recipes"
            )
        self.input_kind = kinds[self.names[0]]

    def load_splits(self, spec: Any, seed: int) -> MultiSplits:
        parts = {}
        for name, task in self.members.items():
            data = self.data[name]
            parts[name] = load_splits(data, task, data.seed if data.seed is not None else seed,
                                      where=f"tasks.{name}.data")
        return MultiSplits(parts)

    def load_processor(self, location: str | None, spec: Any, config: Any) -> Any:
        # One encoder, one processor; every task checks it can use it (token tasks need a fast
        # tokenizer), and the first task's is the one the run keeps.
        processors = [task.load_processor(location, spec, config) for task in self.members.values()]
        return processors[0]

    def encode_splits(self, splits: MultiSplits, processor: Any, augment: bool):
        train, evals = {}, {"validation": {}, "test": {}}
        for name, task in self.members.items():
            part = splits.parts[name]
            train[name] = task.preprocess(part.train, processor, part.labels, training=augment)
            for role in evals:
                ds = getattr(part, role)
                if ds is not None:
                    evals[role][name] = length_sorted(task.preprocess(ds, processor, part.labels))
        return (MultiTaskDataset(train, self.names),
                {role: MultiTaskDataset(parts, self.names) for role, parts in evals.items() if parts})

    def collator(self, processor: Any) -> MultiTaskCollator:
        return MultiTaskCollator([self.members[name].collator(processor) for name in self.names])

    evaluates_before_training = False

    def preprocess_logits(self) -> None:
        return None  # every member task keeps its logits

    def callbacks(self, strategy: Any) -> list:
        return []

    def metric_names(self, labels: dict[str, list[str]]) -> list[str]:
        return ["combined"] + [f"{name}.{metric}" for name, task in self.members.items()
                               for metric in ["loss", *task.metric_names(labels[name])]]

    def compute_metrics(self, labels: dict[str, list[str]]) -> dict[str, Any]:
        return {name: task.compute_metrics(labels[name]) for name, task in self.members.items()}

    def shape_metrics(self, flat: dict[str, Any]) -> dict[str, Any]:
        """``{"ner.f1": x, "combined": y}`` -> ``{"ner": {"f1": x}, "combined": y}``."""
        out: dict[str, Any] = {}
        for key, value in flat.items():
            task, dot, metric = key.partition(".")
            if dot and task in self.members:
                out.setdefault(task, {})[metric] = value
            else:
                out[key] = value
        return out

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "tasks": {name: task.name for name, task in self.members.items()}}
