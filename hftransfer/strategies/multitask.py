"""The ``multitask`` strategy: several target tasks share one transferred encoder and each keeps
its own head, so what one task learns can help the others (``tasks:`` in the recipe)::

    tasks:
      sentiment: {task: {type: text-classification}, data: {train: sst2/train.csv}}
      ner: {task: {type: token-classification}, data: {train: conll/train.txt}}
    strategy: {name: multitask, sampling: temperature, temperature: 2, loss_weights: {ner: 1.0}}

Every batch holds one task's examples (:mod:`hftransfer.mixing` picks the task of each step);
the Trainer stays the engine. With ``adapters: lora`` the encoder stays frozen and every task
trains its own PEFT adapter (plus head) on it. The run writes ``RUN/tasks/NAME/`` for every
task: a standalone model (or adapter) directory that plain ``transformers`` loads.
"""
from __future__ import annotations

import logging
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import rundir
from ..errors import HFTransferError
from ..mixing import SAMPLING, TaskBatchSampler
from ..models import load_adapter, load_pretrained
from ..recipe import ModelSpec, quote
from ..registry import get_task, register_strategy
from ..tasks.multi import MultiTaskDataset, TaskSet
from .base import Strategy, count_parameters
from .finetune import FullFineTune, Regularization
from .peft import (
    add_adapter,
    check_adapter_base,
    check_targets,
    load_base,
    peft_config,
    portable_base_name,
    write_base_config,
)

logger = logging.getLogger("hftransfer")


class MultiTaskModel(nn.Module):
    """One shared encoder and one task model per task.

    Every task model is the task's own ``AutoModelFor...`` (or a PEFT model around it) whose
    encoder attribute is the shared module. Only ``encoder`` and ``heads.NAME`` (each task
    model's other modules) are registered here, so every weight appears once in the state dict,
    the optimizer and DDP; the task models are kept aside to run the forward pass."""

    accepts_loss_kwargs = False  # every head returns its batch's mean loss

    def __init__(self, task_models: dict[str, Any], encoder: nn.Module, encoder_attr: str,
                 loss_weights: dict[str, float] | None = None, adapters: dict[str, str] | None = None):
        super().__init__()
        self.names = list(task_models)
        self.encoder = encoder
        self.heads = nn.ModuleDict()
        for name, model in task_models.items():
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            if inner._parameters:
                raise HFTransferError(
                    f"{type(inner).__name__} keeps weights outside its modules; multitask cannot "
                    "share its encoder"
                )
            self.heads[name] = nn.ModuleDict({child: module for child, module in inner.named_children()
                                              if child != encoder_attr})
        object.__setattr__(self, "task_models", dict(task_models))  # not submodules: see above
        self.loss_weights = [float((loss_weights or {}).get(n, 1.0)) for n in self.names]
        self.adapters = adapters or {}
        self.active: str | None = None
        self.config = self.base_model_of(self.names[0]).config  # the Trainer reads model.config

    def base_model_of(self, name: str):
        """The plain transformers model of a task (inside its PEFT wrapper, if any)."""
        model = self.task_models[name]
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def activate(self, name: str) -> Any:
        """Switch the shared encoder to ``name``'s adapter (no-op without adapters); returns the
        task's model."""
        if self.adapters and self.active != name:
            from peft.tuners.tuners_utils import BaseTunerLayer

            trainable = [p for p in self.parameters() if p.requires_grad]
            for module in self.task_models[name].modules():
                if isinstance(module, BaseTunerLayer):
                    module.set_adapter(self.adapters[name])
            # PEFT freezes the inactive adapters; the optimizer and DDP were built with every
            # task's adapter trainable, and an adapter outside the graph just gets no gradient.
            for param in trainable:
                param.requires_grad_(True)
        self.active = name
        return self.task_models[name]

    def forward(self, task_index: torch.Tensor, labels: torch.Tensor | None = None, **inputs: Any):
        index = int(task_index[0])
        output = self.activate(self.names[index])(labels=labels, **inputs)
        if labels is not None and self.training and self.loss_weights[index] != 1.0:
            output["loss"] = output["loss"] * self.loss_weights[index]
        return output


def share_encoder(models: dict[str, Any]) -> tuple[nn.Module, str]:
    """Make every task model use one encoder: the largest of theirs (a BERT sequence classifier's
    encoder has the pooler that a token classifier's lacks). All were loaded from the same
    source, so the weights they have in common are equal."""
    attr = next(iter(models.values())).base_model_prefix
    encoder = max((getattr(m, attr) for m in models.values()),
                  key=lambda e: sum(p.numel() for p in e.parameters()))
    for model in models.values():
        if model.base_model_prefix != attr:
            raise HFTransferError("the task models do not share an encoder layout")
        setattr(model, attr, encoder)
    return encoder, attr


@register_strategy("multitask")
class MultiTask(FullFineTune):
    """Several tasks on one shared encoder, one head each (``tasks:`` in the recipe). Options:
    ``sampling`` (proportional, temperature, round_robin, weighted), ``temperature``,
    ``sampling_weights``, ``loss_weights``, ``freeze_encoder``, ``regularization`` (L2-SP) and
    ``adapters`` (a PEFT method: one adapter per task on a frozen encoder; ``peft:`` its fields)."""

    description = "one shared encoder, one head per task, trained together on mixed single-task batches"
    defaults = {"learning_rate": 1e-4, "num_train_epochs": 3, "warmup_steps": 0.1}
    multitask = True

    @dataclass
    class Options:
        sampling: str = "proportional"
        """How steps pick a task: proportional (to its size), temperature (∝ n^(1/T)),
        round_robin (in turn) or weighted (∝ sampling_weights)."""
        temperature: float = 2.0
        sampling_weights: dict[str, Any] | None = None
        loss_weights: dict[str, Any] | None = None
        """A factor on each task's loss (default 1)."""
        freeze_encoder: bool = False
        regularization: Regularization | None = None
        adapters: str | None = None
        """A PEFT method (lora, ia3, loha, ...): the encoder stays frozen and every task trains
        its own adapter plus head."""
        peft: dict[str, Any] = field(default_factory=dict)
        """Fields of the adapters' PEFT config (r, lora_alpha, target_modules, ...)."""

        def __post_init__(self) -> None:
            if self.sampling not in SAMPLING:
                raise HFTransferError(
                    f"strategy.sampling {self.sampling!r} is unknown; valid: {', '.join(SAMPLING)}")
            if self.temperature <= 0:
                raise HFTransferError(f"strategy.temperature must be > 0, got {self.temperature}")
            if self.sampling_weights is not None and self.sampling != "weighted":
                raise HFTransferError(
                    "strategy.sampling_weights apply to sampling: weighted; set strategy.sampling=weighted")
            if self.sampling == "weighted" and self.sampling_weights is None:
                raise HFTransferError(
                    "strategy.sampling: weighted needs strategy.sampling_weights: {TASK: weight, ...}")
            if self.adapters is None and self.peft:
                raise HFTransferError("strategy.peft configures adapters; set strategy.adapters (e.g. lora)")
            if self.adapters is not None and (self.freeze_encoder or self.regularization is not None):
                raise HFTransferError(
                    "strategy.adapters keeps the encoder frozen already; remove "
                    + ("freeze_encoder" if self.freeze_encoder else "regularization"))

    @classmethod
    def validate_recipe(cls, recipe):
        o = recipe.strategy_options
        names = list(recipe.members)
        for key in ("sampling_weights", "loss_weights"):
            weights = getattr(o, key)
            if weights is None:
                continue
            if not isinstance(weights, dict):
                raise HFTransferError(f"strategy.{key} must map task names to numbers, got {quote(weights)}")
            unknown = sorted(set(map(str, weights)) - set(names))
            if unknown:
                raise HFTransferError(
                    f"strategy.{key} names {', '.join(map(repr, unknown))}, which is not a task; "
                    f"the tasks are {', '.join(names)}")
            for name, value in weights.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise HFTransferError(f"strategy.{key}.{name} must be a number, got {quote(value)}")
                if value < 0:
                    raise HFTransferError(f"strategy.{key}.{name} must not be negative, got {value}")
            full = [float(weights.get(n, 1.0 if key == "loss_weights" else 0.0)) for n in names]
            if not any(full):
                raise HFTransferError(
                    f"strategy.{key} are all zero: no task would " + ("train" if key == "loss_weights" else "be sampled"))
            if key == "sampling_weights":
                never = [n for n, w in zip(names, full) if w == 0]
                if never:
                    raise HFTransferError(
                        f"strategy.sampling_weights give {', '.join(never)} no weight, so it would never "
                        "train; give it a positive weight or remove the task")
        if o.adapters is not None:
            check_adapter_base(recipe.model, "strategy.adapters")
            for name, entry in recipe.members.items():
                cls.adapter_config(o, get_task(entry.task_type).peft_task_type)
        # The tasks must read one kind of input (the TaskSet refuses a mix).
        TaskSet({n: get_task(e.task_type)(e.task_options) for n, e in recipe.members.items()}, {})

    @staticmethod
    def adapter_config(options, peft_task_type):
        """The PEFT config of one task's adapter (``adapters`` is the method, ``peft`` its fields)."""
        return peft_config({**options.peft, "method": options.adapters}, peft_task_type,
                           method_key="strategy.adapters")

    # --- sampling ---------------------------------------------------------------------------
    def probabilities(self, sizes: list[int]) -> list[float] | None:
        o = self.options
        if o.sampling == "temperature":
            raw = [n ** (1.0 / o.temperature) for n in sizes]
        elif o.sampling == "weighted":
            raw = [float(o.sampling_weights.get(n, 0.0)) for n in self.task.names]
        else:
            return None
        total = sum(raw)
        return [r / total for r in raw]

    def batch_sampler(self, dataset: MultiTaskDataset, batch_size: int, seed: int, world_size: int,
                      grouped: bool = True):
        sizes = dataset.sizes()
        probabilities = self.probabilities(sizes)
        if probabilities is not None:
            logger.info("multitask sampling: %s", ", ".join(
                f"{n} {p:.2f}" for n, p in zip(self.task.names, probabilities)))
        lengths = dataset.lengths() if grouped else None
        return TaskBatchSampler(sizes, batch_size, probabilities, self.options.sampling == "round_robin",
                                seed, world_size, lengths)

    # --- model ------------------------------------------------------------------------------
    def build_model(self, spec, labels: dict[str, list[str]]):
        # Each task's own model from the source (its head sized and initialised for its labels).
        models, new_modules = {}, {}
        for name, task in self.task.members.items():
            builder = Strategy(None, task)
            models[name] = builder.build_model(spec, labels[name])
            new_modules[name] = builder.new_modules
        encoder, attr = share_encoder(models)
        adapters = None
        if self.options.adapters is not None:
            models, adapters = self._add_adapters(models, new_modules)
        self.spec = spec  # saved adapter configs name their base by the spec's public name
        model = MultiTaskModel(models, encoder, attr, self.options.loss_weights, adapters)
        # The heads are new (or re-initialised for their labels); the encoder is transferred.
        self.new_params = {n for n, _ in model.named_parameters() if n.startswith("heads.")}
        return model

    @staticmethod
    def adapter_names(names: list[str]) -> dict[str, str]:
        """PEFT names adapters inside its keys and finds them by substring, so the internal names
        cannot be task names ("ner" is inside "encoder"): task i's adapter is ``task_i_``, which
        no module or adapter name contains."""
        return {name: f"task_{i}_" for i, name in enumerate(names)}

    def _add_adapters(self, models: dict[str, Any], new_modules: dict[str, list[str]]):
        """One PEFT adapter per task on the shared encoder."""
        adapters = self.adapter_names(list(models))
        wrapped = {}
        for name, model in models.items():
            task = self.task.members[name]
            config = self.adapter_config(self.options, task.peft_task_type)
            with warnings.catch_warnings():  # "modifying a model with PEFT a second time": by design,
                warnings.simplefilter("ignore")  # every task adds its adapter to the shared encoder
                wrapped[name] = add_adapter(model, config, task, new_modules[name], adapters[name])
        return wrapped, adapters

    def check_model(self, config) -> None:
        if self.options.adapters is not None:
            check_targets(self.options.peft, next(iter(self.task.members.values())), config)

    def prepare(self, model):
        if self.options.adapters is not None:
            self.anchors, self.head = {}, []  # the encoder does not move: nothing to anchor
            return model
        if self.options.freeze_encoder:
            for param in model.encoder.parameters():
                param.requires_grad = False
        return super().prepare(model)  # anchors (L2-SP, distance from source) over the encoder

    def parameter_groups(self, model):
        return None

    def count_parameters(self, model) -> dict[str, Any]:
        """The whole model's counts, and per task what trains for it (its head, its adapter)
        against the size of its standalone model."""
        out: dict[str, Any] = count_parameters(model)
        encoder = [(n, p, _adapter_of(n, model.adapters)) for n, p in model.encoder.named_parameters()]
        base = sum(p.numel() for _, p, adapter in encoder if adapter is None)
        per_task = {}
        for name in model.names:
            own = [p for _, p, adapter in encoder if adapter is not None and adapter == model.adapters[name]]
            # A PEFT-wrapped head keeps its untrained original beside the trained copy.
            head = [p for n, p in model.heads[name].named_parameters() if "original_module" not in n.split(".")]
            trainable = sum(p.numel() for p in own + head if p.requires_grad)
            if not model.adapters:
                trainable += sum(p.numel() for _, p, _ in encoder if p.requires_grad)
            total = base + sum(p.numel() for p in own + head)
            per_task[name] = {"trainable": trainable, "total": total,
                              "percent": round(100 * trainable / max(total, 1), 4)}
        out["tasks"] = per_task
        return out

    # --- saving and loading -----------------------------------------------------------------
    def save(self, model, directory: Path) -> None:
        """``tasks/NAME/`` for every task: the standalone model (encoder + that head) or, with
        adapters, that task's adapter and head with the base config carrying its labels."""
        root = directory / rundir.TASKS
        root.mkdir(parents=True, exist_ok=True)
        for name in model.names:
            out = root / name
            if model.adapters:
                peft_model = model.activate(name)
                scratch = root / f".{name}.adapter"
                # PEFT drops the other adapters it knows of, and this task's PeftModel knows
                # only its own: leave the other tasks' weights out of what it saves.
                state = {k: v for k, v in peft_model.state_dict().items()
                         if _adapter_of(k, model.adapters) in (None, model.adapters[name])}
                peft_model.save_pretrained(scratch, selected_adapters=[model.adapters[name]], state_dict=state)
                shutil.rmtree(out, ignore_errors=True)
                (scratch / model.adapters[name]).rename(out)
                shutil.rmtree(scratch)
                portable_base_name(out, getattr(self, "spec", None))
                write_base_config(model.base_model_of(name), out)
            else:
                standalone = model.base_model_of(name)
                # Only the weights its class has: a token classifier has no use for the pooler
                # that the shared encoder kept for a sequence classifier.
                with torch.device("meta"):
                    expected = set(type(standalone)(standalone.config).state_dict())
                state = {k: v for k, v in standalone.state_dict().items() if k in expected}
                standalone.config.architectures = [type(standalone).__name__]
                standalone.save_pretrained(out, state_dict=state)
        rundir.write_json(directory / rundir.MANIFEST, {
            "tasks": {name: {"task": self.task.members[name].name, "path": f"{rundir.TASKS}/{name}"}
                      for name in model.names},
            "adapters": self.options.adapters,
        })

    def export(self, model, directory, processor) -> None:
        for name in model.names:
            processor.save_pretrained(directory / rundir.TASKS / name)

    def load_trained(self, run_dir: Path, spec):
        root = Path(run_dir) / rundir.TASKS
        models = {}
        for name, task in self.task.members.items():
            if self.options.adapters is not None:
                models[name] = load_base(task, root / name, spec)
            else:
                models[name] = load_pretrained(task.auto_class, str(root / name),
                                               ModelSpec(name_or_path=str(root / name)))
        encoder, attr = share_encoder(models)
        adapters = None
        if self.options.adapters is not None:
            adapters = self.adapter_names(list(models))
            models = {name: load_adapter(model, root / name, adapter_name=adapters[name])
                      for name, model in models.items()}
        return MultiTaskModel(models, encoder, attr, None, adapters)


def _adapter_of(param_name: str, adapters: dict[str, str]) -> str | None:
    """The internal adapter name a parameter belongs to (None: a base weight)."""
    parts = param_name.split(".")
    return next((a for a in adapters.values() if a in parts), None)
