"""Recipes: YAML -> typed dataclasses, dotted overrides, validation before any model loads.

A recipe names a source model, a target task with its data, a transfer strategy and the
training arguments::

    name: sst2-lora
    model: {name_or_path: embedded}
    task: {type: text-classification, text_column: text, label_column: label}
    data: {train: data/train.csv, validation: data/validation.csv}
    strategy: {name: lora, peft: {r: 8}}
    train: {learning_rate: 5.0e-4, num_train_epochs: 3}

Unknown keys are errors that name the key and list the allowed ones; ``task`` and ``strategy``
options are checked against the registered class's own options dataclass, ``train`` against
``transformers.TrainingArguments``.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data import FORMATS, TASK_FORMATS
from ..errors import HFTransferError
from ..registry import get_strategy, get_task
from ..rundir import RECIPE, RESUMABLE_CHANGES, TASK_NAME, differences
from .training import validate_training_arguments
from .values import build, check_seed, check_tree, quote
from .yamlfile import apply_overrides, read_yaml

EMBEDDED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class ModelSpec:
    """Where the source model comes from and what loading it may do."""

    name_or_path: str = "embedded"
    """Hub id, local directory, or an hftransfer run directory; ``embedded`` = the bundled MiniLM."""
    revision: str | None = None
    trust_remote_code: bool = False
    """Run Python code shipped with the model (off unless you trust the model's author)."""
    allow_pickle: bool = False
    """Load ``pytorch_model.bin`` weights (pickle can run code; safetensors only by default)."""
    config: dict[str, Any] | None = None
    """An inline config (``{model_type: vit, hidden_size: 64, ...}``): a randomly initialised
    source model of that architecture instead of a checkpoint (``name_or_path`` is then unused)."""
    processor: str | None = None
    """Where to load the tokenizer / image processor / feature extractor from, when it is not
    next to the model (needed for text models built from ``config``)."""
    init: dict[str, Any] | None = None
    """A network of another shape filled from the source's weights: config fields to change
    (``num_hidden_layers: 3``, ``hidden_size: 192``...) and ``layers`` (bottom, uniform, stack
    or a list), ``width`` (select, grow), ``weights`` (source, or random for a no-transfer twin).
    With ``config`` given too, that config (of the source's family) is the target."""

    @property
    def random_weights(self) -> bool:
        """Whether the network starts from random weights (an inline config, or init's
        ``weights: random``) rather than the source's."""
        if self.init is not None:
            return self.init.get("weights", "source") == "random"
        return self.config is not None

    def __post_init__(self) -> None:
        for key in ("name_or_path", "processor", "revision"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                raise HFTransferError(
                    f"model.{key} is empty; give a Hub id or a directory (or leave the key out)")


@dataclass
class DataSpec:
    """Where the examples come from and how much of them to use."""

    train: str | None = None
    validation: str | None = None
    test: str | None = None
    dataset: str | None = None
    """A Hub dataset id, used instead of local files."""
    dataset_config: str | None = None
    train_split: str = "train"
    validation_split: str | None = "validation"
    test_split: str | None = "test"
    format: str | None = None
    """csv, json, jsonl or parquet; by default taken from the file extension."""
    validation_fraction: float = 0.1
    """Carved from train (seeded, stratified) when there is no validation split; 0 = none."""
    max_train_samples: int | None = None
    samples_per_label: int | None = None
    """A label budget: keep this many training examples per label (seeded)."""
    seed: int | None = None
    """Seed for splits and budgets; defaults to ``train.seed``."""
    unlabeled: str | None = None
    """Inputs without labels (a file of texts, an image or audio folder): a transfer set that
    the teacher of strategy ``distill`` labels with its outputs, or the target domain's inputs
    that strategy ``dann`` aligns the source's features with."""

    def __post_init__(self) -> None:
        for key in ("train", "validation", "test", "dataset", "dataset_config", "unlabeled"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                # An empty path would name the current directory and read every file under it.
                raise HFTransferError(
                    f"data.{key} is empty; give a file, glob or folder (or leave the key out)")
        if self.seed is not None:
            check_seed(self.seed, "data.seed")
        known = sorted(set(FORMATS.values()) | set(TASK_FORMATS))
        if self.format is not None and self.format.lower() not in known:
            raise HFTransferError(
                f"data.format {self.format!r} is not supported; use one of {', '.join(known)}"
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise HFTransferError(
                f"data.validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        for key in ("max_train_samples", "samples_per_label"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise HFTransferError(f"data.{key} must be at least 1, got {value}")


@dataclass
class TaskEntry:
    """One task of a multi-task recipe (``tasks: {NAME: {task: {...}, data: {...}}}``)."""

    task: dict[str, Any] = field(default_factory=lambda: {"type": "text-classification"})
    data: DataSpec = field(default_factory=DataSpec)
    # Filled by validate(): the task's parsed options.
    task_options: Any = field(default=None, repr=False, compare=False)

    @property
    def task_type(self) -> str:
        return self.task.get("type", "text-classification")


# A task name becomes a directory (RUN/tasks/NAME) and a metric key (validation.NAME.f1).
RESERVED_TASK_NAMES = ("combined", "loss")


@dataclass
class Recipe:
    """One run: source model + target task and data + strategy + training arguments.

    A multi-task recipe gives ``tasks:`` (several named task + data pairs) instead of ``task:``
    and ``data:``."""

    name: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    task: dict[str, Any] = field(default_factory=lambda: {"type": "text-classification"})
    data: DataSpec = field(default_factory=DataSpec)
    tasks: dict[str, Any] | None = None
    """Multi-task recipes: ``{NAME: {task: {...}, data: {...}}}``, trained with strategy multitask."""
    strategy: dict[str, Any] = field(default_factory=lambda: {"name": "full"})
    train: dict[str, Any] = field(default_factory=dict)
    """Any ``transformers.TrainingArguments`` field."""

    # Filled by validate(): the registered classes and their parsed options.
    task_options: Any = field(default=None, repr=False, compare=False)
    strategy_options: Any = field(default=None, repr=False, compare=False)
    members: dict[str, TaskEntry] = field(default_factory=dict, repr=False, compare=False)
    """The parsed ``tasks:`` of a multi-task recipe, in recipe order."""

    @property
    def is_multitask(self) -> bool:
        return self.tasks is not None

    @property
    def task_type(self) -> str:
        if self.is_multitask:
            return "multitask"
        return self.task.get("type", "text-classification")

    @property
    def strategy_name(self) -> str:
        return self.strategy.get("name", "full")

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data, as written to ``RUN/recipe.yaml``."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("task_options", "strategy_options", "members"):
                continue
            if f.name in ("task", "data") and self.is_multitask:
                continue
            if f.name == "tasks" and not self.is_multitask:
                continue
            value = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        if self.members:
            out["tasks"] = {name: {"task": entry.task, "data": dataclasses.asdict(entry.data)}
                            for name, entry in self.members.items()}
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# A recipe name becomes a directory (runs/NAME): a name, never a path (no separators, no
# leading dot, nothing a file system or a shell treats specially).
RUN_NAME = re.compile(r'^\w(?:[^/\\\x00-\x1f\x7f:*?"<>|]{0,126}[^/\\\x00-\x1f\x7f:*?"<>|. ])?$')


def run_name_from(stem: str) -> str:
    """A usable run name from a recipe file's name (``my recipe.yaml`` -> ``my-recipe``)."""
    name = re.sub(r'[/\\\x00-\x1f\x7f:*?"<>|]+', "-", stem).lstrip("-. ")[:128].rstrip(". ")
    return name if RUN_NAME.match(name) else "run"


def load_recipe(
    source: str | Path | dict[str, Any] | Recipe, overrides: list[str] | None = None
) -> Recipe:
    """Read, override and validate a recipe.

    ``source`` is a YAML path, a mapping or a Recipe. Raises HFTransferError on any mistake,
    before a model or data file is touched.

    >>> recipe = load_recipe("recipes/quickstart.yaml", ["strategy.name=scratch"])
    """
    if isinstance(source, Recipe):
        data = source.to_dict()
        default_name = source.name
    elif isinstance(source, dict):
        data = source
        default_name = None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        data = read_yaml(path)
        default_name = run_name_from(path.stem)
    else:
        raise HFTransferError(f"a recipe is a YAML file's path, a mapping or a Recipe, got {quote(source)}")
    if overrides is not None and (isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides)):
        raise HFTransferError(f"overrides are a list of 'key.path=value' strings, got {quote(overrides)}")
    check_tree(data)  # before the overrides copy it: a value that holds itself, or nests too deep
    data = apply_overrides(data, list(overrides or []))
    check_tree(data)
    if "stages" in data:
        raise HFTransferError(
            "this is a staged recipe (stages:): `hftransfer train` (hftransfer.train) runs its stages in "
            "order; a stage's own recipe is read with the pipeline (hftransfer.recipe.stages.load_staged)")
    if "model" in data and data["model"] is None:
        raise HFTransferError("model: is empty; leave the section out for the embedded MiniLM, or give "
                              "model.name_or_path")
    if "tasks" in data and data["tasks"] is not None and ("task" in data or "data" in data):
        raise HFTransferError(
            "a recipe with tasks: gives every task its own task: and data: under tasks.NAME; "
            "remove the top-level " + " and ".join(repr(k) for k in ("task", "data") if k in data)
        )
    for section in ("task", "strategy", "train"):
        if data.get(section) is None:
            data.pop(section, None)
        elif not isinstance(data[section], dict):
            raise HFTransferError(f"{section} must be a mapping, got {quote(data[section])}")
    if isinstance(data.get("model"), str):  # `model: bert-base-uncased` shorthand
        data["model"] = {"name_or_path": data["model"]}
    recipe = build(Recipe, data, "")
    if recipe.name is None:
        recipe.name = default_name
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> Recipe:
    """Check everything that can be checked without loading a model or data."""
    recipe.strategy.setdefault("name", "full")
    if not isinstance(recipe.strategy["name"], str):
        raise HFTransferError("strategy.name must be a string")
    strategy_cls = get_strategy(recipe.strategy["name"])
    if recipe.is_multitask:
        recipe.members = _validate_tasks(recipe.tasks)
    else:
        recipe.task_options = _task_options(recipe.task, "task")
        _check_data(recipe.data, "data")
    recipe.strategy_options = build(
        strategy_cls.Options, recipe.strategy, "strategy", skip=("name",)
    )
    if recipe.is_multitask != bool(getattr(strategy_cls, "multitask", False)):
        raise HFTransferError(
            f"a recipe with tasks: trains with strategy.name: multitask; strategy {recipe.strategy['name']!r} "
            "trains one task: give it task: and data:" if recipe.is_multitask else
            f"strategy {recipe.strategy['name']!r} trains several tasks: give them as "
            "tasks: {NAME: {task: {...}, data: {...}}, ...} instead of task: and data:"
        )
    sections = [(f"tasks.{n}.data", e.data) for n, e in recipe.members.items()] if recipe.is_multitask \
        else [("data", recipe.data)]
    for where, data in sections:
        if data.unlabeled is not None and not strategy_cls.reads_unlabeled:
            raise HFTransferError(
                f"{where}.unlabeled holds inputs without labels, read by strategy distill (a transfer set its "
                f"teacher labels) or strategy dann (the target domain's inputs); strategy "
                f"{recipe.strategy['name']!r} does not read it: remove it or use one of those")
    strategy_cls.validate_recipe(recipe)
    recipe.train = validate_training_arguments(recipe.train)
    if recipe.name is not None and not recipe.name.strip():
        raise HFTransferError("name must not be empty")
    if recipe.name is not None and not RUN_NAME.match(recipe.name):
        raise HFTransferError(
            f"name {quote(recipe.name)} is not a usable run name: it names the run directory "
            "(runs/NAME), so it starts with a letter, digit or '_', has no '/', '\\' or control "
            "characters and at most 128 characters; pick another directory with --output-dir")
    return recipe


def _task_options(task: dict[str, Any], where: str) -> Any:
    if not isinstance(task.get("type", "text-classification"), str):
        raise HFTransferError(f"{where}.type must be a string")
    task.setdefault("type", "text-classification")
    task_cls = get_task(task["type"], where=f"{where}.type")
    return build(task_cls.Options, task, where, skip=("type",))


def _check_data(d: DataSpec, where: str) -> None:
    if d.dataset is None and d.train is None:
        raise HFTransferError(
            f"{where}.train is missing: give a training file (csv, json, jsonl, parquet) "
            f"or {where}.dataset with a Hub dataset id"
        )
    if d.dataset is not None and d.train is not None:
        raise HFTransferError(
            f"give either {where}.train (local files) or {where}.dataset (Hub), not both")


def _validate_tasks(tasks: Any) -> dict[str, TaskEntry]:
    """The ``tasks:`` mapping of a multi-task recipe, checked: names, task options, data."""
    if not isinstance(tasks, dict) or len(tasks) < 2:
        raise HFTransferError(
            "tasks must map two or more task names to {task: {...}, data: {...}}"
            + (f"; got {len(tasks)} task" if isinstance(tasks, dict) else f", got {tasks!r}")
        )
    members: dict[str, TaskEntry] = {}
    folded: dict[str, str] = {}
    for name, entry in tasks.items():
        name = str(name)
        if not TASK_NAME.match(name) or name in RESERVED_TASK_NAMES:
            raise HFTransferError(
                f"task name {name!r} (under tasks) is not usable: a name starts with a letter and "
                "has only letters, digits, '_' and '-' (at most 64)"
                + (f", and {', '.join(RESERVED_TASK_NAMES)} are reserved" if name in RESERVED_TASK_NAMES else "")
            )
        if name.lower() in folded:  # RUN/tasks/NER and RUN/tasks/ner are one folder on some disks
            raise HFTransferError(
                f"task names {folded[name.lower()]!r} and {name!r} clash (they differ only in case); "
                "rename one"
            )
        folded[name.lower()] = name
        where = f"tasks.{name}"
        if entry is None or isinstance(entry, dict) and "data" not in entry:
            raise HFTransferError(
                f"{where} has no data: give {where}.data.train (a file) or {where}.data.dataset"
            )
        parsed = build(TaskEntry, entry, where)
        parsed.task_options = _task_options(parsed.task, f"{where}.task")
        _check_data(parsed.data, f"{where}.data")
        members[name] = parsed
    return members


def model_set(spec: str | list[str] | None, where: str) -> dict[str, dict[str, Any]]:
    """Named source models (``compare --sources``, ``rank --candidates``): a comma-separated list
    (Hub ids, directories, run directories, ``embedded``; each named as written), or a YAML file
    of ``NAME: <model section>``, which may reshape a source (``model.init``)::

        minilm: embedded
        minilm-3-layers: {name_or_path: embedded, init: {num_hidden_layers: 3, layers: bottom}}
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else list(spec or []))]
    if not all(items):
        raise HFTransferError(f"{where} has an empty entry; give a comma-separated list or a YAML file")
    if len(items) == 1 and items[0].endswith((".yaml", ".yml")) and Path(items[0]).is_file():
        data = read_yaml(Path(items[0]))
        if not data:
            raise HFTransferError(f"{where}: {items[0]!r} names no models; write NAME: <model section> lines")
        models = {}
        for name, section in data.items():
            section = {"name_or_path": section} if isinstance(section, str) else section
            build(ModelSpec, section, f"{where} {items[0]}: {name}")  # unknown keys, wrong types
            models[str(name)] = section
        return models
    return {item: {"name_or_path": item} for item in dict.fromkeys(items)}


def recipe_changes(run_dir: Path, recipe: str | Path | dict[str, Any] | Recipe) -> list[str]:
    """Where the recipe a finished run recorded (``RUN/recipe.yaml``) differs from ``recipe`` in
    what it trains, as dotted paths (settings that ``--resume`` may change are left out): a run
    kept for reuse (a pipeline's stage, a comparison's cell) must be what is asked for now."""
    return [path for path in differences(load_recipe(run_dir / RECIPE).to_dict(), load_recipe(recipe).to_dict())
            if path not in RESUMABLE_CHANGES]

