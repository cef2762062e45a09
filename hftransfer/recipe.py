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
import re
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
            f"got {value!r}"
        )
    if origin is not None:  # dict[...] / list[...]
        if not isinstance(value, origin):
            raise HFTransferError(f"{where} must be {_type_name(origin)}, got {value!r}")
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
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
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
    raise HFTransferError(f"{where} must be {_type_name(tp)}, got {value!r}")


def build(cls: type, data: Any, where: str, skip: tuple[str, ...] = ()) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HFTransferError(f"{where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in skip}
    internal = ("task_options", "strategy_options", "members")
    public = sorted([n for n in fields if n not in internal] + list(skip))
    kwargs = {}
    for key, value in data.items():
        if key in skip:
            continue
        if key not in fields or key in internal:
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
        default_name = path.stem
    data = apply_overrides(data, list(overrides or []))
    if "tasks" in data and data["tasks"] is not None and ("task" in data or "data" in data):
        raise HFTransferError(
            "a recipe with tasks: gives every task its own task: and data: under tasks.NAME; "
            "remove the top-level " + " and ".join(repr(k) for k in ("task", "data") if k in data)
        )
    for section in ("task", "strategy", "train"):
        if data.get(section) is None:
            data.pop(section, None)
        elif not isinstance(data[section], dict):
            raise HFTransferError(f"{section} must be a mapping, got {data[section]!r}")
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
    if recipe.name is not None and not str(recipe.name).strip():
        raise HFTransferError("name must not be empty")
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


# Fields the kit owns: setting them in `train:` would break the run directory contract.
_RESERVED_TRAIN_KEYS = {
    "output_dir": "use --output-dir on the command line",
    "resume_from_checkpoint": "use --resume on the command line",
    "do_train": "the kit always trains", "do_eval": "the kit decides", "do_predict": "the kit decides",
    "local_rank": "accelerate launch sets it",
}


def validate_training_arguments(train: dict[str, Any]) -> dict[str, Any]:
    """Check ``train:`` keys and value types against ``transformers.TrainingArguments``."""
    from transformers import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    hints = typing.get_type_hints(TrainingArguments)
    out = {}
    for key, value in train.items():
        if key in _RESERVED_TRAIN_KEYS:
            raise HFTransferError(f"train.{key} cannot be set in a recipe: {_RESERVED_TRAIN_KEYS[key]}")
        if key not in fields:
            import difflib

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
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0 and key in (
            "learning_rate", "num_train_epochs", "per_device_train_batch_size",
            "per_device_eval_batch_size", "weight_decay", "warmup_steps",
        ):
            raise HFTransferError(f"train.{key} must not be negative, got {value}")
    # Values TrainingArguments rejects, judged with the kit's defaults beneath them (as training
    # will run): `load_best_model_at_end` alone is fine, since the kit saves every epoch.
    from .engine import KIT_DEFAULTS, best_model_needs_eval

    make_training_arguments(best_model_needs_eval({**KIT_DEFAULTS, **out}), "/nonexistent/hftransfer-validation")
    return out


def make_training_arguments(values: dict[str, Any], output_dir: str):
    """``TrainingArguments(**values)``; a rejected value becomes an error naming its key."""
    from transformers import TrainingArguments

    try:
        return TrainingArguments(output_dir=output_dir, **values)
    except (ValueError, TypeError) as exc:
        message = str(exc).splitlines()[0]
        culprit = next((k for k in values if _rejects(k, values[k])), None)
        where = f"train.{culprit}" if culprit else "train"
        raise HFTransferError(f"{where}: {message}") from None


def _rejects(key: str, value: Any) -> bool:
    from transformers import TrainingArguments

    try:
        TrainingArguments(output_dir="/nonexistent/hftransfer-validation", **{key: value})
        return False
    except (ValueError, TypeError):
        return True
