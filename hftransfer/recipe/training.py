"""The ``train:`` section: the kit's training defaults, the merge that gives a run's effective
arguments, and the checks of values that ``transformers.TrainingArguments`` lets through but
that would fail (or train nothing, or upload behind the kit's back) once training runs."""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import os
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import HFTransferError
from .values import TOKEN_HINT, check_seed, clip, coerce, quote

# What every run gets unless the task, the strategy or the recipe says otherwise.
KIT_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "weight_decay": 0.01,
    # Batches of similar lengths: dynamic padding then pads SST-2-like data ~2x less.
    "train_sampling_strategy": "group_by_length",
    "eval_strategy": "no",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "logging_strategy": "steps",
    "logging_steps": 50,
    "report_to": "none",
    "seed": 0,
    # One label per example: per-token loss averaging across processes does not apply, and with
    # it the Trainer reports losses multiplied by the number of processes.
    "average_tokens_across_devices": False,
}


def training_values(train: dict[str, Any], task_defaults: dict[str, Any],
                    strategy_defaults: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The training arguments a run uses: kit defaults < device defaults < the task's defaults <
    the strategy's defaults < the recipe's ``train:``; ``run_name`` (what logging integrations
    show) is the recipe's ``name`` unless ``train:`` sets it."""
    import torch

    # Pinned memory only helps copies to a GPU (and warns on every dataloader without one).
    device_defaults: dict[str, Any] = {"dataloader_pin_memory": torch.cuda.is_available()}
    if not torch.cuda.is_available() and world_size() > 1:
        # Processes launched on CPUs: without use_cpu Accelerate finds no GPU and sets up no
        # process group at all, so every process would train and evaluate alone.
        device_defaults.update(use_cpu=True, ddp_backend="gloo")
    named = {"run_name": name} if name else {}
    values = {**KIT_DEFAULTS, **device_defaults, **task_defaults, **strategy_defaults, **named, **train}
    return best_model_needs_eval(values)


def world_size() -> int:
    """How many processes ``accelerate launch`` (or torchrun) started; 1 for a plain run."""
    return _launcher_number("WORLD_SIZE", 1)


def check_launcher_variables() -> None:
    """The variables a launcher sets (``accelerate launch``, torchrun) hold numbers: Accelerate
    and torch read them with ``int()`` and would fail with a traceback. (Which process is the
    main one is the Trainer's to say: ``TrainingArguments.process_index``.)"""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        _launcher_number(name, 0)


def _launcher_number(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise HFTransferError(
            f"the environment variable {name}={value[:20]!r} is not a number; launchers "
            "(accelerate launch, torchrun) set it: unset it for a plain run")
    return int(value)


def best_model_needs_eval(values: dict[str, Any]) -> dict[str, Any]:
    """``load_best_model_at_end`` without an eval strategy evaluates whenever it saves."""
    if values.get("load_best_model_at_end") and values.get("eval_strategy", "no") == "no":
        values["eval_strategy"] = values.get("save_strategy", "epoch")
    return values


# Fields the kit owns: setting them in `train:` would break the run directory contract.
_RESERVED_TRAIN_KEYS = {
    "output_dir": "use --output-dir on the command line",
    "resume_from_checkpoint": "use --resume on the command line",
    "do_train": "the kit always trains", "do_eval": "the kit decides", "do_predict": "the kit decides",
    "local_rank": "accelerate launch sets it",
    # Credentials: the recipe is saved with the run (recipe.yaml, card, checkpoints) and pushed.
    "hub_token": f"credentials never go in a recipe, which is saved with the run; {TOKEN_HINT}",
    # What the kit's evaluation and data flow rely on: changed, they leave metrics empty or feed
    # the model columns it does not take.
    **{key: "the kit sets it for each task (evaluation and metrics rely on it)" for key in (
        "label_names", "prediction_loss_only", "batch_eval_metrics", "eval_do_concat_batches",
        "include_for_metrics", "remove_unused_columns")},
}
# The Trainer's own uploads would send checkpoints (with optimizer and RNG pickles) to the Hub
# during training, past every check of `hftransfer push`.
_UPLOAD_PREFIXES = ("push_to_hub", "hub_")
_UPLOAD_HINT = ("the Trainer would upload checkpoints (with pickled optimizer and RNG state) during "
                "training; publish a finished run with `hftransfer push RUN_DIR --repo-id ID`")
# Bounds TrainingArguments does not check itself (a 0 batch size fails deep in the data loader).
_AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size",
                 "gradient_accumulation_steps", "eval_accumulation_steps")
_NOT_NEGATIVE = ("learning_rate", "num_train_epochs", "weight_decay", "warmup_steps", "max_grad_norm",
                 "dataloader_num_workers", "label_smoothing_factor", "adam_epsilon")
_POSITIVE_IF_SET = ("logging_steps", "save_steps", "eval_steps")
LARGEST = 2 ** 31 - 1
"""No setting of ``train:`` (seeds aside) is larger than this: beyond it, values overflow the
libraries' integers or make the run never end."""
# Fields that take a mapping, or text that is one (JSON); a path for the others.
_JSON_MAPPINGS = ("lr_scheduler_kwargs", "gradient_checkpointing_kwargs")


def validate_training_arguments(train: dict[str, Any]) -> dict[str, Any]:
    """Check ``train:`` keys and value types against ``transformers.TrainingArguments``, and
    the values that would fail (or train nothing) only once training runs."""
    from transformers import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    hints = typing.get_type_hints(TrainingArguments)
    out = {}
    for key, value in train.items():
        if not isinstance(key, str):
            raise HFTransferError(f"train: key {quote(key)} is not a name; train accepts "
                                  "transformers.TrainingArguments fields")
        if key in _RESERVED_TRAIN_KEYS:
            raise HFTransferError(f"train.{key} cannot be set in a recipe: {_RESERVED_TRAIN_KEYS[key]}")
        if key.startswith(_UPLOAD_PREFIXES):
            raise HFTransferError(f"train.{key} cannot be set in a recipe: {_UPLOAD_HINT}")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise HFTransferError(
                f"unknown key 'train.{key}': train accepts transformers.TrainingArguments fields{hint}"
            )
        tp = hints.get(key, Any)
        if tp in (int, float, bool, str) or typing.get_origin(tp) in (typing.Union, types.UnionType) \
                and all(a in (int, float, bool, str, type(None)) for a in typing.get_args(tp)):
            value = coerce(value, tp, f"train.{key}")
        out[key] = value
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and key in _AT_LEAST_ONE and value < 1:
            raise HFTransferError(f"train.{key} must be at least 1, got {value}")
        if number and key in _NOT_NEGATIVE and value < 0:
            raise HFTransferError(f"train.{key} must not be negative, got {value}")
        if number and key in _POSITIVE_IF_SET and value <= 0:
            raise HFTransferError(f"train.{key} must be above 0, got {value}")
        if key in ("seed", "data_seed") and value is not None:
            check_seed(value, f"train.{key}")
        elif number and abs(value) > LARGEST:
            raise HFTransferError(f"train.{key} is {quote(value)}, beyond any sensible value "
                                  f"(at most {LARGEST:,})")
        _check_mapping(key, value, tp)
    steps = out.get("max_steps", -1)
    if isinstance(steps, int) and steps == 0 or isinstance(steps, int) and steps < -1:
        raise HFTransferError(f"train.max_steps must be a positive number of steps (or -1 for "
                              f"num_train_epochs), got {steps}")
    if out.get("num_train_epochs") == 0 and not (isinstance(steps, int) and steps > 0):
        raise HFTransferError("train.num_train_epochs is 0: the run would train nothing; give a "
                              "number of epochs (or train.max_steps)")
    _check_integrations(out)
    # Values TrainingArguments rejects, judged with the kit's defaults beneath them (as training
    # will run): `load_best_model_at_end` alone is fine, since the kit saves every epoch.
    args = make_training_arguments(best_model_needs_eval({**KIT_DEFAULTS, **out}),
                                   "/nonexistent/hftransfer-validation")
    _check_optimizer(args, out)
    return out


def _check_mapping(key: str, value: Any, tp: Any) -> None:
    """A field that takes a mapping gets one (or, where transformers reads JSON text, text that
    parses as one)."""
    args = typing.get_args(tp)
    if not any(a is dict or typing.get_origin(a) is dict for a in args) or value is None \
            or isinstance(value, dict):
        return
    if not isinstance(value, str):
        raise HFTransferError(f"train.{key} must be a mapping, got {quote(value)}")
    if key in _JSON_MAPPINGS:
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise HFTransferError(f"train.{key} must be a mapping (or JSON text of one), got {quote(value)}")


_OPTIMIZER_KEYS = ("optim", "optim_args", "adam_beta1", "adam_beta2", "adam_epsilon", "learning_rate",
                   "weight_decay", "lr_scheduler_type", "lr_scheduler_kwargs", "optim_target_modules")


def _check_optimizer(args: Any, train: dict[str, Any]) -> None:
    """Build the optimizer and schedule the recipe asks for on one dummy weight: an optimizer
    that is not installed, or arguments it refuses (a beta of 2), fail here, not after the data
    and the model have loaded."""
    import torch
    from transformers import Trainer
    from transformers.optimization import get_scheduler

    if args.torch_compile_backend:
        backends = torch._dynamo.list_backends(exclude_tags=())
        if args.torch_compile_backend not in backends:
            raise HFTransferError(f"train.torch_compile_backend {quote(args.torch_compile_backend)} is "
                                  f"not a torch.compile backend; valid: {', '.join(backends)}")
    try:
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
        optimizer = optimizer_cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
        get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(10),
                      num_training_steps=10, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    except (ImportError, ValueError, TypeError, KeyError, RuntimeError, AttributeError) as exc:
        given = [k for k in _OPTIMIZER_KEYS if k in train] or ["optim"]
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HFTransferError(f"train.{'/'.join(given)}: the optimizer or its schedule cannot be "
                              f"built: {clip(message, 200)}") from None


def _check_integrations(train: dict[str, Any]) -> None:
    """``report_to``, ``deepspeed`` and ``fsdp`` name things that must exist on this machine."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    wanted = train.get("report_to")
    wanted = [wanted] if isinstance(wanted, str) else list(wanted or [])
    available = set(get_available_reporting_integrations())
    for name in wanted:
        if name in ("none", "all") or name in available:
            continue
        if name in INTEGRATION_TO_CALLBACK:
            raise HFTransferError(f"train.report_to: {name} is not installed here; install it "
                                  f"(pip install {name}) or remove it from report_to")
        raise HFTransferError(f"train.report_to: {quote(name)} is not a logging integration; valid: "
                              f"none, all, {', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
    deepspeed = train.get("deepspeed")
    if deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            raise HFTransferError(
                "train.deepspeed needs the package deepspeed, which is not installed here "
                "(pip install deepspeed, on a machine with GPUs); or launch with an Accelerate "
                "config instead (recipes/accelerate/deepspeed-zero2.yaml)")
        if isinstance(deepspeed, str) and not Path(os.path.expanduser(deepspeed)).is_file():
            raise HFTransferError(f"train.deepspeed: config file {quote(deepspeed)} does not exist")


def check_distributed(values: dict[str, Any]) -> None:
    """Settings that need ``accelerate launch`` with several processes, checked when a run starts."""
    if values.get("fsdp") and world_size() < 2:
        raise HFTransferError(
            "train.fsdp shards the model over several processes, and this run has one; launch it "
            "with accelerate launch --num_processes N (see recipes/accelerate/fsdp.yaml), or "
            "remove train.fsdp")


def make_training_arguments(values: dict[str, Any], output_dir: str):
    """``TrainingArguments(**values)``; a rejected value becomes an error naming its key."""
    from transformers import TrainingArguments

    check_launcher_variables()  # before Accelerate reads them (and blames the first train: key)
    try:
        return TrainingArguments(output_dir=output_dir, **values)
    except (ValueError, TypeError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        culprit = next((k for k in values if _rejects(k, values[k])), None)
        if culprit == "bf16" and not values.get("use_cpu"):
            # transformers says "assign use_cpu", a name a recipe user cannot place.
            message = ("bf16 mixed precision needs a GPU with bf16 here; add train.use_cpu: true to run it "
                       "on the CPU, or leave train.bf16 out (on CPUs with native bf16 the kit already "
                       "runs training steps under bf16 autocast)")
        where = f"train.{culprit}" if culprit else "train"
        raise HFTransferError(f"{where}: {clip(message)}") from None


def _rejects(key: str, value: Any) -> bool:
    from transformers import TrainingArguments

    try:
        TrainingArguments(output_dir="/nonexistent/hftransfer-validation", **{key: value})
        return False
    except (ValueError, TypeError, OSError):
        return True
