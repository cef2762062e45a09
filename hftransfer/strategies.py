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
from .models import load_adapter, load_config, load_pretrained, source_config, source_location
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
    augments: ClassVar[bool] = True
    """Whether training sees the task's augmentation (not for features computed once and cached)."""

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any, task: "Task"):
        self.options = options
        self.task = task
        self.new_params: set[str] = set()  # parameters initialised fresh (the head), by build_model

    @property
    def new_modules(self) -> list[str]:
        return sorted({name.rsplit(".", 1)[0] for name in self.new_params})

    @classmethod
    def validate_recipe(cls, recipe: "Recipe") -> None:
        """Checks that need the whole recipe; raise HFTransferError."""

    # --- lifecycle hooks --------------------------------------------------------------------
    def build_model(self, spec: "ModelSpec", labels: list[str]):
        """Load the source model with a head sized for ``labels``."""
        if spec.config is not None:
            return self.random_model(spec, labels)
        location = source_location(spec)
        source_config = load_config(location, spec)
        model, info = load_pretrained(
            self.task.auto_class, location, spec,
            ignore_mismatched_sizes=True, output_loading_info=True,
            **self.task.model_kwargs(labels), **self.config_overrides(source_config),
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
        self.new_params = new
        return model

    def config_overrides(self, config) -> dict[str, Any]:
        """Changes to the source config that the strategy needs (on top of the label sizing)."""
        return {}

    def random_model(self, spec: "ModelSpec", labels: list[str]):
        """The source architecture with random weights (``model.config``, or ``scratch``)."""
        config = source_config(spec, **self.task.model_kwargs(labels))
        config.update(self.config_overrides(config))
        model = self.task.auto_class.from_config(config, trust_remote_code=spec.trust_remote_code)
        self.new_params = {name for name, _ in model.named_parameters()}
        logger.info("%s: randomly initialised from its config", config.model_type)
        return model

    def check_model(self, config) -> None:
        """Checks of the recipe against the source model's config, before any weights load."""

    def prepare(self, model):
        """Freeze or wrap the model before training; returns the model to train."""
        return model

    def extra_loss(self, model) -> "torch.Tensor | None":
        """A term added to the task loss during training (regularisers)."""
        return None

    def parameter_groups(self, model) -> "list[tuple[list[tuple[str, torch.nn.Parameter]], float]] | None":
        """(named parameters, learning-rate scale) groups for the optimizer, covering every
        parameter that trains now or later; None = the Trainer's default (what requires grad)."""
        return None

    def report(self, model) -> dict[str, Any]:
        """Strategy facts for metrics.json["transfer"] after training."""
        return {}

    def prepare_data(self, train_ds, evals: dict[str, Any], collator):
        """Turn the tokenised splits into what the prepared model trains on (default: as is)."""
        return train_ds, evals, collator

    def count_parameters(self, model) -> dict[str, int]:
        """Trainable and total parameters of what this strategy trains and saves."""
        return count_parameters(model)

    def callbacks(self) -> list:
        """TrainerCallbacks the strategy needs (schedules of unfreezing, ...)."""
        return []

    @property
    def trainer_class(self) -> type:
        """The Trainer subclass that runs this strategy."""
        from .trainer import TransferTrainer

        return TransferTrainer

    def save(self, model, directory: Path) -> None:
        model.save_pretrained(directory)

    def export(self, model, directory: Path, processor: Any, recipe: "Recipe", metrics: dict[str, Any]) -> None:
        """Write anything beyond the model, processor and card into the finished run (default: nothing)."""

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


@dataclass
class Regularization:
    """``regularization: {type: l2sp, weight: λ, head_weight: β}``: λ‖θ − θ₀‖² over the
    transferred parameters (θ₀ = source weights) + β‖θ_head‖² over the new head (Li et al., 2018)."""

    type: str = "l2sp"
    weight: float = 0.01
    head_weight: float = 0.01

    def __post_init__(self) -> None:
        if self.type != "l2sp":
            raise HFTransferError(f"strategy.regularization.type {self.type!r} is unknown; valid: l2sp")
        for key in ("weight", "head_weight"):
            if getattr(self, key) < 0:
                raise HFTransferError(
                    f"strategy.regularization.{key} must be >= 0, got {getattr(self, key)}"
                )


@register_strategy("full")
class FullFineTune(Strategy):
    """Fine-tune every weight of the source model, with a new head. Options: ``regularization``
    (L2-SP toward the source weights) and ``layer_lr_decay`` (layer l of L learns at lr·γ^(L−l))."""

    description = "fine-tune all weights of the source model with a new task head"
    defaults = {"learning_rate": 1e-4, "num_train_epochs": 3, "warmup_steps": 0.1}

    @dataclass
    class Options:
        regularization: Regularization | None = None
        layer_lr_decay: float | None = None
        """γ in (0, 1]: layer l of L learns at lr·γ^(L−l), the embeddings at lr·γ^L, the head at lr."""

        def __post_init__(self) -> None:
            if self.layer_lr_decay is not None and self.layer_lr_decay <= 0:
                raise HFTransferError(
                    f"strategy.layer_lr_decay must be > 0 (e.g. 0.9), got {self.layer_lr_decay}"
                )

    def prepare(self, model):
        # θ₀: the source weights, for L2-SP and for reporting how far training moved them.
        self.anchors = {n: p.detach().clone() for n, p in model.named_parameters()
                        if n not in self.new_params}
        self.head = [n for n, _ in model.named_parameters() if n in self.new_params]
        return model

    def extra_loss(self, model):
        reg = self.options.regularization
        if reg is None:
            return None
        params = dict(model.named_parameters())
        loss = 0.0
        for name, anchor in self.anchors.items():
            param = params[name]
            if param.requires_grad:
                if anchor.device != param.device:  # once: the anchors follow the model
                    self.anchors[name] = anchor = anchor.to(param.device)
                loss = loss + ((param - anchor) ** 2).sum()
        head = sum((params[n] ** 2).sum() for n in self.head if params[n].requires_grad)
        return reg.weight * loss + reg.head_weight * head

    def parameter_groups(self, model):
        if self.options.layer_lr_decay is None:
            return None
        groups = layer_groups(model)
        gamma, depth = self.options.layer_lr_decay, len(groups) - 2
        # groups = [embeddings, layer 1 .. layer L, top + head]
        scales = [gamma ** (depth - l) for l in range(depth + 1)] + [1.0]
        return [(named, scale) for named, scale in zip(groups, scales) if named]

    def report(self, model):
        if not self.anchors:
            return {}
        params = dict(model.named_parameters())
        squared = sum(float(((params[n].detach() - a.to(params[n].device)) ** 2).sum())
                      for n, a in self.anchors.items())
        return {"distance_from_source": squared ** 0.5}


def layer_groups(model) -> "list[list[tuple[str, torch.nn.Parameter]]]":
    """The model's parameters by depth: [embeddings, layer 1, ..., layer L, top + head].

    The layers are the ModuleList of the base model whose length is the config's
    ``num_hidden_layers``; when several match (wav2vec2's convolutional feature encoder is a
    ModuleList too), the one named ``layer``/``layers`` inside an ``encoder`` wins, then the
    first. What the base model registers before it counts as embeddings, what comes after
    (pooler, final norm) and everything outside the base model (the head) as top."""
    import torch

    config = model.config
    depth = getattr(config, "num_hidden_layers", None)
    if depth is None and hasattr(config, "get_text_config"):
        depth = getattr(config.get_text_config(), "num_hidden_layers", None)
    base = model.base_model
    candidates = [name for name, module in base.named_modules()
                  if isinstance(module, torch.nn.ModuleList) and len(module) == depth]

    def rank(name: str) -> tuple[bool, bool]:  # False sorts first: the likelier encoder stack
        parts = name.split(".")
        return parts[-1] not in ("layer", "layers"), "encoder" not in parts

    layers_name = min(candidates, key=rank) if candidates else None  # min keeps the first of ties
    if layers_name is None:
        raise HFTransferError(
            f"cannot find the {depth} encoder layers of model type {config.model_type!r}; "
            "layer-wise options (freeze_layers, layer_lr_decay) need a layered encoder"
        )
    prefix = f"{model.base_model_prefix}." if base is not model else ""
    layer_prefix = f"{prefix}{layers_name}."
    groups: list[list] = [[] for _ in range(depth + 2)]
    seen_layers = False
    for name, param in model.named_parameters():
        if name.startswith(layer_prefix):
            seen_layers = True
            index = int(name[len(layer_prefix):].split(".", 1)[0])
            groups[1 + index].append((name, param))
        elif name.startswith(prefix) and not seen_layers:
            groups[0].append((name, param))
        else:
            groups[-1].append((name, param))
    return groups


def _depth(model) -> int:
    return len(layer_groups(model)) - 2


@register_strategy("partial-freeze")
class PartialFreeze(FullFineTune):
    """Freeze the embeddings and the bottom ``freeze_layers`` encoder layers (a count, or a
    fraction of the depth); with ``gradual_unfreeze``, unfreeze one more layer group from the top
    every ``unfreeze_every`` epochs (or steps), ULMFiT style."""

    description = "freeze embeddings + bottom k layers (optionally unfreeze gradually), train the rest"
    defaults = {"learning_rate": 1e-4, "num_train_epochs": 3, "warmup_steps": 0.1}

    @dataclass
    class Options(FullFineTune.Options):
        freeze_layers: float = 0.5
        """How many of the bottom encoder layers to freeze: a count (3) or a fraction (0.5)."""
        freeze_embeddings: bool = True
        gradual_unfreeze: bool = False
        unfreeze_every: int = 1
        unfreeze_unit: str = "epoch"

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.freeze_layers < 0:
                raise HFTransferError(f"strategy.freeze_layers must be >= 0, got {self.freeze_layers}")
            if self.unfreeze_every < 1:
                raise HFTransferError(f"strategy.unfreeze_every must be >= 1, got {self.unfreeze_every}")
            if self.unfreeze_unit not in ("epoch", "step"):
                raise HFTransferError(
                    f"strategy.unfreeze_unit must be epoch or step, got {self.unfreeze_unit!r}"
                )

    def frozen_count(self, depth: int) -> int:
        k = self.options.freeze_layers
        if 0 < k < 1:
            return int(round(k * depth))
        if not float(k).is_integer():
            raise HFTransferError(
                f"strategy.freeze_layers must be a whole number of layers or a fraction below 1, got {k:g}"
            )
        if k > depth:
            raise HFTransferError(
                f"strategy.freeze_layers is {k:g} but the model has only {depth} layers; "
                f"use at most {depth}, or a fraction such as 0.5"
            )
        return int(k)

    def check_model(self, config):
        import torch

        with torch.device("meta"):
            self.frozen_count(_depth(self.task.auto_class.from_config(config)))

    def prepare(self, model):
        model = super().prepare(model)
        self.groups = layer_groups(model)
        # The frozen stack, bottom first: embeddings (if frozen), then layers 1..k.
        k = self.frozen_count(len(self.groups) - 2)
        self.stack = ([self.groups[0]] if self.options.freeze_embeddings else []) + self.groups[1:1 + k]
        self.set_frozen(len(self.stack))
        return model

    def set_frozen(self, count: int) -> None:
        """Freeze the bottom ``count`` groups of the stack, unfreeze the rest of it."""
        for i, group in enumerate(self.stack):
            for _, param in group:
                param.requires_grad = i >= count

    def parameter_groups(self, model):
        # Every group that trains now or after unfreezing goes to the optimizer; frozen ones get
        # no gradient, so the optimizer leaves them bit-identical.
        groups = super().parameter_groups(model)
        if groups is not None:
            return groups
        return [([(n, p) for group in self.groups for n, p in group], 1.0)]

    def callbacks(self):
        if not self.options.gradual_unfreeze:
            return []
        from transformers import TrainerCallback

        strategy = self

        class GradualUnfreeze(TrainerCallback):
            """Unfreeze one more group from the top every N epochs/steps (stateless: resumes)."""

            def _update(self, state):
                done = state.epoch if strategy.options.unfreeze_unit == "epoch" else state.global_step
                thawed = int((done or 0) // strategy.options.unfreeze_every)
                strategy.set_frozen(max(0, len(strategy.stack) - thawed))

            def on_epoch_begin(self, args, state, control, **kwargs):
                self._update(state)

            def on_step_begin(self, args, state, control, **kwargs):
                self._update(state)

        return [GradualUnfreeze()]

    def report(self, model):
        frozen = sum(p.numel() for group in self.stack for _, p in group if not p.requires_grad)
        return {**super().report(model), "frozen_at_end": frozen}


@register_strategy("scratch")
class Scratch(FullFineTune):
    """The same architecture, randomly initialised and trained the same way: the baseline that
    shows what transfer bought."""

    description = "same architecture, random init, same training: the no-transfer baseline"
    defaults = FullFineTune.defaults

    @classmethod
    def validate_recipe(cls, recipe):
        if recipe.strategy_options.regularization is not None:
            raise HFTransferError(
                "strategy.regularization (l2sp) pulls toward the source weights, but scratch starts "
                "from random weights and has none; remove it or use strategy.name=full"
            )

    def build_model(self, spec, labels):
        return self.random_model(spec, labels)


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

        if recipe.model.config is not None:
            raise HFTransferError(
                "an adapter adapts pretrained weights, but model.config builds a random model that "
                "no run could reload; train it with strategy full (or save it) and adapt that"
            )
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
        # New (randomly initialised) modules must train in full, beside the adapter. PEFT's task
        # types take care of the usual head names; tasks PEFT has no type for list their head.
        extra = [m for m in self.new_modules if m and (self.task.peft_task_type is None
                                                       or m.split(".")[0] not in self.task.head_prefixes)]
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
        base = model.get_base_model()
        base.config.architectures = [type(base).__name__]
        base.config.save_pretrained(directory)

    def load_trained(self, run_dir, spec):
        from .models import ModelSpec as _Spec

        config = load_config(str(run_dir), _Spec(name_or_path=str(run_dir)))
        base = load_pretrained(self.task.auto_class, source_location(spec), spec, config=config)
        return load_adapter(base, Path(run_dir))


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
