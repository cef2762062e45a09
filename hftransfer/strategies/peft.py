"""Adapters through PEFT: the ``lora`` strategy (any PEFT method) and the plumbing it shares with
multi-task adapters — the config from a recipe's fields, the check of target modules, the
fallback to every linear layer, new modules trained beside the adapter, and the base config
saved next to it so plain ``transformers`` + ``peft`` reload the run."""
from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import rundir
from ..errors import HFTransferError
from ..models import is_embedded, load_adapter, load_config, load_pretrained, public_name, source_location
from ..recipe import ModelSpec, coerce
from ..registry import get_task, register_strategy
from .base import Strategy

if TYPE_CHECKING:
    from ..tasks.base import Task

LORA_DEFAULTS: dict[str, Any] = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1}
"""What LoRA gets unless the recipe says otherwise."""


def check_adapter_base(spec: ModelSpec, what: str) -> None:
    """An adapter is saved apart from its base, which must be a model others can load: not a
    random one (``model.config``), nor one reshaped from the source (``model.init``)."""
    if spec.init is not None:
        raise HFTransferError(
            f"{what} is saved apart from its base model, but model.init builds a network that exists "
            "nowhere else; train the reshaped network with strategy full (or distill) and adapt that run")
    if spec.config is not None:
        raise HFTransferError(
            f"{what} adapts pretrained weights, but model.config builds a random model that no run "
            "could reload; train it with strategy full (or save it) and adapt that")


def peft_config(fields: dict[str, Any], task_type: str | None, where: str = "strategy.peft",
                method_key: str | None = None):
    """A PEFT config from a recipe's fields: ``method`` picks the method (lora by default, with
    the kit's LoRA defaults beneath the recipe's values); any other key is the config's own.
    ``method_key`` is where the recipe names the method (``where.method`` unless said)."""
    kwargs = dict(fields)
    method = str(kwargs.pop("method", "lora"))
    method_key = method_key or f"{where}.method"
    config_cls = _config_class(method, method_key)
    if "target_modules" not in {f.name for f in dataclasses.fields(config_cls)}:  # prompt learning
        raise HFTransferError(
            f"{method_key}: {method!r} learns prompts rather than adapting the model's layers; the "
            "kit trains layer adapters (lora, ia3, loha, lokr, adalora, boft, oft, ...)")
    if config_cls.__name__ == "LoraConfig":
        kwargs = {**LORA_DEFAULTS, **kwargs}
    for key in ("task_type", "peft_type"):
        if key in kwargs:
            raise HFTransferError(f"{where}.{key} is set by the kit; remove it")
    kwargs = {key: _typed(config_cls, key, value, where) for key, value in kwargs.items()}
    try:
        return config_cls(task_type=task_type, **kwargs)
    except TypeError as exc:
        allowed = sorted(f.name for f in dataclasses.fields(config_cls) if f.init)
        raise HFTransferError(f"{where}: {exc} ({config_cls.__name__} fields: {', '.join(allowed)})") from None
    except ValueError as exc:
        raise HFTransferError(f"{where}: {str(exc).splitlines()[0]}") from None


def _typed(config_cls: type, key: str, value: Any, where: str) -> Any:
    """A PEFT field's value checked against its annotation where that is a plain type (PEFT
    itself takes ``r: "abc"`` and fails much later)."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # an annotation that does not resolve: leave the value to PEFT
        return value
    tp = hints.get(key)
    simple = (int, float, bool, str, type(None))
    if tp in simple[:4] or typing.get_origin(tp) in (typing.Union, types.UnionType) \
            and all(a in simple for a in typing.get_args(tp)):
        return coerce(value, tp, f"{where}.{key}")
    return value


def _config_class(method: str, method_key: str):
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    norm = lambda s: s.lower().replace("-", "").replace("_", "")  # noqa: E731
    for peft_type in PeftType:
        if norm(peft_type.value) == norm(method):
            return PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    raise HFTransferError(
        f"{method_key} {method!r} is not a PEFT method; valid: "
        f"{', '.join(sorted(t.value.lower() for t in PeftType))}")


def check_targets(fields: dict[str, Any], task: "Task", config: Any, where: str = "strategy.peft") -> None:
    """``target_modules`` must name modules the model has (checked on its config alone)."""
    targets = fields.get("target_modules")
    if targets is None:
        return
    with torch.device("meta"):  # the module tree without allocating weights
        names = [n for n, _ in task.auto_class.from_config(config).named_modules() if n]
    if isinstance(targets, str):
        if targets == "all-linear" or any(re.fullmatch(targets, n) for n in names):
            return
        missing = [targets]
    else:
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
        raise HFTransferError(
            f"{where}.target_modules: {', '.join(map(repr, missing))} not found in the model; "
            f"its module names include: {', '.join(leaves)}")


def add_adapter(model, config, task: "Task", new_modules: list[str], adapter_name: str = "default"):
    """``model`` with an adapter named ``adapter_name``. Without ``target_modules`` PEFT picks
    the usual modules of the architecture, and every linear layer where it knows none. Modules
    the source did not have (the head) train in full and are saved beside the adapter: PEFT's
    task types cover the usual head names, the rest are listed here."""
    from peft import get_peft_model
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

    if hasattr(config, "target_modules") and config.target_modules is None \
            and model.config.model_type not in known:
        config.target_modules = "all-linear"
    extra = [m for m in new_modules
             if m and (task.peft_task_type is None or m.split(".")[0] not in task.head_prefixes)]
    if extra:
        config.modules_to_save = sorted(set(config.modules_to_save or []) | set(extra))
    try:
        with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5: not the user's to fix
            warnings.filterwarnings("ignore", category=FutureWarning)
            return get_peft_model(model, config, adapter_name=adapter_name)
    except ValueError as exc:
        raise HFTransferError(f"strategy.peft: {str(exc).splitlines()[0]}") from None


def portable_base_name(directory: Path, spec: ModelSpec | None) -> None:
    """Name the embedded MiniLM by its Hub id in a saved adapter config, not by the path of its
    bundled copy in this environment's site-packages: a run that names the path breaks for plain
    ``peft`` as soon as the environment moves. (The kit itself loads the base from the run's
    recipe, and maps that Hub id to the bundled copy.) Rewritten after PEFT saved the adapter:
    given a Hub id, PEFT's save would look the base up online."""
    path = directory / "adapter_config.json"
    if spec is None or not is_embedded(spec.name_or_path) or not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = public_name(spec)
    rundir.write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_base_config(base, directory: Path) -> None:
    """The base model's config with the target's label names, next to an adapter: plain
    transformers rebuilds the base with the right head from it before attaching the adapter."""
    base.config.architectures = [type(base).__name__]
    base.config.save_pretrained(directory)


def merge_adapter(model, what: str, instead: str):
    """``model`` (a PEFT model) with its adapter merged into the base weights: a plain
    ``transformers`` model. A method that cannot merge is a user error: ``what`` names the
    command in it, ``instead`` says what to do."""
    try:
        return model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError) as exc:
        method = getattr(getattr(model, "peft_config", {}).get("default"), "peft_type", "this adapter")
        raise HFTransferError(
            f"{what}: {getattr(method, 'value', method)} cannot be merged into the base model "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {instead}"
        ) from None


def load_base(task: "Task", run_dir: Path, spec: ModelSpec):
    """The base model an adapter in ``run_dir`` was trained on, with the run's head config."""
    config = load_config(str(run_dir), ModelSpec(name_or_path=str(run_dir)))
    return load_pretrained(task.auto_class, source_location(spec), spec, config=config)


@register_strategy("lora")
class PeftAdapter(Strategy):
    """Train a PEFT adapter (LoRA by default) plus the new head; the source weights stay frozen.

    ``peft:`` takes any PEFT config field; ``peft.method`` picks the method (lora, ia3, loha,
    adalora, ...). Without ``target_modules`` PEFT picks the usual ones for the architecture
    (attention query/value for BERT), falling back to every linear layer of the encoder.
    """

    description = "PEFT adapter (LoRA r=8 by default, any PEFT method via peft.method) + new head"
    defaults = {"learning_rate": 1e-3, "num_train_epochs": 3, "warmup_steps": 0.1}
    saves_adapter = True

    @dataclass
    class Options:
        peft: dict[str, Any] = field(default_factory=dict)
        """Any PEFT config field; ``method`` picks the PEFT method (default lora)."""

    @classmethod
    def validate_recipe(cls, recipe):
        check_adapter_base(recipe.model, "an adapter")
        peft_config(recipe.strategy_options.peft, get_task(recipe.task_type).peft_task_type)

    def check_model(self, config):
        check_targets(self.options.peft, self.task, config)

    def build_model(self, spec, labels):
        self.spec = spec  # the saved adapter config names its base by the spec's public name
        return super().build_model(spec, labels)

    def prepare(self, model):
        config = peft_config(self.options.peft, self.task.peft_task_type)
        return add_adapter(model, config, self.task, self.new_modules)

    def save(self, model, directory):
        model.save_pretrained(directory)
        portable_base_name(Path(directory), getattr(self, "spec", None))
        write_base_config(model.get_base_model(), directory)

    def load_trained(self, run_dir, spec):
        return load_adapter(load_base(self.task, Path(run_dir), spec), Path(run_dir))
