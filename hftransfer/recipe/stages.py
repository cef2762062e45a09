"""Staged recipes: an ordered list of stages (task, data, strategy, train), each starting from
the model the stage before it trained::

    name: staged-sst2-cr
    model: {name_or_path: embedded}          # where the first stage starts
    train: {seed: 0}                          # defaults for every stage (a stage's train: wins)
    stages:
      - name: sst2
        task: {type: text-classification}
        data: {train: sst2/train.csv, validation: sst2/validation.csv}
      - name: cr
        task: {type: text-classification}
        data: {train: cr/train.csv, samples_per_label: 16}
        strategy: {name: full}

Every stage is checked as a recipe of its own before anything trains; overrides address the
whole pipeline (``train.seed=1``) or one stage by name or position (``stages.cr.train.seed=1``,
``stages.2.data.samples_per_label=64``).
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import HFTransferError
from ..registry import get_task
from ..rundir import TASK_NAME
from .schema import Recipe, load_recipe, run_name_from, validate
from .values import check_tree, quote
from .yamlfile import apply_overrides, read_yaml

PIPELINE_KEYS = ("name", "model", "train", "stages")
STAGE_KEYS = ("name", "model", "task", "data", "strategy", "train")


@dataclass
class StagedRecipe:
    """A pipeline of stages: ``stages[i]`` is a checked recipe; the model of every stage after
    the first is filled in by the pipeline (the stage before it's run directory)."""

    name: str
    stage_names: list[str]
    stages: list[Recipe]
    source: dict[str, Any]
    """The pipeline as written (after overrides): what ``pipeline.yaml`` records."""

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.source, sort_keys=False)


def is_staged(source: Any) -> bool:
    """Whether a recipe (path or mapping) is a staged one: it has ``stages:``."""
    if isinstance(source, dict):
        return "stages" in source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.is_file() and "stages" in read_yaml(path)
    return False


def load_staged(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> StagedRecipe:
    """Read, override and check a staged recipe: every stage as the recipe it trains."""
    if isinstance(source, dict):
        data, default_name = copy.deepcopy(source), None
    else:
        data, default_name = read_yaml(Path(source)), run_name_from(Path(source).stem)
    check_tree(data)
    if overrides is not None and (isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides)):
        raise HFTransferError(f"overrides are a list of 'key.path=value' strings, got {quote(overrides)}")
    unknown = [k for k in data if k not in PIPELINE_KEYS]
    if unknown:
        raise HFTransferError(
            f"a staged recipe has only {', '.join(PIPELINE_KEYS)} at the top; {', '.join(map(str, unknown))} "
            "belongs inside a stage (stages: [{name, task, data, strategy, train}, ...])")
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise HFTransferError(
            "stages is empty: give a list of stages, each {name, task, data, strategy, train}, "
            "trained in order, each from the model of the one before it")
    if not all(isinstance(s, dict) for s in stages):
        raise HFTransferError("every entry of stages is a mapping {name, task, data, strategy, train}")
    names = [str(s.get("name", f"stage{i}")) for i, s in enumerate(stages, 1)]
    data = _apply(data, names, list(overrides or []))
    check_tree(data)
    stages = data["stages"]
    names = [str(s.get("name", f"stage{i}")) for i, s in enumerate(stages, 1)]  # an override may rename
    name = data.get("name", default_name) or "pipeline"
    for key, value in (("model", data.get("model")), ("train", data.get("train"))):
        if value is not None and not isinstance(value, (dict, str) if key == "model" else dict):
            raise HFTransferError(f"{key} must be a mapping, got {quote(value)}")
    folded: dict[str, str] = {}
    recipes = []
    for i, (stage, stage_name) in enumerate(zip(stages, names), 1):
        where = f"stages[{i}] ({stage_name})"
        if not TASK_NAME.match(stage_name):
            raise HFTransferError(
                f"stage name {stage_name!r} is not usable (it names the stage's folder): a letter, then "
                "letters, digits, '_' or '-' (at most 64)")
        if stage_name.lower() in folded:
            raise HFTransferError(f"two stages are named {stage_name!r}; give every stage its own name")
        folded[stage_name.lower()] = stage_name
        unknown = [k for k in stage if k not in STAGE_KEYS]
        if unknown:
            raise HFTransferError(
                f"{where}: {', '.join(map(str, unknown))} is not a key of a stage; a stage has "
                f"{', '.join(STAGE_KEYS)}" + ("; several tasks train together in one multitask recipe, "
                                              "not as a stage" if "tasks" in unknown else ""))
        if "model" in stage and i > 1:
            raise HFTransferError(
                f"{where} starts from the model the stage before it trained; remove its model: section "
                "(only the first stage, or the top-level model:, names a source)")
        # Every stage is checked against the pipeline's source (the first stage's model); the
        # pipeline starts the later ones from the stage before them when it runs.
        model = stages[0].get("model", data.get("model"))
        recipe_data = {
            "name": f"{name}-{stage_name}"[:128],
            "task": stage.get("task"),
            "data": stage.get("data"),
            "strategy": stage.get("strategy"),
            "train": {**(data.get("train") or {}), **(stage.get("train") or {})},
        }
        if model is not None:
            recipe_data["model"] = model
        if recipe_data["data"] is None:
            raise HFTransferError(f"{where} has no data: give its data.train")
        try:
            recipe = load_recipe({k: v for k, v in recipe_data.items() if v is not None})
        except HFTransferError as exc:
            raise HFTransferError(f"{where}: {exc}") from None
        recipes.append(recipe)
    kinds = [get_task(r.task_type).input_kind for r in recipes]
    if len(set(kinds)) > 1:
        shown = ", ".join(f"{n} ({r.task_type}) reads {k}" for n, r, k in zip(names, recipes, kinds))
        raise HFTransferError(
            f"every stage trains the same network, so they read the same kind of input: {shown}")
    source = {k: data[k] for k in PIPELINE_KEYS if k in data}
    source["name"] = name
    return StagedRecipe(name=name, stage_names=names, stages=recipes, source=source)


def _apply(data: dict[str, Any], names: list[str], overrides: list[str]) -> dict[str, Any]:
    """Overrides of the pipeline (``train.seed=1``) and of one stage, named or numbered from 1
    (``stages.cr.data.samples_per_label=64``, ``stages.2.train.seed=1``)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key.startswith("stages."):
            data = apply_overrides(data, [item])
            continue
        which, _, rest = key[len("stages."):].partition(".")
        index = names.index(which) if which in names else int(which) - 1 if which.isdigit() else -1
        if not 0 <= index < len(names) or not rest:
            raise HFTransferError(
                f"bad override {item!r}: write stages.NAME.key=value with a stage's name "
                f"({', '.join(names)}) or number (1-{len(names)})")
        data["stages"][index] = apply_overrides(data["stages"][index], [rest + sep + value])
    return data


def stage_recipe(recipe: Recipe, source: str) -> Recipe:
    """A stage's recipe starting from ``source`` (the stage before it's run directory): the same
    loading rules as the pipeline's model (remote code, pickles), none of its shape changes."""
    spec = dataclasses.replace(recipe.model, name_or_path=source, revision=None, config=None,
                               processor=None, init=None)
    return validate(dataclasses.replace(recipe, model=spec))
