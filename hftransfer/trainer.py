"""The kit's one Trainer: the ``transformers`` Trainer with the strategy's hooks (extra loss
terms that see the batch and the outputs, optimizer parameter groups, a batch sampler, extra
frozen models), evaluation task by task for a set of tasks, checkpoints reloaded in full, and a
stop when the loss stops being a number."""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, SequentialSampler
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from .errors import HFTransferError
from .progress import duration

logger = logging.getLogger("hftransfer")

# Entries of an evaluation's metrics that time the call rather than score the model.
TIMINGS = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 matrix products
    run ~1.5x faster than fp32; elsewhere they are emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cpu_bf16_autocast(train: dict[str, Any]) -> bool:
    """Whether training steps on the CPU run under bf16 autocast: where the CPU has native bf16
    and the recipe's ``train:`` sets neither ``bf16`` nor ``fp16`` (``train.bf16: false`` keeps
    fp32; ``true`` is the Trainer's own mixed precision, evaluation included)."""
    return "bf16" not in train and not train.get("fp16") and cpu_has_native_bf16()


class TransferTrainer(Trainer):
    """The Trainer with the strategy's hooks. ``compute_metrics`` may be a mapping of task name
    to metrics function (a set of tasks): evaluation then scores every task on its own part of
    the evaluation set, and adds their mean loss and ``combined`` (the mean of every task's
    primary metric)."""

    def __init__(self, *args: Any, strategy: Any,
                 compute_metrics: Callable | dict[str, Callable] | None = None,
                 cpu_bf16: bool = False, final_checkpoint: bool = True, **kwargs: Any):
        self.strategy = strategy
        self.task_metrics = compute_metrics if isinstance(compute_metrics, dict) else None
        super().__init__(*args, compute_metrics=None if self.task_metrics else compute_metrics, **kwargs)
        # Training steps on a CPU with native bf16 run under bf16 autocast (weights, optimizer
        # and evaluation stay fp32): see cpu_bf16_autocast.
        self.cpu_bf16 = cpu_bf16 and self.args.device.type == "cpu" and self.accelerator.mixed_precision == "no"
        # The Trainer prints its log dicts to stdout (which carries the kit's results); ours are
        # readable lines on stderr: under the bar on a terminal, as log lines elsewhere.
        if self.args.disable_tqdm:
            self.remove_callback(PrinterCallback)
            self.add_callback(ProgressLines)
        elif self.pop_callback(ProgressCallback) is not None:
            self.add_callback(ProgressBars)
        if not final_checkpoint:
            self.add_callback(NoFinalCheckpoint)
        for extra in strategy.extras.values():  # frozen helpers live where the model trains
            extra.to(self.args.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # What the strategy's loss reads beyond the model's inputs (teacher outputs) stays out
        # of the model's call; the Trainer may pop the labels out of ``inputs``.
        extras = {key: inputs.pop(key) for key in self.strategy.batch_extras if key in inputs}
        batch = {**inputs, **extras}
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            # The strategy sees the model as it built it, not the DDP/FSDP wrapper.
            loss = self.strategy.training_loss(self.accelerator.unwrap_model(model), batch, outputs, loss)
        return (loss, outputs) if return_outputs else loss

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        # Columns the strategy's loss reads survive the Trainer's removal of unused columns.
        self._signature_columns += [k for k in self.strategy.batch_extras if k not in self._signature_columns]

    def get_train_dataloader(self):
        grouped = str(getattr(self.args.train_sampling_strategy, "value",
                              self.args.train_sampling_strategy)) == "group_by_length"
        sampler = self.strategy.batch_sampler(self.train_dataset, self._train_batch_size,
                                              self.args.seed, self.args.world_size, grouped)
        if sampler is None:
            return super().get_train_dataloader()
        loader = DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if self.task_metrics is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
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
                if metric not in TIMINGS:
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

    def training_step(self, model, inputs, num_items_in_batch=None):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
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
        return SequentialSampler(eval_dataset)

    def _reload_converted(self, checkpoint, model=None) -> bool:
        """Reload a checkpoint through ``from_pretrained``. transformers 5 writes checkpoints in
        the Hub key format (ViT: ``encoder.layer.N.attention.attention.query``) but the Trainer
        reloads them with a non-strict ``load_state_dict`` that skips the renamed keys
        (huggingface/transformers#48805), silently keeping part of the current weights."""
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        files = ("model.safetensors", "model.safetensors.index.json")
        if (not isinstance(model, PreTrainedModel) or self.is_deepspeed_enabled or self.is_fsdp_enabled
                or not checkpoint or not any((Path(checkpoint) / f).is_file() for f in files)):
            return False
        reloaded = type(model).from_pretrained(checkpoint, config=model.config)
        model.load_state_dict(reloaded.state_dict(), strict=True)
        return True

    def _load_best_model(self):
        with _readable(self.state.best_model_checkpoint):
            if not self._reload_converted(self.state.best_model_checkpoint):
                super()._load_best_model()

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with _readable(resume_from_checkpoint):
            if not self._reload_converted(resume_from_checkpoint, model):
                super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint):
        with _readable(checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_rng_state(self, checkpoint):
        with _readable(checkpoint):
            super()._load_rng_state(checkpoint)

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
        inside = {id(p) for p in self.model.parameters()}
        outside = [p for named, _ in groups for _, p in named if id(p) not in inside]
        if outside:
            self.add_callback(_ZeroOutsideGradients(outside))
        return self.optimizer


def describe_logs(logs: dict[str, Any], state: Any) -> str:
    """One readable line for a log entry of the Trainer: a training step's loss, an evaluation's
    metrics, or the summary at the end of training."""
    def number(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    logs = {k: v for k, v in logs.items() if k != "total_flos"}
    epoch = f"epoch {logs['epoch']:.2f}" if isinstance(logs.get("epoch"), (int, float)) else ""
    if "train_runtime" in logs:
        rate = logs.get("train_samples_per_second")
        return (f"training done: {state.global_step} steps in {duration(logs['train_runtime'])}"
                + (f" ({rate:.1f} examples/s)" if isinstance(rate, (int, float)) else "")
                + (f", mean loss {number(logs['train_loss'])}" if "train_loss" in logs else ""))
    if "loss" in logs:
        shown = [f"loss {number(logs['loss'])}"] + [
            f"{k.replace('_', ' ')} {number(logs[k])}" for k in ("learning_rate", "grad_norm") if k in logs]
        return f"step {state.global_step}/{state.max_steps}, {epoch}: {', '.join(shown)}"
    prefix = next((k.split("_", 1)[0] for k in logs if "_" in k), "eval")  # validation_, test_, eval_
    metrics = [f"{k.split('_', 1)[1]} {number(v)}" for k, v in logs.items()
               if k.startswith(prefix + "_") and k.split("_", 1)[1] not in TIMINGS]
    return f"{prefix}: {', '.join(metrics) or 'done'}" + (f" ({epoch})" if epoch else "")


class ProgressLines(TrainerCallback):
    """Training progress as log lines (INFO, logger ``hftransfer``) where a bar cannot render
    (a log file, CI, a pipe): every ``logging_steps`` the loss with the time left, a line per
    epoch and per evaluation, and the summary at the end."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first = time.monotonic(), state.global_step
        if state.is_world_process_zero:
            epochs = state.num_train_epochs
            logger.info("training: %d steps (%s epoch%s)%s", state.max_steps, epochs, "" if epochs == 1 else "s",
                        f", resumed at step {state.global_step}" if state.global_step else "")

    def left(self, state) -> str:
        """``ELAPSED elapsed, about LEFT left`` from the pace of this session's steps."""
        elapsed = time.monotonic() - getattr(self, "started", time.monotonic())
        done = state.global_step - getattr(self, "first", 0)
        shown = f"{duration(elapsed)} elapsed"
        if 0 < done and state.global_step < state.max_steps:
            shown += f", about {duration(elapsed / done * (state.max_steps - state.global_step))} left"
        return shown

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            line = describe_logs(logs, state)
            logger.info("%s%s", line, f" ({self.left(state)})" if "loss" in logs else "")

    def on_epoch_end(self, args, state, control, **kwargs):
        # (Also called when max_steps stops training within an epoch: the summary line follows.)
        if state.is_world_process_zero and state.epoch and abs(state.epoch - round(state.epoch)) < 1e-3:
            logger.info("epoch %d/%s done: step %d/%d (%s)", round(state.epoch), state.num_train_epochs,
                        state.global_step, state.max_steps, self.left(state))


class ProgressBars(ProgressCallback):
    """The Trainer's bars (with their estimate of the time left), its log entries written as
    readable lines on stderr above them rather than as dicts on stdout."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            from tqdm.auto import tqdm

            tqdm.write(describe_logs(logs, state), file=sys.stderr)


class NoFinalCheckpoint(TrainerCallback):
    """No checkpoint at the last step: the run saves its final model anyway and drops its
    checkpoints (writing one cost a copy of the weights and the optimizer state). When the last
    evaluation is the best, the model in memory is the best one, so nothing is reloaded at the
    end; otherwise the best checkpoint, written earlier, is."""

    def on_step_end(self, args, state, control, **kwargs):
        self._skip_at_the_end(state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._skip_at_the_end(state, control)

    @staticmethod
    def _skip_at_the_end(state, control) -> None:
        if state.global_step >= state.max_steps:
            control.should_save = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.global_step < state.max_steps or not args.load_best_model_at_end or not metrics:
            return
        key = args.metric_for_best_model or "loss"
        value = metrics.get(key if key.startswith("eval_") else f"eval_{key}")
        if value is None:  # the Trainer will refuse the metric itself
            return
        better = np.greater if args.greater_is_better else np.less
        if state.best_metric is None or better(value, state.best_metric):
            state.best_model_checkpoint = None  # the last step is best: keep the weights in memory


class _ZeroOutsideGradients(TrainerCallback):
    """The Trainer zeroes the model's gradients after each optimizer step; the parameters a
    strategy trains outside the model (a distillation projection, a domain classifier) would
    otherwise add every step's gradient to all the earlier ones."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params

    def on_optimizer_step(self, args, state, control, **kwargs):
        for param in self.params:
            param.grad = None


@contextmanager
def _readable(checkpoint: Any):
    """A checkpoint that does not load (truncated, overwritten, not the kit's) is the user's to
    fix, with one line: the kit checked its files before resuming, so what fails here is their
    content."""
    try:
        yield
    except HFTransferError:
        raise
    except Exception as exc:  # torch, safetensors and pickle raise many types for a bad file
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise HFTransferError(
            f"the checkpoint {str(checkpoint)!r} does not load ({type(exc).__name__}: {text}); "
            "start over with --overwrite (without --resume)") from None
