"""Multi-task transfer (knowledge fusion): several target tasks share one transferred encoder and
each keeps its own head, so what one task learns can help the others.

A multi-task recipe names its tasks::

    tasks:
      sentiment: {task: {type: text-classification}, data: {train: sst2/train.csv}}
      ner: {task: {type: token-classification}, data: {train: conll/train.txt}}
    strategy: {name: multitask, sampling: temperature, temperature: 2, loss_weights: {ner: 1.0}}

Every batch holds one task's examples (padding and collation stay per task); a batch sampler
mixes the tasks as configured and the Trainer stays the engine. With ``adapters: lora`` the
encoder stays frozen and every task trains its own PEFT adapter (plus head) on it.

The run writes ``RUN/tasks/NAME/`` for every task: a standalone model (or adapter) directory with
the tokenizer, label names and a model card, which plain ``transformers`` loads.
"""
from __future__ import annotations

import bisect
import json
import logging
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .trainer import TransferTrainer
from .errors import HFTransferError
from .models import load_adapter
from .registry import get_task, register_strategy
from .rundir import MANIFEST
from .strategies import FullFineTune, PeftAdapter, Regularization, Strategy, count_parameters

logger = logging.getLogger("hftransfer")

SAMPLING = ("proportional", "temperature", "round_robin", "weighted")


def task_for(recipe: Any) -> Any:
    """The task object a recipe trains: its registered Task, or a TaskSet for ``tasks:``."""
    if recipe.is_multitask:
        return TaskSet({name: get_task(entry.task_type)(entry.task_options)
                        for name, entry in recipe.members.items()},
                       {name: entry.data for name, entry in recipe.members.items()})
    return get_task(recipe.task_type)(recipe.task_options)


# --------------------------------------------------------------------------- data


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


class TaskBatchSampler:
    """Single-task batches, mixed across tasks.

    An epoch has as many steps as one pass over every task's data takes; the sampling decides
    which task each step draws from: ``proportional`` (each task's data once per epoch, in a
    shuffled order), ``temperature`` (task t with probability ∝ n_t^(1/T), so small tasks are
    seen more often), ``weighted`` (∝ the given weights) or ``round_robin`` (in turn). A task's
    examples come in reshuffled passes, so a task drawn more often than its size allows repeats.
    With ``lengths``, every pass groups examples of similar length into batches (shuffled groups of
    50 batches sorted by length, as the Trainer's ``group_by_length``), which pads far less.

    Under several processes every step yields ``world_size`` batches of the same task in a row,
    one per process (Accelerate deals batch i to process i mod world_size), so all processes
    train the same head in a step.
    """

    MEGABATCH = 50  # batches whose examples are sorted by length together (as the Trainer does)

    def __init__(self, sizes: list[int], batch_size: int, probabilities: list[float] | None,
                 round_robin: bool, seed: int, world_size: int = 1,
                 lengths: list[list[int]] | None = None):
        self.lengths = lengths
        self.sizes = sizes
        self.batch_size = batch_size
        self.probabilities = probabilities
        self.round_robin = round_robin
        self.seed = seed
        self.world_size = max(1, world_size)
        self.epoch = 0
        self.starts = np.cumsum([0] + sizes).tolist()
        self.steps = sum(math.ceil(n / (batch_size * self.world_size)) for n in sizes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * self.world_size

    def schedule(self, rng: np.random.Generator) -> list[int]:
        """The task of every step of the epoch."""
        n = len(self.sizes)
        if self.round_robin:
            return [i % n for i in range(self.steps)]
        if self.probabilities is None:  # proportional: every task's share of one pass
            slots = [t for t, size in enumerate(self.sizes)
                     for _ in range(math.ceil(size / (self.batch_size * self.world_size)))]
            rng.shuffle(slots)
            return slots
        return rng.choice(n, size=self.steps, p=self.probabilities).tolist()

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        streams = [self._stream(t, rng) for t in range(len(self.sizes))]
        for task in self.schedule(rng):
            for _ in range(self.world_size):
                yield next(streams[task])

    def _stream(self, task: int, rng: np.random.Generator):
        """Endless batches of one task: reshuffled passes over its examples."""
        size, start = self.sizes[task], self.starts[task]
        batch = min(self.batch_size, size)
        buffer: list[int] = []
        while True:
            while len(buffer) < batch:
                buffer.extend((start + self._pass(task, rng)).tolist())
            yield buffer[:batch]
            del buffer[:batch]

    def _pass(self, task: int, rng: np.random.Generator) -> np.ndarray:
        """One shuffled pass over a task's examples (local indices)."""
        order = rng.permutation(self.sizes[task])
        if self.lengths is None:
            return order
        lengths = np.asarray(self.lengths[task])
        span = self.batch_size * self.MEGABATCH
        out = []
        for i in range(0, len(order), span):
            group = order[i:i + span]
            group = group[np.argsort(-lengths[group], kind="stable")]
            batches = [group[j:j + self.batch_size] for j in range(0, len(group), self.batch_size)]
            out.extend(batches[k] for k in rng.permutation(len(batches)))
        return np.concatenate(out)


# --------------------------------------------------------------------------- the task set


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
        from .data import load_splits

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
        from .tasks.base import length_sorted

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


# --------------------------------------------------------------------------- the model


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


# --------------------------------------------------------------------------- the trainer


class MultiTaskTrainer(TransferTrainer):
    """The kit's Trainer with a task-mixing batch sampler and per-task evaluation."""

    def __init__(self, *args: Any, compute_metrics: dict[str, Any], **kwargs: Any):
        self.task_metrics = compute_metrics
        super().__init__(*args, compute_metrics=None, **kwargs)

    def get_train_dataloader(self):
        from torch.utils.data import DataLoader

        grouped = str(getattr(self.args.train_sampling_strategy, "value", self.args.train_sampling_strategy)) \
            == "group_by_length"
        sampler = self.strategy.batch_sampler(self.train_dataset, self._train_batch_size,
                                              self.args.seed, self.args.world_size, grouped)
        loader = DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Every task's metrics as ``PREFIX_TASK.METRIC``, their mean loss as ``PREFIX_loss``
        and ``PREFIX_combined``: the mean of every task's primary metric (accuracy, entity F1)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        metrics: dict[str, float] = {}
        losses, scores = [], []
        for name in dataset.names:
            self.compute_metrics = self.task_metrics[name]
            try:
                output = self.evaluation_loop(self.get_eval_dataloader(dataset.only(name)),
                                              description=f"Evaluation ({name})",
                                              ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            finally:
                self.compute_metrics = None
            for key, value in output.metrics.items():
                metric = key[len(metric_key_prefix) + 1:]
                if metric in ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time"):
                    continue
                metrics[f"{metric_key_prefix}_{name}.{metric}"] = value
            if f"{metric_key_prefix}_loss" in output.metrics:
                losses.append(output.metrics[f"{metric_key_prefix}_loss"])
            primary = self.strategy.task.members[name].primary_metric
            scores.append(output.metrics.get(f"{metric_key_prefix}_{primary}"))
        if losses:
            metrics[f"{metric_key_prefix}_loss"] = float(np.mean(losses))
        if scores and all(s is not None for s in scores):
            metrics[f"{metric_key_prefix}_combined"] = float(np.mean(scores))
        metrics["epoch"] = self.state.epoch if self.state.epoch is not None else 0.0
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


# --------------------------------------------------------------------------- the strategy


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
                raise HFTransferError(f"strategy.{key} must map task names to numbers, got {weights!r}")
            unknown = sorted(set(map(str, weights)) - set(names))
            if unknown:
                raise HFTransferError(
                    f"strategy.{key} names {', '.join(map(repr, unknown))}, which is not a task; "
                    f"the tasks are {', '.join(names)}")
            for name, value in weights.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise HFTransferError(f"strategy.{key}.{name} must be a number, got {value!r}")
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
            if recipe.model.config is not None:
                raise HFTransferError(
                    "strategy.adapters adapt pretrained weights, but model.config builds a random "
                    "model; drop adapters or load a pretrained model")
            for name, entry in recipe.members.items():
                cls.adapter_config(o, get_task(entry.task_type).peft_task_type)
        # The tasks must read one kind of input (the TaskSet refuses a mix).
        TaskSet({n: get_task(e.task_type)(e.task_options) for n, e in recipe.members.items()}, {})

    @staticmethod
    def adapter_config(options, peft_task_type):
        """The PEFT config of one task's adapter (``adapters`` is the method, ``peft`` its fields)."""
        from types import SimpleNamespace

        config = PeftAdapter.peft_config(
            SimpleNamespace(peft={**options.peft, "method": options.adapters}), peft_task_type)
        if getattr(config, "is_prompt_learning", False) or not hasattr(config, "target_modules"):
            raise HFTransferError(
                f"strategy.adapters: {options.adapters!r} does not adapt the encoder's layers; use a "
                "layer adapter such as lora, ia3 or loha")
        return config

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

    @property
    def trainer_class(self) -> type:
        return MultiTaskTrainer

    # --- model ------------------------------------------------------------------------------
    def build_model(self, spec, labels: dict[str, list[str]]):
        # Each task's own model from the source (its head sized and initialised for its labels).
        models = {name: Strategy(None, task).build_model(spec, labels[name])
                  for name, task in self.task.members.items()}
        encoder, attr = share_encoder(models)
        adapters = None
        if self.options.adapters is not None:
            models, adapters = self._add_adapters(models)
        model = MultiTaskModel(models, encoder, attr, self.options.loss_weights, adapters)
        # The heads are new (or re-initialised for their labels); the encoder is transferred.
        self.new_params = {n for n, _ in model.named_parameters() if n.startswith("heads.")}
        return model

    def _add_adapters(self, models: dict[str, Any], load_from: Path | None = None):
        """One PEFT adapter per task on the shared encoder. PEFT names adapters inside its keys
        and finds them by substring, so the internal names cannot be task names ("ner" is inside
        "encoder"): task i's adapter is ``task_i_``, which no module or adapter name contains."""
        from peft import get_peft_model

        wrapped, adapters = {}, {}
        for i, (name, model) in enumerate(models.items()):
            adapter = adapters[name] = f"task_{i}_"
            task = self.task.members[name]
            if load_from is not None:
                wrapped[name] = load_adapter(model, load_from / name, adapter_name=adapter)
                continue
            config = self.adapter_config(self.options, task.peft_task_type)
            if getattr(config, "target_modules", "unset") is None:
                from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

                if model.config.model_type not in known:
                    config.target_modules = "all-linear"
            if task.peft_task_type is None:  # PEFT does not know the head: save it beside the adapter
                heads = [c for c, _ in model.named_children() if c in task.head_prefixes]
                config.modules_to_save = sorted(set(config.modules_to_save or []) | set(heads))
            try:
                with warnings.catch_warnings():  # "modifying a model with PEFT a second time": by design,
                    warnings.simplefilter("ignore")  # every task adds its adapter to the shared encoder
                    wrapped[name] = get_peft_model(model, config, adapter_name=adapter)
            except ValueError as exc:
                raise HFTransferError(f"strategy.peft: {str(exc).splitlines()[0]}") from None
        return wrapped, adapters

    def check_model(self, config) -> None:
        if self.options.adapters is not None and self.options.peft.get("target_modules") is not None:
            from .strategies import _check_targets

            with torch.device("meta"):
                skeleton = next(iter(self.task.members.values())).auto_class.from_config(config)
            _check_targets(self.options.peft["target_modules"], [n for n, _ in skeleton.named_modules() if n])

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
        root = directory / "tasks"
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
                base = model.base_model_of(name)
                base.config.architectures = [type(base).__name__]
                base.config.save_pretrained(out)
            else:
                standalone = model.base_model_of(name)
                # Only the weights its class has: a token classifier has no use for the pooler
                # that the shared encoder kept for a sequence classifier.
                with torch.device("meta"):
                    expected = set(type(standalone)(standalone.config).state_dict())
                state = {k: v for k, v in standalone.state_dict().items() if k in expected}
                standalone.config.architectures = [type(standalone).__name__]
                standalone.save_pretrained(out, state_dict=state)
        (directory / MANIFEST).write_text(json.dumps({
            "tasks": {name: {"task": self.task.members[name].name, "path": f"tasks/{name}"}
                      for name in model.names},
            "adapters": self.options.adapters,
        }, indent=2) + "\n", encoding="utf-8")

    def export(self, model, directory, processor, recipe, metrics) -> None:
        from .cards import write_task_cards

        for name in model.names:
            processor.save_pretrained(directory / "tasks" / name)
        write_task_cards(directory, recipe, metrics)

    def load_trained(self, run_dir: Path, spec):
        from .models import ModelSpec as _Spec
        from .models import load_config, load_pretrained, source_location

        root = Path(run_dir) / "tasks"
        models = {}
        for name, task in self.task.members.items():
            own = _Spec(name_or_path=str(root / name))
            if self.options.adapters is not None:
                config = load_config(str(root / name), own)
                models[name] = load_pretrained(task.auto_class, source_location(spec), spec, config=config)
            else:
                models[name] = load_pretrained(task.auto_class, str(root / name), own)
        encoder, attr = share_encoder(models)
        adapters = None
        if self.options.adapters is not None:
            models, adapters = self._add_adapters(models, load_from=root)
        return MultiTaskModel(models, encoder, attr, None, adapters)


def _adapter_of(param_name: str, adapters: dict[str, str]) -> str | None:
    """The internal adapter name a parameter belongs to (None: a base weight)."""
    parts = param_name.split(".")
    return next((a for a in adapters.values() if a in parts), None)
