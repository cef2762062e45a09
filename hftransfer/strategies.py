"""Strategies: how knowledge moves from the source model to the target task.

A strategy decides which parameters train, which extra loss terms apply and what gets saved.
The engine calls the same hooks for every strategy, so a new one is one registered class::

    @register_strategy("my-strategy")
    class MyStrategy(Strategy):
        def prepare(self, model): ...
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import HFTransferError
from .models import load_config, load_pretrained, resolve
from .registry import register_strategy

if TYPE_CHECKING:
    import torch

    from .recipe import ModelSpec, Recipe
    from .tasks import Task

logger = logging.getLogger("hftransfer")


class Strategy:
    """Base class: fine-tune the whole source model with a new task head."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {
        "learning_rate": 1e-4, "num_train_epochs": 3, "warmup_steps": 0.1,
    }
    """TrainingArguments defaults for this strategy (the recipe's ``train:`` wins)."""
    saves_adapter: ClassVar[bool] = False

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any, task: "Task"):
        self.options = options
        self.task = task
        self.new_modules: list[str] = []  # modules initialised fresh (the head), set by build_model

    @classmethod
    def validate_recipe(cls, recipe: "Recipe") -> None:
        """Checks that need the whole recipe; raise HFTransferError."""

    # --- lifecycle hooks --------------------------------------------------------------------
    def build_model(self, spec: "ModelSpec", labels: list[str]):
        """Load the source model with a head sized for ``labels``."""
        location = resolve(spec)
        source_config = load_config(location, spec)
        model, info = load_pretrained(
            self.task.auto_class, location, spec,
            ignore_mismatched_sizes=True, output_loading_info=True,
            **self.task.model_kwargs(labels),
        )
        new = set(info.get("missing_keys", ())) | {k for k, *_ in info.get("mismatched_keys", ())}
        old_labels = _label_names(source_config)
        if old_labels is not None and old_labels != labels and not new & _head_params(model, self.task):
            # Same head shape, different label set: the source head means nothing here.
            for name, module in model.named_modules():
                if name.split(".")[0] in self.task.head_prefixes and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            new |= _head_params(model, self.task)
        if old_labels is not None and old_labels != labels:
            logger.warning("source labels %s differ from the target's %s: the head is replaced",
                           old_labels, labels)
        self.new_modules = sorted({k.rsplit(".", 1)[0] for k in new})
        return model

    def check_model(self, config) -> None:
        """Checks of the recipe against the source model's config, before any weights load."""

    def prepare(self, model):
        """Freeze or wrap the model before training; returns the model to train."""
        return model

    def extra_loss(self, model) -> "torch.Tensor | None":
        """A term added to the task loss during training (regularisers)."""
        return None

    def callbacks(self) -> list:
        """TrainerCallbacks the strategy needs (schedules of unfreezing, ...)."""
        return []

    def save(self, model, directory: Path) -> None:
        model.save_pretrained(directory)

    def load_trained(self, run_dir: Path, spec: "ModelSpec"):
        """Load a run directory written by :meth:`save` for inference."""
        from .models import ModelSpec as _Spec

        return load_pretrained(self.task.auto_class, str(run_dir), _Spec(name_or_path=str(run_dir)))


def _label_names(config) -> list[str] | None:
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith(("ForSequenceClassification", "ForTokenClassification",
                           "ForImageClassification", "ForAudioClassification")) for a in archs):
        return None
    id2label = getattr(config, "id2label", None) or {}
    return [id2label[i] for i in sorted(id2label)]


def _head_params(model, task: "Task") -> set[str]:
    return {n for n, _ in model.named_parameters() if n.split(".")[0] in task.head_prefixes}


def count_parameters(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total}


@register_strategy("full")
class FullFineTune(Strategy):
    """Fine-tune every weight of the source model, with a new head."""

    description = "fine-tune all weights of the source model with a new task head"
    defaults = {"learning_rate": 1e-4, "num_train_epochs": 3, "warmup_steps": 0.1}


@register_strategy("scratch")
class Scratch(Strategy):
    """The same architecture, randomly initialised and trained the same way: the baseline that
    shows what transfer bought."""

    description = "same architecture, random init, same training: the no-transfer baseline"
    defaults = FullFineTune.defaults

    def build_model(self, spec, labels):
        location = resolve(spec)
        config = load_config(location, spec, **self.task.model_kwargs(labels))
        model = self.task.auto_class.from_config(config, trust_remote_code=spec.trust_remote_code)
        self.new_modules = [""]
        return model


def _peft_config_class(method: str):
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    norm = lambda s: s.lower().replace("-", "").replace("_", "")  # noqa: E731
    for peft_type in PeftType:
        if norm(peft_type.value) == norm(method):
            return PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    raise HFTransferError(
        f"strategy.peft.method {method!r} is not a PEFT method; valid: "
        f"{', '.join(sorted(t.value.lower() for t in PeftType))}"
    )


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

    LORA_DEFAULTS: ClassVar[dict[str, Any]] = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1}

    @classmethod
    def validate_recipe(cls, recipe):
        from .registry import get_task

        cls.peft_config(recipe.strategy_options, get_task(recipe.task_type).peft_task_type)

    @classmethod
    def peft_config(cls, options, task_type: str):
        kwargs = dict(options.peft)
        method = str(kwargs.pop("method", "lora"))
        config_cls = _peft_config_class(method)
        if config_cls.__name__ == "LoraConfig":
            kwargs = {**cls.LORA_DEFAULTS, **kwargs}
        for key in ("task_type", "peft_type"):
            if key in kwargs:
                raise HFTransferError(f"strategy.peft.{key} is set by the kit; remove it")
        try:
            return config_cls(task_type=task_type, **kwargs)
        except TypeError as exc:
            import dataclasses

            allowed = sorted(f.name for f in dataclasses.fields(config_cls) if f.init)
            raise HFTransferError(
                f"strategy.peft: {exc} ({config_cls.__name__} fields: {', '.join(allowed)})"
            ) from None
        except ValueError as exc:
            raise HFTransferError(f"strategy.peft: {str(exc).splitlines()[0]}") from None

    def check_model(self, config):
        targets = self.options.peft.get("target_modules")
        if targets is None:
            return
        import torch

        with torch.device("meta"):  # the module tree without allocating weights
            skeleton = self.task.auto_class.from_config(config)
        _check_targets(targets, [n for n, _ in skeleton.named_modules() if n])

    def prepare(self, model):
        from peft import get_peft_model

        config = self.peft_config(self.options, self.task.peft_task_type)
        if getattr(config, "target_modules", "unset") is None and hasattr(config, "target_modules"):
            from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

            if model.config.model_type not in known:
                config.target_modules = "all-linear"
        # New (randomly initialised) modules must train in full, beside the adapter.
        extra = [m for m in self.new_modules if m and m.split(".")[0] not in self.task.head_prefixes]
        if extra:
            config.modules_to_save = sorted(set(config.modules_to_save or []) | set(extra))
        try:
            return get_peft_model(model, config)
        except ValueError as exc:
            raise HFTransferError(f"strategy.peft: {str(exc).splitlines()[0]}") from None

    def save(self, model, directory):
        model.save_pretrained(directory)
        # The base config with the target's label names, so plain transformers can rebuild the
        # base model with the right head before attaching the adapter.
        model.get_base_model().config.save_pretrained(directory)

    def load_trained(self, run_dir, spec):
        from peft import PeftModel

        from .models import ModelSpec as _Spec

        config = load_config(str(run_dir), _Spec(name_or_path=str(run_dir)))
        base = load_pretrained(self.task.auto_class, resolve(spec), spec, config=config)
        return PeftModel.from_pretrained(base, str(run_dir))


def _check_targets(targets: Any, names: list[str]) -> None:
    import re

    if isinstance(targets, str):
        if targets == "all-linear" or any(re.fullmatch(targets, n) for n in names):
            return
        missing = [targets]
    else:
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
        raise HFTransferError(
            f"strategy.peft.target_modules: {', '.join(map(repr, missing))} not found in the model; "
            f"its module names include: {', '.join(leaves)}"
        )
