"""Fine-tuning strategies: ``full`` (with L2-SP toward the source weights and layer-wise learning
rate decay), ``partial-freeze`` (with ULMFiT-style gradual unfreezing) and ``scratch`` (the same
architecture from random weights: the no-transfer baseline)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import HFTransferError
from ..registry import register_strategy
from .base import Strategy


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
            if self.layer_lr_decay is not None and not 0 < self.layer_lr_decay <= 1:
                raise HFTransferError(
                    f"strategy.layer_lr_decay must be > 0 and at most 1 (a decay γ, e.g. 0.9), got "
                    f"{self.layer_lr_decay}"
                )

    def prepare(self, model):
        # θ₀: the source weights, for L2-SP and for reporting how far training moved them.
        self.anchors = {n: p.detach().clone() for n, p in model.named_parameters()
                        if n not in self.new_params}
        self.head = [n for n, _ in model.named_parameters() if n in self.new_params]
        return model

    def extra_loss(self, model, inputs, outputs):
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


def layer_groups(model) -> list[list[tuple[str, torch.nn.Parameter]]]:
    """The model's parameters by depth: [embeddings, layer 1, ..., layer L, top + head].

    The layers are the ModuleList of the base model whose length is the config's
    ``num_hidden_layers``; when several match (wav2vec2's convolutional feature encoder is a
    ModuleList too), the one named ``layer``/``layers`` inside an ``encoder`` wins, then the
    first. What the base model registers before it counts as embeddings, what comes after
    (pooler, final norm) and everything outside the base model (the head) as top."""
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
