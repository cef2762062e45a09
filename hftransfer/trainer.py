"""The kit's Trainer: the ``transformers`` Trainer with the strategy's hooks (extra loss terms,
optimizer parameter groups), checkpoints reloaded in full, and a stop when the loss stops
being a number."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from .errors import HFTransferError


class TransferTrainer(Trainer):
    """The Trainer with the strategy's hooks: extra loss terms and optimizer parameter groups."""

    def __init__(self, *args: Any, strategy: Any, **kwargs: Any):
        self.strategy = strategy
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            # The strategy sees the model as it built it, not the DDP/FSDP wrapper.
            extra = self.strategy.extra_loss(self.accelerator.unwrap_model(model))
            if extra is not None:
                loss = loss + extra
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The Trainer would log around a NaN loss and go on to save a NaN model as a success. The
        # check costs no extra synchronisation: the Trainer's own NaN filter reads the loss too.
        if not torch.isfinite(loss).all():
            step = self.state.global_step + 1
            raise HFTransferError(
                f"the training loss became {float(loss.detach().float().mean())} at step {step} of "
                f"{self.state.max_steps} (learning rate {self.args.learning_rate:g}): training "
                "diverged; lower train.learning_rate, keep train.max_grad_norm clipping on, or use "
                "bf16 instead of fp16")
        return loss

    def _get_eval_sampler(self, eval_dataset):
        # The kit sorts evaluation sets by length itself, so reading them in order pads least;
        # the Trainer would otherwise reuse the training-time length grouping (shuffled
        # mega-batches) here.
        from torch.utils.data import SequentialSampler

        return SequentialSampler(eval_dataset)

    def _reload_converted(self, checkpoint, model=None) -> bool:
        """Reload a checkpoint through ``from_pretrained``. transformers 5 writes checkpoints in
        the Hub key format (ViT: ``encoder.layer.N.attention.attention.query``) but the Trainer
        reloads them with a non-strict ``load_state_dict`` that skips the renamed keys
        (huggingface/transformers#48805), silently keeping part of the current weights."""
        from transformers import PreTrainedModel

        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        files = ("model.safetensors", "model.safetensors.index.json")
        if (not isinstance(model, PreTrainedModel) or self.is_deepspeed_enabled or self.is_fsdp_enabled
                or not checkpoint or not any((Path(checkpoint) / f).is_file() for f in files)):
            return False
        reloaded = type(model).from_pretrained(checkpoint, config=model.config)
        model.load_state_dict(reloaded.state_dict(), strict=True)
        return True

    def _load_best_model(self):
        if not self._reload_converted(self.state.best_model_checkpoint):
            super()._load_best_model()

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._reload_converted(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def create_optimizer(self, model=None):
        groups = self.strategy.parameter_groups(self.model)
        if groups is None or self.optimizer is not None:
            return super().create_optimizer(model)
        decay = set(self.get_decay_parameter_names(self.model))
        param_groups = []
        for named, scale in groups:
            for decayed in (True, False):
                params = [p for n, p in named if (n in decay) == decayed]
                if params:
                    param_groups.append({
                        "params": params, "lr": self.args.learning_rate * scale,
                        "weight_decay": self.args.weight_decay if decayed else 0.0,
                    })
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        self.optimizer = optimizer_cls(param_groups, **kwargs)
        return self.optimizer
