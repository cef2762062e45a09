"""Domain-adversarial training (DANN; Ganin et al., 2016): the labelled *source-domain* data
(``data.train``) trains the task while a domain classifier learns to tell source inputs from
unlabelled *target-domain* inputs (``data.unlabeled``) by their pooled features (what the task
head's final layer receives). Between the features and the domain classifier sits a gradient
reversal layer: the domain classifier minimises its loss, the encoder maximises it, so the
features it learns serve the task and no longer tell the domains apart::

    loss = CE(task, source batch) + BCE(domain classifier(GRL_λp(features)), source 0 / target 1)
    λp = lambda_max · (2 / (1 + exp(−10·p)) − 1),   p = global step / max steps

Each training step pairs the labelled source batch with as many target inputs, read in a seeded
order that depends on the step alone (a new permutation each pass over the target inputs), so
reruns repeat it and ``--resume`` continues it. The target inputs run through the model in a
second forward pass with its own seeded dropout, so that with ``lambda_max: 0`` training is
exactly that of ``full`` (the domain loss then reaches the domain classifier only).

The domain classifier trains with the model's optimizer but is not part of the model: the run
saves the plain task model. Its accuracy on the training batches of each epoch (source and target
alike; 0.5 is chance) goes into the Trainer's log history as ``dann_domain_accuracy``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from ..errors import HFTransferError
from ..registry import get_task, register_strategy
from . import frozen
from .finetune import FullFineTune

logger = logging.getLogger("hftransfer")

LOG_KEY = "dann_domain_accuracy"
"""The domain classifier's accuracy over an epoch's training batches, in the log history."""
HEAD_FILE = "dann_domain_head.safetensors"
"""The domain classifier's weights in each checkpoint (for ``--resume``); never in the run."""
POOLED_CLASSIFIERS = ("AutoModelForSequenceClassification", "AutoModelForImageClassification",
                      "AutoModelForAudioClassification")
GAMMA = 10.0
"""The steepness of the λ schedule (Ganin et al.'s γ = 10)."""


def grl_coefficient(progress: float, lambda_max: float = 1.0) -> float:
    """λp = lambda_max · (2 / (1 + exp(−γ·p)) − 1): 0 at the start (p = 0), rising to about
    0.99991·lambda_max at the end (p = 1), so the early, noisy domain classifier barely pushes
    the encoder.

    >>> grl_coefficient(0.0), round(grl_coefficient(1.0), 4)
    (0.0, 0.9999)
    """
    p = min(max(float(progress), 0.0), 1.0)
    return lambda_max * (2.0 / (1.0 + math.exp(-GAMMA * p)) - 1.0)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coefficient * grad, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """The identity going forward; going backward, the gradient times −coefficient."""
    return _ReverseGradient.apply(x, float(coefficient))


@register_strategy("dann")
class DomainAdversarial(FullFineTune):
    """Fine-tune every weight on the labelled source data (``data.train``) while a domain
    classifier behind a gradient reversal layer aligns the pooled features of the source inputs
    with those of unlabelled target-domain inputs (``data.unlabeled``). Options:
    ``lambda_max`` (the reversal's final strength), ``domain_hidden_size`` (the domain
    classifier's hidden width), and those of ``full``."""

    description = ("fine-tune all weights on the labelled source domain while a domain classifier behind a "
                   "gradient reversal layer aligns its features with unlabelled target-domain inputs (DANN)")
    defaults = FullFineTune.defaults
    reads_unlabeled = True

    @dataclass
    class Options(FullFineTune.Options):
        lambda_max: float = 1.0
        """The gradient reversal's strength at the end of training (0 = no adaptation: ``full``)."""
        domain_hidden_size: int = 256
        """The width of the domain classifier's hidden layer (Linear → ReLU → Linear)."""
        domain_learning_rate_scale: float = 10.0
        """The domain classifier's learning rate as a multiple of the encoder's. A fresh classifier
        at a fine-tuning learning rate cannot follow the encoder that the reversal pushes against
        it: it ends confidently wrong (accuracy far below 0.5) rather than unable to tell."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if isinstance(self.lambda_max, bool) or not (math.isfinite(self.lambda_max) and self.lambda_max >= 0):
                raise HFTransferError(f"strategy.lambda_max must be a number >= 0, got {self.lambda_max!r}")
            scale = self.domain_learning_rate_scale
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
                raise HFTransferError(
                    f"strategy.domain_learning_rate_scale must be a number > 0, got {scale!r}")
            if isinstance(self.domain_hidden_size, bool) or not isinstance(self.domain_hidden_size, int) \
                    or self.domain_hidden_size < 1:
                raise HFTransferError(
                    f"strategy.domain_hidden_size must be a whole number >= 1, got {self.domain_hidden_size!r}")

    def __init__(self, options: Any, task: Any):
        super().__init__(options, task)
        self.domain_head: torch.nn.Module | None = None
        self.tap: frozen.FeatureTap | None = None
        self.target: Any = None
        self.target_collator: Any = None
        self.progress = 0.0
        self.seed, self.batch_size, self.world_size, self.rank = 0, 1, 1, 0
        self.micro = 0  # training batches so far (each draws the next target inputs)
        self.correct: torch.Tensor | float = 0.0
        self.seen = 0
        self.state: Any = None  # the Trainer's state: its log history holds the accuracies
        self._orders: dict[int, torch.Tensor] = {}

    @classmethod
    def validate_recipe(cls, recipe):
        if recipe.data.unlabeled is None:
            raise HFTransferError(
                "strategy dann needs the target domain's inputs: give data.unlabeled (a text file or csv "
                "column, an image or audio folder, without labels); data.train is the labelled source domain")
        if get_task(recipe.task_type).auto_class_name not in POOLED_CLASSIFIERS:
            raise HFTransferError(
                f"strategy dann does not train task {recipe.task_type!r}: DANN here aligns the pooled features "
                "of sequence, image and audio classifiers (text-, image- or audio-classification)")

    # --- set-up ---------------------------------------------------------------------------------
    def prepare(self, model):
        model = super().prepare(model)
        layer = frozen.final_layer(model, self.task.head_prefixes, model.config.num_labels)
        width, hidden = layer.in_features, self.options.domain_hidden_size
        self.domain_head = torch.nn.Sequential(
            torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        self.extras["domain_head"] = self.domain_head  # trained alongside, never saved with the model
        self.tap = frozen.FeatureTap(layer)
        return model

    def prepare_data(self, train_ds, evals, collator, splits, processor):
        self.target = self.task.preprocess(splits.unlabeled, processor, splits.labels, training=True)
        self.target_collator = collator
        logger.info("dann: %d labelled source examples, %d unlabelled target inputs", len(train_ds), len(self.target))
        return train_ds, evals, collator

    def parameter_groups(self, model):
        groups = super().parameter_groups(model)
        if groups is None:
            groups = [([(n, p) for n, p in model.named_parameters() if p.requires_grad], 1.0)]
        return groups + [([(f"dann.domain_head.{n}", p) for n, p in self.domain_head.named_parameters()],
                          float(self.options.domain_learning_rate_scale))]

    def callbacks(self):
        return [*super().callbacks(), _DomainCallback(self)]

    # --- target batches -------------------------------------------------------------------------
    def _order(self, cycle: int) -> torch.Tensor:
        """The order of the target inputs on their ``cycle``-th pass (seeded by the run's seed)."""
        if cycle not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + cycle)
            self._orders = {cycle: torch.randperm(len(self.target), generator=generator)}
        return self._orders[cycle]

    def _target_batch(self, size: int, device: torch.device) -> dict[str, Any]:
        start = (self.micro * self.world_size + self.rank) * self.batch_size
        n = len(self.target)
        rows = []
        for position in range(start, start + size):
            cycle, offset = divmod(position, n)
            row = self.target[int(self._order(cycle)[offset])]
            rows.append({k: v for k, v in row.items() if k not in ("labels", "length")})
        batch = self.target_collator(rows)
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    # --- the loss -------------------------------------------------------------------------------
    def training_loss(self, model, inputs, outputs, task_loss):
        loss = super().training_loss(model, inputs, outputs, task_loss)  # + L2-SP, when asked for
        source = self.tap.take()
        target_inputs = self._target_batch(len(source), source.device)
        # Own dropout for the target pass, seeded by the step: the source passes then see the
        # random numbers of a `full` run.
        devices = [source.device] if source.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + self.micro * self.world_size + self.rank)
            model(**target_inputs)
        target = self.tap.take()
        self.micro += 1
        head = self.domain_head
        features = torch.cat([source, target]).to(head[0].weight.dtype)
        logits = head(reverse_gradient(features, grl_coefficient(self.progress, self.options.lambda_max)))
        logits = logits.squeeze(-1).float()
        domains = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(logits.device)
        with torch.no_grad():
            self.correct = self.correct + ((logits > 0).float() == domains).sum()
            self.seen += len(domains)
        return loss + F.binary_cross_entropy_with_logits(logits, domains)

    # --- what the run records ---------------------------------------------------------------
    def epoch_accuracy(self) -> float | None:
        """The domain classifier's accuracy over this epoch's batches (then counted afresh)."""
        if not self.seen:
            return None
        accuracy = float(self.correct) / self.seen
        self.correct, self.seen = 0.0, 0
        return accuracy

    def accuracies(self) -> list[float]:
        history = self.state.log_history if self.state is not None else []
        return [entry[LOG_KEY] for entry in history if LOG_KEY in entry]

    def report(self, model):
        out = dict(super().report(model))
        accuracies = self.accuracies()
        out.update({
            "lambda_max": self.options.lambda_max,
            "domain_hidden_size": self.options.domain_hidden_size,
            "domain_learning_rate_scale": self.options.domain_learning_rate_scale,
            "target_inputs": len(self.target) if self.target is not None else 0,
            "final_domain_accuracy": accuracies[-1] if accuracies else None,
            "domain_accuracy": accuracies,
        })
        return out


class _DomainCallback(TrainerCallback):
    """The strategy's view of training: the run's seed and batch size, progress p for the λ
    schedule, the per-epoch domain accuracy, and the domain classifier's weights in checkpoints."""

    def __init__(self, strategy: DomainAdversarial):
        self.strategy = strategy

    def on_train_begin(self, args, state, control, **kwargs):
        s = self.strategy
        if args.world_size > 1:
            raise HFTransferError(
                "strategy dann trains in one process in this version (its target pass runs outside the "
                "distributed wrapper); launch it without accelerate's multi-process options")
        s.seed, s.batch_size, s.world_size, s.rank = args.seed, args.per_device_train_batch_size, 1, 0
        s.state = state
        # A resumed run goes on with the target inputs where it left off; the epoch it resumes in
        # counts the domain accuracy of its remaining batches only.
        s.micro = state.global_step * args.gradient_accumulation_steps
        if state.global_step:
            saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / HEAD_FILE
            if saved.is_file():
                s.domain_head.load_state_dict(load_file(str(saved), device=str(next(s.domain_head.parameters()).device)))
            else:
                logger.warning("dann: %s is missing; the domain classifier starts afresh", saved)

    def on_step_begin(self, args, state, control, **kwargs):
        self.strategy.progress = state.global_step / max(state.max_steps, 1)

    def on_epoch_end(self, args, state, control, **kwargs):
        accuracy = self.strategy.epoch_accuracy()
        if accuracy is not None:
            state.log_history.append({"epoch": state.epoch, LOG_KEY: round(accuracy, 6), "step": state.global_step})
            logger.info("dann: epoch %.2f: domain accuracy %.4f (0.5 = the domains look alike)", state.epoch, accuracy)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            weights = {k: v.detach().cpu().contiguous() for k, v in self.strategy.domain_head.state_dict().items()}
            save_file(weights, str(folder / HEAD_FILE))

    def on_train_end(self, args, state, control, **kwargs):
        if self.strategy.tap is not None:
            self.strategy.tap.handle.remove()
