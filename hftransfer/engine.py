"""The engine: one Trainer subclass and one lifecycle (setup -> train -> evaluate -> save) for
every strategy and task.

The run directory is staged next to its final place and renamed when complete, so a crash
never leaves a directory that looks like a finished run.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainingArguments

from .errors import HFTransferError
from .recipe import Recipe, load_recipe
from .registry import get_strategy
from .tasks.base import length_sorted

logger = logging.getLogger("hftransfer")

# What every run gets unless the strategy or the recipe says otherwise.
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


@dataclass
class RunResult:
    """What :func:`train` returns: where the run went and its metrics."""

    run_dir: Path
    metrics: dict[str, Any]


def default_output_dir(recipe: Recipe) -> Path:
    return Path("runs") / (recipe.name or "run")


def staging_dir(run_dir: Path) -> Path:
    """Where a run is built before it is renamed into place (also holds resumable checkpoints)."""
    return run_dir.parent / f".{run_dir.name}.partial"


def training_values(recipe: Recipe, strategy_cls: Any, task: Any) -> dict[str, Any]:
    """The training arguments a run uses: kit defaults < task defaults < strategy defaults < the
    recipe's ``train:``."""
    import torch

    # Pinned memory only helps copies to a GPU (and warns on every dataloader without one).
    device_defaults: dict[str, Any] = {"dataloader_pin_memory": torch.cuda.is_available()}
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Processes launched on CPUs: without use_cpu Accelerate finds no GPU and sets up no
        # process group at all, so every process would train and evaluate alone.
        device_defaults.update(use_cpu=True, ddp_backend="gloo")
    values = {**KIT_DEFAULTS, **device_defaults, **task.training_defaults, **strategy_cls.defaults,
              **recipe.train}
    return best_model_needs_eval(values)


def best_model_needs_eval(values: dict[str, Any]) -> dict[str, Any]:
    """``load_best_model_at_end`` without an eval strategy evaluates whenever it saves."""
    if values.get("load_best_model_at_end") and values.get("eval_strategy", "no") == "no":
        values["eval_strategy"] = values.get("save_strategy", "epoch")
    return values


def training_arguments(recipe: Recipe, strategy_cls: Any, task: Any,
                       output_dir: Path) -> TrainingArguments:
    from .recipe import make_training_arguments

    return make_training_arguments(training_values(recipe, strategy_cls, task), str(output_dir))


def train(
    recipe: str | Path | dict | Recipe,
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> RunResult:
    """Run a recipe end to end and return the run directory and its metrics.

    >>> result = train("recipes/quickstart.yaml", ["train.num_train_epochs=1"])
    >>> result.metrics["test"]["accuracy"]
    """
    from .models import public_name, source_config, source_location
    from .multitask import task_for

    recipe = load_recipe(recipe, overrides)
    run_dir = Path(output_dir) if output_dir is not None else default_output_dir(recipe)
    stage = staging_dir(run_dir)
    main = _is_main_process()
    if run_dir.exists() and not run_dir.is_dir():
        raise HFTransferError(f"output directory {str(run_dir)!r} is a file; choose another --output-dir")
    if run_dir.exists() and not overwrite:
        raise HFTransferError(
            f"output directory {str(run_dir)!r} already exists; pass --overwrite to replace it "
            "or --output-dir to write elsewhere"
        )
    if run_dir.exists() and not (run_dir.is_dir() and _looks_like_run(run_dir) or not any(run_dir.iterdir())):
        raise HFTransferError(
            f"output directory {str(run_dir)!r} exists and is not an hftransfer run; "
            "refusing to replace it"
        )
    checkpoint = None
    if resume:
        checkpoint = _last_checkpoint(stage / "checkpoints")
        if checkpoint is None:
            raise HFTransferError(
                f"--resume: no checkpoint to resume under {str(stage / 'checkpoints')!r}"
            )

    task = task_for(recipe)
    strategy_cls = get_strategy(recipe.strategy_name)
    strategy = strategy_cls(recipe.strategy_options, task)
    args = training_arguments(recipe, strategy_cls, task, stage / "checkpoints")
    data_seed = recipe.data.seed if recipe.data.seed is not None else args.seed

    started = time.perf_counter()
    # Every check of the user's input runs before anything is written or deleted.
    config = source_config(recipe.model)
    strategy.check_model(config)
    splits = task.load_splits(recipe.data, data_seed)
    if args.eval_strategy != "no" and splits.missing_validation():
        where = splits.missing_validation()[0]
        raise HFTransferError(
            f"train.eval_strategy={getattr(args.eval_strategy, 'value', args.eval_strategy)} (or "
            f"load_best_model_at_end) needs a validation split: set {where}.validation or a "
            f"{where}.validation_fraction above 0"
        )
    location = source_location(recipe.model) if recipe.model.config is None else None
    processor = task.load_processor(location, recipe.model, config)
    if not resume and main and stage.exists():
        shutil.rmtree(stage)  # leftovers of a crashed run that is not being resumed
    from transformers import set_seed

    set_seed(args.seed)
    model = strategy.build_model(recipe.model, splits.labels)
    model = strategy.prepare(model)
    params = strategy.count_parameters(model)
    logger.info("%s: %s of %s parameters train (%.2f%%)", strategy.name,
                f"{params['trainable']:,}", f"{params['total']:,}",
                100 * params["trainable"] / max(params["total"], 1))

    train_ds, evals = task.encode_splits(splits, processor, augment=strategy.augments)
    train_ds, evals, collator = strategy.prepare_data(train_ds, evals, task.collator(processor))

    trainer = strategy.trainer_class(
        model=model,
        args=args,
        strategy=strategy,
        train_dataset=train_ds,
        eval_dataset=evals.get("validation"),
        processing_class=processor,
        data_collator=collator,
        compute_metrics=task.compute_metrics(splits.labels),
        callbacks=strategy.callbacks(),
    )
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - started

    metrics: dict[str, Any] = {
        "strategy": strategy.name,
        "base_model": public_name(recipe.model),
        **task.describe(),
        "labels": splits.labels,
        "data": splits.counts(),
    }
    # Model selection happened on validation; test is read once, here, at the very end.
    for name, ds in evals.items():
        metrics[name] = task.shape_metrics(task_metrics(trainer.evaluate(ds, metric_key_prefix=name), name))
    metrics["params"] = params
    transfer = strategy.report(trainer.model)
    if transfer:
        metrics["transfer"] = transfer
    metrics["train"] = {
        "runtime_s": round(float(output.metrics.get("train_runtime", 0.0)), 3),
        "samples_per_second": round(float(output.metrics.get("train_samples_per_second", 0.0)), 3),
        "wall_s": round(train_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "world_size": int(args.world_size),
        "steps": int(output.global_step),
        "loss": round(float(output.training_loss), 6),
    }
    if main:
        _write_run(stage, run_dir, recipe, strategy, trainer, processor, metrics, overwrite)
    return RunResult(run_dir=run_dir, metrics=metrics)


def _write_run(stage: Path, run_dir: Path, recipe: Recipe, strategy: Any, trainer: Trainer,
               processor: Any, metrics: dict[str, Any], overwrite: bool) -> None:
    from .cards import write_card

    stage.mkdir(parents=True, exist_ok=True)
    strategy.save(trainer.model, stage)
    processor.save_pretrained(stage)
    (stage / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
    logs = stage / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    write_card(stage, recipe, metrics)
    strategy.export(trainer.model, stage, processor, recipe, metrics)
    # metrics.json last: its presence marks a finished run.
    (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if run_dir.exists():
        if not overwrite:  # appeared while we trained
            raise HFTransferError(f"output directory {str(run_dir)!r} appeared during training; "
                                  f"the finished run is in {str(stage)!r}")
        trash = run_dir.parent / f".{run_dir.name}.old"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(run_dir, trash)
        os.replace(stage, run_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage, run_dir)


def _looks_like_run(path: Path) -> bool:
    return (path / "recipe.yaml").exists() or (path / "metrics.json").exists()


def _last_checkpoint(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(directory))
    return Path(found) if found else None


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --------------------------------------------------------------------------- using a finished run


@dataclass
class LoadedRun:
    """A finished run directory loaded for inference."""

    run_dir: Path
    recipe: Recipe
    task: Any
    model: Any
    processor: Any
    metrics: dict[str, Any]


def require_finished_run(path: Path) -> None:
    """Raise unless ``path`` is a run directory that ``train`` finished."""
    if not path.is_dir():
        raise HFTransferError(f"{str(path)!r} is not a directory; pass a run directory of hftransfer train")
    if not (path / "recipe.yaml").is_file() or not (path / "metrics.json").is_file():
        raise HFTransferError(
            f"{str(path)!r} is not a finished hftransfer run (no recipe.yaml/metrics.json); "
            "pass the directory that `hftransfer train` printed"
        )


def task_model_dir(run_dir: Path, task: str | None) -> Path:
    """Where a finished run's model is: the run itself, or ``tasks/TASK`` of a multi-task run
    (whose tasks are read from its manifest, without loading any model)."""
    from .multitask import MANIFEST

    require_finished_run(run_dir)
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        if task is not None:
            raise HFTransferError(f"--task: {str(run_dir)!r} is a single-task run; leave --task out")
        return run_dir
    try:
        names = list(json.loads(manifest.read_text(encoding="utf-8"))["tasks"])
    except (OSError, ValueError, KeyError, TypeError):
        raise HFTransferError(f"{str(manifest)!r} is damaged; retrain the run or restore the file") from None
    if task is None:
        raise HFTransferError(
            f"{str(run_dir)!r} is a multi-task run: every task is its own model; pass --task with one "
            f"of {', '.join(names)}")
    if task not in names:
        raise HFTransferError(f"--task {task!r} is not a task of this run; its tasks are {', '.join(names)}")
    return run_dir / "tasks" / task


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a run directory (its recipe, model and tokenizer) for ``predict``/``evaluate``."""
    from .models import ModelSpec, load_config
    from .multitask import task_for

    path = Path(run_dir)
    require_finished_run(path)
    recipe = load_recipe(path / "recipe.yaml")
    try:
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise HFTransferError(
            f"{str(path / 'metrics.json')!r} is damaged; retrain the run or restore the file"
        ) from None
    task = task_for(recipe)
    strategy = get_strategy(recipe.strategy_name)(recipe.strategy_options, task)
    model = strategy.load_trained(path, recipe.model)
    model.eval()
    # The run saved its processor next to the model (next to every task's, for multi-task runs).
    own_dir = path / "tasks" / task.names[0] if recipe.is_multitask else path
    own = ModelSpec(name_or_path=str(own_dir))
    processor = task.load_processor(str(own_dir), own, load_config(str(own_dir), own))
    return LoadedRun(path, recipe, task, model, processor, metrics)


def run_task(run: LoadedRun, name: str | None) -> tuple[Any, Any, list[str]]:
    """(task, model, labels) of a loaded run; ``name`` picks one task of a multi-task run (its
    adapter, if any, becomes the active one)."""
    if not run.recipe.is_multitask:
        if name is not None:
            raise HFTransferError(f"--task: {str(run.run_dir)!r} is a single-task run; leave --task out")
        labels = run.metrics.get("labels") or [run.model.config.id2label[i] for i in sorted(run.model.config.id2label)]
        return run.task, run.model, labels
    names = run.task.names
    if name is None:
        raise HFTransferError(
            f"{str(run.run_dir)!r} is a multi-task run: pass --task with one of {', '.join(names)}")
    if name not in names:
        raise HFTransferError(f"--task {name!r} is not a task of this run; its tasks are {', '.join(names)}")
    return run.task.members[name], run.model.activate(name), run.metrics["labels"][name]


def evaluate_run(run_dir: str | Path, split: str = "test", data: str | None = None,
                 task: str | None = None) -> dict[str, Any]:
    """Metrics of a finished run on one of its recipe's splits, or on a data file. For a
    multi-task run: every task's metrics (and the combined score), or ``task``'s alone."""
    if data is None and split not in ("train", "validation", "test"):
        raise HFTransferError(f"--split must be train, validation or test, got {split!r}")
    if data is not None and not any(ch in data for ch in "*?[") and not Path(os.path.expanduser(data)).exists():
        raise HFTransferError(f"--data: {data!r} does not exist")  # before the model loads
    run = load_run(run_dir)
    if run.recipe.is_multitask and task is None:
        if data is not None:
            raise HFTransferError(
                f"--data of a multi-task run belongs to one task: add --task ({', '.join(run.task.names)})")
        results = {name: _evaluate_task(run, name, split, None) for name in run.task.names}
        primary = [results[n].get(run.task.members[n].primary_metric) for n in run.task.names]
        if all(v is not None for v in primary):
            results["combined"] = float(sum(primary) / len(primary))
        return results
    return _evaluate_task(run, task, split, data)


def _evaluate_task(run: LoadedRun, name: str | None, split: str, data: str | None) -> dict[str, Any]:
    task, model, labels = run_task(run, name)
    where = f"tasks.{name}.data" if name is not None else "data"
    if data is not None:
        ds = task.read_split(data, "--data", (run.recipe.members[name].data if name else run.recipe.data).format)
    else:
        spec = run.recipe.members[name].data if name is not None else run.recipe.data
        seed = spec.seed if spec.seed is not None else run.recipe.train.get("seed", 0)
        from .data import load_splits

        ds = getattr(load_splits(spec, task, seed, where=where), split)
        if ds is None:
            raise HFTransferError(f"the run's recipe has no {split} split{f' for task {name}' if name else ''}; "
                                  "pass --data PATH")
    task.check_labels(ds, labels, data or f"{where}.{split}")
    encoded = length_sorted(task.preprocess(ds, run.processor, labels))
    import tempfile

    import torch

    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="hftransfer-eval-"), report_to="none",
                             per_device_eval_batch_size=64, disable_tqdm=True,
                             dataloader_pin_memory=torch.cuda.is_available(),
                             remove_unused_columns=task.training_defaults.get("remove_unused_columns", True))
    trainer = Trainer(model=model, args=args, processing_class=run.processor,
                      data_collator=task.collator(run.processor),
                      compute_metrics=task.compute_metrics(labels))
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):  # stdout carries only our JSON
        trainer.remove_callback(callback)
    return task_metrics(trainer.evaluate(encoded, metric_key_prefix="eval"), "eval")


def task_metrics(result: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The task's metrics out of ``Trainer.evaluate``'s dict, without the prefix and timings."""
    timing = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch")
    return {key[len(prefix) + 1:]: value for key, value in result.items()
            if key.startswith(prefix + "_") and key[len(prefix) + 1:] not in timing}
