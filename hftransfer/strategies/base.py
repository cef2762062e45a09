"""The strategy interface: how knowledge moves from the source model to the target task.

A strategy decides which parameters train, which extra loss terms apply, which other models
take part and what gets saved. The engine calls the same hooks for every strategy, so a new one
is one registered class::

    @register_strategy("my-strategy")
    class MyStrategy(Strategy):
        def prepare(self, model): ...
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import HFTransferError
from .. import weight_transfer
from ..models import (
    load_config,
    load_pretrained,
    network_config,
    public_name,
    source_location,
    transfer_plan,
)
from ..recipe import ModelSpec

if TYPE_CHECKING:
    import torch

    from ..recipe import Recipe
    from ..tasks.base import Task

logger = logging.getLogger("hftransfer")

# Architectures whose head classifies (their config's label names mean something).
CLASSIFIER_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification",
                       "ForImageClassification", "ForAudioClassification")


@dataclass
class ExtraModel:
    """A model that takes part in training without being trained or saved (a teacher, a frozen
    source): the engine loads it through the model loader, freezes it, keeps it out of the
    optimizer and the saved run, and puts it where the model trains."""

    spec: ModelSpec
    auto_class_name: str | None = None
    """The ``transformers`` Auto class to load it with; default: the task's."""


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
    multitask: ClassVar[bool] = False
    """Whether it trains a recipe's ``tasks:`` (several tasks) rather than one ``task:``."""
    reads_unlabeled: ClassVar[bool] = False
    """Whether it learns from ``data.unlabeled`` (inputs without labels)."""
    batch_extras: ClassVar[tuple[str, ...]] = ()
    """Batch entries its loss reads that the model does not take (teacher outputs): kept out of
    the model's inputs and handed to :meth:`training_loss`."""

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any, task: "Task"):
        self.options = options
        self.task = task
        self.new_params: set[str] = set()  # parameters initialised fresh (the head), by build_model
        self.extras: dict[str, Any] = {}  # the models extra_models() asked for, loaded by the engine
        # model.init: how each tensor was filled (weight_transfer.json) and its summary (metrics).
        self.transfer_report: list[dict[str, Any]] | None = None
        self.transfer_summary: dict[str, Any] | None = None

    @property
    def new_modules(self) -> list[str]:
        return sorted({name.rsplit(".", 1)[0] for name in self.new_params})

    @classmethod
    def validate_recipe(cls, recipe: "Recipe") -> None:
        """Checks that need the whole recipe; raise HFTransferError."""

    # --- lifecycle hooks --------------------------------------------------------------------
    def build_model(self, spec: ModelSpec, labels: list[str]):
        """Load the source model with a head sized for ``labels`` (with ``model.init``: a network
        of another shape, filled from it)."""
        if spec.init is not None:
            return self.transferred_model(spec, labels)
        if spec.config is not None:
            return self.random_model(spec, labels)
        model, self.new_params = self.source_model(spec, labels)
        check_transferred(model, self.new_params, self.task, spec)
        return model

    def source_model(self, spec: ModelSpec, labels: list[str]):
        """The source model with a head sized for ``labels``, and the names of the parameters
        the checkpoint did not supply (a new head)."""
        location = source_location(spec)
        source = load_config(location, spec)
        model, info = load_pretrained(
            self.task.auto_class, location, spec,
            ignore_mismatched_sizes=True, output_loading_info=True,
            **self.task.model_kwargs(labels), **self.config_overrides(source),
        )
        new = set(info.get("missing_keys", ())) | {k for k, *_ in info.get("mismatched_keys", ())}
        old_labels = label_names(source)
        if old_labels is not None and old_labels != labels and not new & head_params(model, self.task):
            # Same head shape, different label set: the source head means nothing here.
            for name, module in model.named_modules():
                if name.split(".")[0] in self.task.head_prefixes and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            new |= head_params(model, self.task)
        if old_labels is not None and old_labels != labels:
            logger.warning("source labels %s differ from the target's %s: the head is replaced",
                           old_labels, labels)
        self._say_what_is_new(new, set(info.get("unexpected_keys", ())), old_labels, spec)
        return model, new

    def _say_what_is_new(self, new: set[str], unused: set[str], old_labels: Any, spec: ModelSpec) -> None:
        """One line, in the kit's words, in place of transformers' load report: which weights
        start from scratch, and why."""
        head = sorted(n for n in new if n.split(".")[0] in self.task.head_prefixes)
        if head:
            why = ("the source has no head for these labels" if old_labels is None
                   else "the source's head is for other labels")
            logger.info("new %s head: %s (trained from scratch: %s)", self.task.name, ", ".join(head), why)
        if unused:
            shown = sorted(unused)
            logger.info("%d weights of %s are not used by this task's model (%s%s): its own head or "
                        "pooler", len(shown), public_name(spec), ", ".join(shown[:3]),
                        ", ..." if len(shown) > 3 else "")

    def transferred_model(self, spec: ModelSpec, labels: list[str]):
        """``model.init``: the target architecture, filled from the source's weights (or random,
        for a no-transfer twin); the transfer report is kept for the run directory."""
        chosen = transfer_plan(spec, **self.task.model_kwargs(labels))
        chosen.config.update(self.config_overrides(chosen.config))
        model = self.task.auto_class.from_config(chosen.config, trust_remote_code=spec.trust_remote_code)
        if chosen.from_source:
            source, fresh = self.source_model(spec, labels)
            self.transfer_report = weight_transfer.transfer(source, model, chosen, fresh)
            del source
        else:
            self.transfer_report = weight_transfer.transfer(model, model, chosen, set())
        self.transfer_summary = weight_transfer.summary(self.transfer_report, chosen)
        self.new_params = {row["tensor"] for row in self.transfer_report if row["how"] == "new"} \
            & {name for name, _ in model.named_parameters()}
        counts = self.transfer_summary["tensors"]
        logger.info("model.init: %s from %s (%s)", ", ".join(f"{k}={v}" for k, v in chosen.changed.items())
                    or "the same shape", public_name(spec), ", ".join(f"{n} {how}" for how, n in counts.items()))
        if chosen.from_source:
            check_transferred(model, self.new_params, self.task, spec)
        return model

    def config_overrides(self, config) -> dict[str, Any]:
        """Changes to the source config that the strategy needs (on top of the label sizing)."""
        return {}

    def random_model(self, spec: ModelSpec, labels: list[str]):
        """The source architecture (or ``model.init``'s) with random weights (``model.config``, or
        ``scratch``)."""
        config = network_config(spec, **self.task.model_kwargs(labels))
        config.update(self.config_overrides(config))
        model = self.task.auto_class.from_config(config, trust_remote_code=spec.trust_remote_code)
        self.new_params = {name for name, _ in model.named_parameters()}
        logger.info("%s: randomly initialised from its config", config.model_type)
        return model

    def check_model(self, config) -> None:
        """Checks of the recipe against the source model's config, before any weights load."""

    def extra_models(self) -> dict[str, ExtraModel]:
        """Other models this strategy trains with (a teacher, a frozen source), by name; the
        engine loads them into ``self.extras`` before :meth:`prepare`."""
        return {}

    def prepare(self, model):
        """Freeze or wrap the model before training; returns the model to train."""
        return model

    def check_labels(self, labels: Any) -> None:
        """Checks of the recipe against the data's label set, before any weights load."""

    def training_loss(self, model, inputs: dict[str, Any], outputs: Any, task_loss: "torch.Tensor") -> "torch.Tensor":
        """The loss training minimises: the task's, plus :meth:`extra_loss`."""
        extra = self.extra_loss(model, inputs, outputs)
        return task_loss if extra is None else task_loss + extra

    def extra_loss(self, model, inputs: dict[str, Any], outputs: Any) -> "torch.Tensor | None":
        """A term added to the task loss during training (regularisers, distillation): it sees
        the model as built (not the DDP/FSDP wrapper), the batch and the model's outputs."""
        return None

    def parameter_groups(self, model) -> "list[tuple[list[tuple[str, torch.nn.Parameter]], float]] | None":
        """(named parameters, learning-rate scale) groups for the optimizer, covering every
        parameter that trains now or later; None = the Trainer's default (what requires grad)."""
        return None

    def batch_sampler(self, dataset: Any, batch_size: int, seed: int, world_size: int,
                      grouped: bool) -> Any:
        """A batch sampler for the training set (multi-task mixing); None = the Trainer's own."""
        return None

    def report(self, model) -> dict[str, Any]:
        """Strategy facts for metrics.json["transfer"] after training."""
        return {}

    def encode_splits(self, splits: Any, processor: Any) -> tuple[Any, dict[str, Any]]:
        """The splits as model inputs for :meth:`prepare_data` (the task's encoding; augmented
        where the strategy takes augmentation)."""
        return self.task.encode_splits(splits, processor, augment=self.augments)

    def prepare_data(self, train_ds, evals: dict[str, Any], collator, splits: Any, processor: Any):
        """Turn the tokenised splits into what the prepared model trains on (default: as is);
        ``splits`` are the raw splits and ``processor`` the model's processor."""
        return train_ds, evals, collator

    def count_parameters(self, model) -> dict[str, int]:
        """Trainable and total parameters of what this strategy trains and saves."""
        return count_parameters(model)

    def callbacks(self) -> list:
        """TrainerCallbacks the strategy needs (schedules of unfreezing, ...)."""
        return []

    def save(self, model, directory: Path) -> None:
        model.save_pretrained(directory)

    def export(self, model, directory: Path, processor: Any) -> None:
        """Write anything beyond the model, processor, recipe and metrics into the finished run
        (default: nothing)."""

    def load_trained(self, run_dir: Path, spec: ModelSpec):
        """Load a run directory written by :meth:`save` for inference."""
        return load_pretrained(self.task.auto_class, str(run_dir), ModelSpec(name_or_path=str(run_dir)))


MOSTLY_NEW = 0.5
"""A source that supplies less than this share of the model's weights is no source at all."""


def check_transferred(model, new: set[str], task: "Task", spec: ModelSpec) -> None:
    """Weights the checkpoint did not supply, outside the task head, are a wrong source (another
    architecture, weights of other shapes, a checkpoint missing tensors): refuse a model that
    would train mostly from random weights under the name of a transfer; name what is new."""
    outside = [n for n in new if n.split(".")[0] not in task.head_prefixes]
    if not outside:
        return
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    share = sum(sizes.get(n, 0) for n in outside) / max(sum(sizes.values()), 1)
    modules = sorted({n.rsplit(".", 1)[0] for n in outside})
    shown = ", ".join(modules[:4]) + (f" and {len(modules) - 4} more" if len(modules) > 4 else "")
    if share > MOSTLY_NEW:
        raise HFTransferError(
            f"model {spec.name_or_path!r}: {100 * share:.0f}% of the {type(model).__name__}'s weights "
            f"are not in its checkpoint (missing, or of another shape: {shown}), so it would train "
            "mostly from random weights; check the checkpoint and its config's model_type, or use "
            "strategy scratch to start from random weights on purpose")
    logger.warning("%s: %.1f%% of the weights are not in the checkpoint and start from random "
                   "values: %s", spec.name_or_path, 100 * share, shown)


def label_names(config) -> list[str] | None:
    """The label names of a classifier's config (None when the model has no classifying head)."""
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith(CLASSIFIER_SUFFIXES) for a in archs):
        return None
    id2label = getattr(config, "id2label", None) or {}
    return [id2label[i] for i in sorted(id2label)]


def trained_for(task: "Task", config) -> bool:
    """Whether ``config`` is that of a model trained for ``task``'s kind of head (its
    architectures name the class the task's Auto class builds for this model type)."""
    expected = task.auto_class._model_mapping.get(type(config), None)
    return expected is not None and expected.__name__ in (getattr(config, "architectures", None) or [])


def head_params(model, task: "Task") -> set[str]:
    """The names of the task head's parameters."""
    return {n for n, _ in model.named_parameters() if n.split(".")[0] in task.head_prefixes}


def count_parameters(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total}
