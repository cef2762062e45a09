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
import difflib
import importlib.util
import math
import os
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import HFTransferError

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

    def __post_init__(self) -> None:
        from .data import FORMATS, TASK_FORMATS

        for key in ("train", "validation", "test", "dataset", "dataset_config"):
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
TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
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


# --------------------------------------------------------------------------- typed building


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
HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{30,}")
# A recipe name becomes a directory (runs/NAME): a name, never a path (no separators, no
# leading dot, nothing a file system or a shell treats specially).
RUN_NAME = re.compile(r'^\w(?:[^/\\\x00-\x1f\x7f:*?"<>|]{0,126}[^/\\\x00-\x1f\x7f:*?"<>|. ])?$')


def check_tree(data: Any) -> None:
    """Refuse what no recipe section may hold, wherever it is: numbers that are not finite, NUL
    characters, strings that look like access tokens (the recipe is saved with the run and
    pushed with it), and more values than a recipe could need (YAML alias expansion)."""
    seen = 0
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        seen += 1
        if seen > MAX_RECIPE_VALUES:
            raise HFTransferError(
                f"the recipe expands to more than {MAX_RECIPE_VALUES:,} values (YAML aliases?); "
                "a recipe is a short list of settings")
        shown = where or "the recipe"
        if isinstance(value, float) and not math.isfinite(value):
            raise HFTransferError(f"{shown} is {value}: numbers in a recipe must be finite")
        if isinstance(value, str):
            if "\x00" in value:
                raise HFTransferError(f"{shown} contains a NUL character")
            if HF_TOKEN.search(value):
                raise HFTransferError(
                    f"{shown} looks like a Hugging Face access token; tokens never go in a recipe "
                    f"(it is saved with the run): {TOKEN_HINT}")
        elif isinstance(value, dict):
            for key, child in value.items():
                if isinstance(key, str) and ("\x00" in key or HF_TOKEN.search(key)):
                    raise HFTransferError(f"a key under {shown} contains a NUL character or a token")
                stack.append((_join(where, key), child))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{shown}[{i}]", child) for i, child in enumerate(value))


TOKEN_HINT = "log in with `hf auth login` or set the HF_TOKEN environment variable"


def check_seed(value: Any, where: str) -> None:
    """Seeds feed numpy, which takes 0 .. 2**32 - 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 32:
        raise HFTransferError(f"{where} must be a whole number from 0 to {2 ** 32 - 1}, got {quote(value)}")


def run_name_from(stem: str) -> str:
    """A usable run name from a recipe file's name (``my recipe.yaml`` -> ``my-recipe``)."""
    name = re.sub(r'[/\\\x00-\x1f\x7f:*?"<>|]+', "-", stem).lstrip("-. ")[:128].rstrip(". ")
    return name if RUN_NAME.match(name) else "run"


# --------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict[str, Any]:
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
        if isinstance(key, (str, int, float, bool)) and key in seen:
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


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to a recipe mapping (a new dict is returned)."""
    import copy

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
    else:
        path = Path(source)
        data = _read_yaml(path)
        default_name = run_name_from(path.stem)
    data = apply_overrides(data, list(overrides or []))
    check_tree(data)
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
    from .registry import get_strategy

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
            "a recipe with tasks: trains with strategy.name: multitask" if recipe.is_multitask else
            f"strategy {recipe.strategy['name']!r} trains several tasks: give them as "
            "tasks: {NAME: {task: {...}, data: {...}}, ...} instead of task: and data:"
        )
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
    from .registry import get_task

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


# What every run gets unless the task, the strategy or the recipe says otherwise.
KIT_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "weight_decay": 0.01,
    # Batches of similar lengths: dynamic padding then pads SST-2-like data ~2x less.
    "train_sampling_strategy": "group_by_length",
    "eval_strategy": "no",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "logging_strategy": "steps",
    "logging_steps": 50,
    "report_to": "none",
    "seed": 0,
    # One label per example: per-token loss averaging across processes does not apply, and with
    # it the Trainer reports losses multiplied by the number of processes.
    "average_tokens_across_devices": False,
}


def training_values(recipe: "Recipe", strategy_cls: Any, task: Any) -> dict[str, Any]:
    """The training arguments a run uses: kit defaults < device defaults < task defaults <
    strategy defaults < the recipe's ``train:``."""
    import torch

    # Pinned memory only helps copies to a GPU (and warns on every dataloader without one).
    device_defaults: dict[str, Any] = {"dataloader_pin_memory": torch.cuda.is_available()}
    if not torch.cuda.is_available() and world_size() > 1:
        # Processes launched on CPUs: without use_cpu Accelerate finds no GPU and sets up no
        # process group at all, so every process would train and evaluate alone.
        device_defaults.update(use_cpu=True, ddp_backend="gloo")
    values = {**KIT_DEFAULTS, **device_defaults, **task.training_defaults, **strategy_cls.defaults,
              **recipe.train}
    return best_model_needs_eval(values)


def world_size() -> int:
    """How many processes ``accelerate launch`` (or torchrun) started; 1 for a plain run."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def best_model_needs_eval(values: dict[str, Any]) -> dict[str, Any]:
    """``load_best_model_at_end`` without an eval strategy evaluates whenever it saves."""
    if values.get("load_best_model_at_end") and values.get("eval_strategy", "no") == "no":
        values["eval_strategy"] = values.get("save_strategy", "epoch")
    return values


# Fields the kit owns: setting them in `train:` would break the run directory contract.
_RESERVED_TRAIN_KEYS = {
    "output_dir": "use --output-dir on the command line",
    "resume_from_checkpoint": "use --resume on the command line",
    "do_train": "the kit always trains", "do_eval": "the kit decides", "do_predict": "the kit decides",
    "local_rank": "accelerate launch sets it",
    # Credentials: the recipe is saved with the run (recipe.yaml, card, checkpoints) and pushed.
    "hub_token": f"credentials never go in a recipe, which is saved with the run; {TOKEN_HINT}",
}
# The Trainer's own uploads would send checkpoints (with optimizer and RNG pickles) to the Hub
# during training, past every check of `hftransfer push`.
_UPLOAD_PREFIXES = ("push_to_hub", "hub_")
_UPLOAD_HINT = ("the Trainer would upload checkpoints (with pickled optimizer and RNG state) during "
                "training; publish a finished run with `hftransfer push RUN_DIR --repo-id ID`")
# Bounds TrainingArguments does not check itself (a 0 batch size fails deep in the data loader).
_AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size",
                 "gradient_accumulation_steps", "eval_accumulation_steps")
_NOT_NEGATIVE = ("learning_rate", "num_train_epochs", "weight_decay", "warmup_steps", "max_grad_norm",
                 "dataloader_num_workers", "label_smoothing_factor", "adam_epsilon")
_POSITIVE_IF_SET = ("logging_steps", "save_steps", "eval_steps")


def validate_training_arguments(train: dict[str, Any]) -> dict[str, Any]:
    """Check ``train:`` keys and value types against ``transformers.TrainingArguments``, and
    the values that would fail (or train nothing) only once training runs."""
    from transformers import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    hints = typing.get_type_hints(TrainingArguments)
    out = {}
    for key, value in train.items():
        if not isinstance(key, str):
            raise HFTransferError(f"train: key {quote(key)} is not a name; train accepts "
                                  "transformers.TrainingArguments fields")
        if key in _RESERVED_TRAIN_KEYS:
            raise HFTransferError(f"train.{key} cannot be set in a recipe: {_RESERVED_TRAIN_KEYS[key]}")
        if key.startswith(_UPLOAD_PREFIXES):
            raise HFTransferError(f"train.{key} cannot be set in a recipe: {_UPLOAD_HINT}")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise HFTransferError(
                f"unknown key 'train.{key}': train accepts transformers.TrainingArguments fields{hint}"
            )
        tp = hints.get(key, Any)
        if tp in (int, float, bool, str) or typing.get_origin(tp) in (typing.Union, types.UnionType) \
                and all(a in (int, float, bool, str, type(None)) for a in typing.get_args(tp)):
            value = coerce(value, tp, f"train.{key}")
        out[key] = value
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and key in _AT_LEAST_ONE and value < 1:
            raise HFTransferError(f"train.{key} must be at least 1, got {value}")
        if number and key in _NOT_NEGATIVE and value < 0:
            raise HFTransferError(f"train.{key} must not be negative, got {value}")
        if number and key in _POSITIVE_IF_SET and value <= 0:
            raise HFTransferError(f"train.{key} must be above 0, got {value}")
        if key in ("seed", "data_seed") and value is not None:
            check_seed(value, f"train.{key}")
    steps = out.get("max_steps", -1)
    if isinstance(steps, int) and steps == 0 or isinstance(steps, int) and steps < -1:
        raise HFTransferError(f"train.max_steps must be a positive number of steps (or -1 for "
                              f"num_train_epochs), got {steps}")
    if out.get("num_train_epochs") == 0 and not (isinstance(steps, int) and steps > 0):
        raise HFTransferError("train.num_train_epochs is 0: the run would train nothing; give a "
                              "number of epochs (or train.max_steps)")
    _check_integrations(out)
    # Values TrainingArguments rejects, judged with the kit's defaults beneath them (as training
    # will run): `load_best_model_at_end` alone is fine, since the kit saves every epoch.
    make_training_arguments(best_model_needs_eval({**KIT_DEFAULTS, **out}), "/nonexistent/hftransfer-validation")
    return out


def _check_integrations(train: dict[str, Any]) -> None:
    """``report_to``, ``deepspeed`` and ``fsdp`` name things that must exist on this machine."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    wanted = train.get("report_to")
    wanted = [wanted] if isinstance(wanted, str) else list(wanted or [])
    available = set(get_available_reporting_integrations())
    for name in wanted:
        if name in ("none", "all") or name in available:
            continue
        if name in INTEGRATION_TO_CALLBACK:
            raise HFTransferError(f"train.report_to: {name} is not installed here; install it "
                                  f"(pip install {name}) or remove it from report_to")
        raise HFTransferError(f"train.report_to: {quote(name)} is not a logging integration; valid: "
                              f"none, all, {', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
    deepspeed = train.get("deepspeed")
    if deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            raise HFTransferError(
                "train.deepspeed needs the package deepspeed, which is not installed here "
                "(pip install deepspeed, on a machine with GPUs); or launch with an Accelerate "
                "config instead (recipes/accelerate/deepspeed-zero2.yaml)")
        if isinstance(deepspeed, str) and not Path(os.path.expanduser(deepspeed)).is_file():
            raise HFTransferError(f"train.deepspeed: config file {quote(deepspeed)} does not exist")


def check_distributed(values: dict[str, Any]) -> None:
    """Settings that need ``accelerate launch`` with several processes, checked when a run starts."""
    if values.get("fsdp") and world_size() < 2:
        raise HFTransferError(
            "train.fsdp shards the model over several processes, and this run has one; launch it "
            "with accelerate launch --num_processes N (see recipes/accelerate/fsdp.yaml), or "
            "remove train.fsdp")


def make_training_arguments(values: dict[str, Any], output_dir: str):
    """``TrainingArguments(**values)``; a rejected value becomes an error naming its key."""
    from transformers import TrainingArguments

    try:
        return TrainingArguments(output_dir=output_dir, **values)
    except (ValueError, TypeError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        culprit = next((k for k in values if _rejects(k, values[k])), None)
        where = f"train.{culprit}" if culprit else "train"
        raise HFTransferError(f"{where}: {clip(message)}") from None


def _rejects(key: str, value: Any) -> bool:
    from transformers import TrainingArguments

    try:
        TrainingArguments(output_dir="/nonexistent/hftransfer-validation", **{key: value})
        return False
    except (ValueError, TypeError, OSError):
        return True
