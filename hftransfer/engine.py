"""The engine: one lifecycle for every strategy and task — check, set up, train, evaluate, save —
and the use of a finished run (load, predict, evaluate).

Every check of the user's input runs before anything is written or deleted; the run is built
in a staging folder and renamed into place when it is complete (see :mod:`hftransfer.rundir`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback

from . import rundir
from .cards import write_cards
from .data import load_splits
from .errors import HFTransferError
from .models import (
    check_buildable,
    load_config,
    load_pretrained,
    network_config,
    public_name,
    quiet_loading,
    source_license,
    source_location,
)
from .predictions import check_batch_size, check_request, parse_top_k, prediction_inputs
from .progress import data_bars, show_bars
from .resources import peak_rss_mb, reset_peak_rss, share_cpu_cores
from .recipe import (
    ModelSpec,
    Recipe,
    check_distributed,
    load_recipe,
    make_training_arguments,
    training_values,
)
from .registry import get_strategy
from .tasks.base import length_sorted
from .tasks.multi import task_for
from .trainer import TIMINGS, TransferTrainer, cpu_bf16_autocast

logger = logging.getLogger("hftransfer")


@dataclass
class RunResult:
    """What :func:`train` returns: where the run went and its metrics."""

    run_dir: Path
    metrics: dict[str, Any]
    main_process: bool = True
    """Whether this process wrote the run (the Trainer's main process; rank 0 of a launch)."""


def default_output_dir(recipe: Recipe) -> Path:
    return Path("runs") / (recipe.name or "run")


@dataclass
class Setup:
    """A recipe checked against its source model and data, ready to build and train: what
    ``train`` and ``validate`` both go through, before any weights load."""

    recipe: Recipe
    task: Any
    strategy: Any
    values: dict[str, Any]
    """The effective training arguments (kit < task < strategy defaults < the recipe)."""
    args: TrainingArguments
    config: Any
    splits: Any
    processor: Any

    @property
    def main_process(self) -> bool:
        """Whether this process writes the run: the Trainer's own test (is_world_process_zero)."""
        return self.args.process_index == 0

    def record(self) -> dict[str, Any]:
        """What a resumed run must find unchanged: the recipe (its name aside), the label set
        and the source model's config."""
        recipe = json.loads(json.dumps(self.recipe.to_dict(), default=str))
        recipe.pop("name", None)
        config = json.dumps(self.config.to_dict(), sort_keys=True, default=str)
        return {**recipe, "labels": self.splits.labels,
                "source_config": hashlib.sha256(config.encode()).hexdigest()}


def prepare(recipe: Recipe, checkpoints: Path) -> Setup:
    """Check a recipe against what it names (source model config, data, processor) and set up
    its task, strategy and training arguments; loads no weights and writes nothing."""
    task = task_for(recipe)
    strategy_cls = get_strategy(recipe.strategy_name)
    for member in getattr(task, "members", {None: task}).values():
        if member.strategies is not None and strategy_cls.name not in member.strategies:
            raise HFTransferError(
                f"strategy.name {strategy_cls.name!r} does not apply to task {member.name}; valid: "
                f"{', '.join(member.strategies)}")
    strategy = strategy_cls(recipe.strategy_options, task)
    values = training_values(recipe.train, task.training_defaults, strategy.defaults, recipe.name)
    args = make_training_arguments(values, str(checkpoints))
    if "disable_tqdm" not in values:  # bars on a terminal, log lines elsewhere (not recorded: no setting)
        args.disable_tqdm = not show_bars()
    data_seed = recipe.data.seed if recipe.data.seed is not None else args.seed
    config = network_config(recipe.model)
    for member in getattr(task, "members", {None: task}).values():
        member.check_model(config, recipe.model)
        check_buildable(member.auto_class, config, recipe.model)
    strategy.check_model(config)
    splits = task.load_splits(recipe.data, data_seed)
    if args.eval_strategy != "no" and splits.missing_validation():
        where = splits.missing_validation()[0]
        raise HFTransferError(
            f"train.eval_strategy={getattr(args.eval_strategy, 'value', args.eval_strategy)} (or "
            f"load_best_model_at_end) needs a validation split: set {where}.validation or a "
            f"{where}.validation_fraction above 0"
        )
    if args.metric_for_best_model:
        names = ["loss", *task.metric_names(splits.labels)]
        if args.metric_for_best_model.removeprefix("eval_") not in names:
            raise HFTransferError(
                f"train.metric_for_best_model {args.metric_for_best_model!r} is not a metric of this "
                f"run; valid: {', '.join(names)}")
    strategy.check_labels(splits.labels)
    _check_no_tokens(splits.labels, config, recipe.model)
    location = source_location(recipe.model) if recipe.model.config is None or recipe.model.init else None
    processor = task.load_processor(location, recipe.model, config)
    return Setup(recipe, task, strategy, values, args, config, splits, processor)


def _check_no_tokens(labels: Any, config: Any, spec: ModelSpec) -> None:
    """What the run will write from its inputs (label names, the source's config and license)
    holds no access token: say so now rather than after training (the run's files are checked
    again before it is finished)."""
    for what, text in (("the data's labels", json.dumps(labels)),
                       (f"the config of model {spec.name_or_path!r}", json.dumps(config.to_dict(), default=str)),
                       (f"the README of model {spec.name_or_path!r}", json.dumps(source_license(spec)))):
        if rundir.HF_TOKEN.search(text):
            raise HFTransferError(
                f"{what} hold something that looks like a Hugging Face access token; tokens never go "
                "into a run (its files are saved and published): remove it there")


def check(recipe: str | Path | dict | Recipe, overrides: list[str] | None = None) -> Setup:
    """Everything ``train`` checks before it loads weights (``hftransfer validate``)."""
    with tempfile.TemporaryDirectory(prefix="hftransfer-validate-") as scratch:
        return prepare(load_recipe(recipe, overrides), Path(scratch) / rundir.CHECKPOINTS)


def frozen_features(setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen features of a ``feature-extraction`` setup's training split and their labels,
    one row per example (per labelled word for token tasks): from the feature cache, or computed
    and cached there, so a later feature-extraction run or comparison reuses them (``rank``)."""
    strategy = setup.strategy
    if not hasattr(strategy, "features"):
        raise HFTransferError(f"strategy {strategy.name!r} has no frozen features; use feature-extraction")
    set_seed(setup.args.seed)
    strategy.prepare(strategy.build_model(setup.recipe.model, setup.splits.labels))
    data = strategy.features(setup.splits.train, "train", setup.processor, setup.splits.labels)
    features, labels = data.features, data.labels
    if data.offsets is not None:  # per token: only a word's first token carries its label
        keep = labels != -100
        features, labels = features[keep], labels[keep]
    return features, labels


def train(
    recipe: str | Path | dict | Recipe,
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    keep_checkpoints: bool = False,
) -> RunResult:
    """Run a recipe end to end and return the run directory and its metrics. The finished run
    keeps its ``checkpoints/`` only with ``keep_checkpoints`` (an interrupted run keeps them in
    its staging folder for ``resume`` either way).

    >>> result = train("recipes/quickstart.yaml", ["train.num_train_epochs=1"])
    >>> result.metrics["test"]["accuracy"]
    """
    recipe = load_recipe(recipe, overrides)
    if output_dir is not None and not isinstance(output_dir, (str, os.PathLike)):
        raise HFTransferError(f"output_dir is a directory path, got {output_dir!r}")
    run_dir = Path(output_dir) if output_dir is not None else default_output_dir(recipe)
    rundir.check_output_dir(run_dir, overwrite=overwrite, resume=resume)
    stage = rundir.staging_dir(run_dir)
    started = time.perf_counter()
    reset_peak_rss()
    share_cpu_cores()
    setup = prepare(recipe, stage / rundir.CHECKPOINTS)
    check_distributed(setup.values)
    main = setup.main_process
    record = setup.record()
    held = None
    if not main:  # only the main process writes; the others read the checkpoint to resume from
        checkpoint = rundir.resume_checkpoint(stage, record) if resume else None
    elif resume:
        held, checkpoint = rundir.resume_stage(stage, record)
    else:
        held, checkpoint = rundir.open_stage(stage, record), None  # a failed run's leftovers go now
    try:
        metrics, trainer = _train(setup, checkpoint, started, keep_checkpoints)
        if held is not None:
            _write_run(held, run_dir, setup, trainer, metrics, overwrite, keep_checkpoints)
    except HFTransferError:
        _abandon(held, resume)
        raise
    except Exception as exc:  # OSError, or a writer's own error around one (safetensors, torch)
        error = rundir.disk_error(exc, run_dir.parent)
        if error is None:
            raise
        _abandon(held, resume)
        raise error from None
    finally:
        if held is not None:
            held.release()  # a crash or Ctrl-C keeps the stage for --resume, unlocked
    return RunResult(run_dir=run_dir, metrics=metrics, main_process=main)


def _abandon(held: rundir.Stage | None, resume: bool) -> None:
    """After a failure the user must fix: a fresh run leaves nothing behind (not even the
    parent folders made for it); a resumed one keeps its complete checkpoints."""
    if held is None or not held.path.exists():
        return
    if resume:
        held.drop_incomplete_checkpoints()
    else:
        held.discard()


def _load_extras(strategy: Any) -> None:
    """The other models a strategy trains with: loaded like any source model, frozen, and kept
    out of the trained model (so out of the optimizer and the saved run)."""
    import transformers

    for name, extra in strategy.extra_models().items():
        auto = getattr(transformers, extra.auto_class_name) if extra.auto_class_name else strategy.task.auto_class
        model = load_pretrained(auto, source_location(extra.spec), extra.spec)
        strategy.extras[name] = model.eval().requires_grad_(False)


def _train(setup: Setup, checkpoint: Path | None, started: float,
           keep_checkpoints: bool = False) -> tuple[dict[str, Any], Trainer]:
    recipe, task, strategy, args, splits = setup.recipe, setup.task, setup.strategy, setup.args, setup.splits
    set_seed(args.seed)
    model = strategy.build_model(recipe.model, splits.labels)
    _load_extras(strategy)
    model = strategy.prepare(model)
    params = strategy.count_parameters(model)
    logger.info("%s: %s of %s parameters train (%.2f%%)", strategy.name,
                f"{params['trainable']:,}", f"{params['total']:,}",
                100 * params["trainable"] / max(params["total"], 1))

    with data_bars():
        train_ds, evals = strategy.encode_splits(splits, setup.processor)
    train_ds, evals, collator = strategy.prepare_data(train_ds, evals, task.collator(setup.processor),
                                                      splits, setup.processor)

    trainer = TransferTrainer(
        model=model,
        args=args,
        strategy=strategy,
        train_dataset=train_ds,
        eval_dataset=evals.get("validation"),
        processing_class=setup.processor,
        data_collator=collator,
        compute_metrics=task.compute_metrics(splits.labels),
        preprocess_logits_for_metrics=task.preprocess_logits(),
        callbacks=strategy.callbacks() + task.callbacks(strategy),
        cpu_bf16=cpu_bf16_autocast(recipe.train), final_checkpoint=keep_checkpoints,
    )
    before = None
    if task.evaluates_before_training and "validation" in evals:  # the model as built, same inputs
        before = {"validation": task.shape_metrics(task_metrics(
            trainer.evaluate(evals["validation"], metric_key_prefix="validation"), "validation"))}
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if output.global_step == 0:
        raise HFTransferError(
            f"no training step ran ({len(train_ds)} training examples, train.max_steps "
            f"{args.max_steps}, num_train_epochs {args.num_train_epochs:g}); nothing was saved")
    broken = [n for n, p in trainer.model.named_parameters() if not torch.isfinite(p).all()]
    if broken:
        raise HFTransferError(
            f"training left non-finite weights ({broken[0]}{' and others' if len(broken) > 1 else ''}); "
            "nothing was saved: lower train.learning_rate or keep train.max_grad_norm clipping on")
    train_seconds = time.perf_counter() - started

    metrics: dict[str, Any] = {
        "strategy": strategy.name,
        "base_model": public_name(recipe.model),
        **task.describe(),
        "labels": splits.labels,
        "data": splits.counts(),
    }
    license_ = source_license(recipe.model)
    if license_:
        metrics["base_model_license"] = license_
    # Model selection happened on validation; test is read once, here, at the very end.
    for name, ds in evals.items():
        metrics[name] = task.shape_metrics(task_metrics(trainer.evaluate(ds, metric_key_prefix=name), name))
    if before is not None:
        metrics["before"] = before
    metrics["params"] = params
    if strategy.transfer_summary is not None:
        metrics["init"] = strategy.transfer_summary
    transfer = strategy.report(trainer.model)
    if transfer:
        metrics["transfer"] = transfer
    metrics["train"] = {
        "runtime_s": round(float(output.metrics.get("train_runtime", 0.0)), 3),
        "samples_per_second": round(float(output.metrics.get("train_samples_per_second", 0.0)), 3),
        "wall_s": round(train_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "world_size": int(args.world_size),
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if trainer.cpu_bf16 else trainer.accelerator.mixed_precision.replace("no", "fp32"),
        "steps": int(output.global_step),
        "loss": round(float(output.training_loss), 6),
    }
    return metrics, trainer


def _write_run(held: rundir.Stage, run_dir: Path, setup: Setup, trainer: Trainer, metrics: dict[str, Any],
               overwrite: bool, keep_checkpoints: bool = False) -> None:
    """The finished run, in the staging folder, then renamed into place. The cards render from
    the files written before them (and the metrics as metrics.json will hold them), as
    ``hftransfer card`` renders them later."""
    stage, strategy, processor = held.path, setup.strategy, setup.processor
    with quiet_loading():  # no "Writing model shards" bar for a file written in a blink
        strategy.save(trainer.model, stage)
    processor.save_pretrained(stage)
    strategy.export(trainer.model, stage, processor)
    (stage / rundir.RECIPE).write_text(setup.recipe.to_yaml(), encoding="utf-8")
    (stage / rundir.LOGS).mkdir(exist_ok=True)
    rundir.write_json(stage / rundir.LOG_HISTORY, trainer.state.log_history)
    rundir.write_json(stage / rundir.TRAINING_ARGS, rundir.as_json(setup.values))
    if strategy.transfer_report is not None:
        rundir.write_json(stage / rundir.WEIGHT_TRANSFER, strategy.transfer_report)
    write_cards(stage, metrics=rundir.as_json(metrics))
    # metrics.json last: with recipe.yaml it marks a finished run.
    rundir.write_json(stage / rundir.METRICS, metrics)
    if not keep_checkpoints:
        # Only --resume of an interrupted run reads them (from the staging folder); in a finished
        # run they would double its size (optimizer state, a second copy of the weights).
        rundir.drop_checkpoints(stage)
    held.finish(run_dir, overwrite)


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


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a run directory (its recipe, model and tokenizer) for ``predict``/``evaluate``."""
    path = Path(run_dir)
    rundir.require_finished_run(path)
    recipe = load_recipe(path / rundir.RECIPE)
    metrics = rundir.read_metrics(path)
    task = task_for(recipe)
    strategy = get_strategy(recipe.strategy_name)(recipe.strategy_options, task)
    try:
        model = strategy.load_trained(path, recipe.model)
        model.eval()
        # The run saved its processor next to the model (next to every task's, for multi-task runs).
        own_dir = path / rundir.TASKS / task.names[0] if recipe.is_multitask else path
        own = ModelSpec(name_or_path=str(own_dir))
        processor = task.load_processor(str(own_dir), own, load_config(str(own_dir), own))
    except HFTransferError:
        raise
    except Exception as exc:  # files that contradict each other: edited, mixed up or truncated
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise HFTransferError(
            f"the run {str(path)!r} does not load ({type(exc).__name__}: {text}); its files were "
            "damaged or changed by hand: retrain it or restore them") from None
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


def predict(run_dir: str | Path, inputs: list[Any] | str | None = None, task: str | None = None, *,
            file: str | Path | None = None, column: str | None = None, batch_size: int = 32,
            top_k: int | str | None = None) -> list[Any]:
    """The prediction for each input, in order (``{"label", "score"}`` for classification);
    ``task`` picks the head of a multi-task run (checked before any model loads). A single
    string is one input; ``file``, ``column``, ``batch_size`` and ``top_k`` are as for
    :func:`hftransfer.predict`."""
    given = check_inputs(inputs)
    top_k, batch_size = parse_top_k(top_k), check_batch_size(batch_size)
    check_request(given, file, column)
    rundir.task_model_dir(Path(run_dir), task)
    run = load_run(run_dir)
    member, model, _ = run_task(run, task)
    return member.predict(model, run.processor, prediction_inputs(member, given, file, column),
                          batch_size=batch_size, top_k=top_k)


def check_inputs(inputs: list[Any] | str | None) -> list[Any]:
    """Inputs given in code as a list (a single string or pair: one input), each a text, a pair
    of texts or a file path."""
    inputs = [] if inputs is None else [inputs] if isinstance(inputs, (str, tuple)) else list(inputs)
    bad = [x for x in inputs if not isinstance(x, (str, tuple, os.PathLike))]
    if bad:
        raise HFTransferError(f"predict: inputs are texts (or file paths), got {bad[0]!r}")
    return inputs


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


def evaluate_loaded(run: LoadedRun, split: str = "validation", task: str | None = None) -> dict[str, Any]:
    """The task's metrics of a loaded run's model as it is in memory (weights changed after
    loading: interpolated, averaged) on a split of its recipe."""
    return _evaluate_task(run, task, split, None)


def _evaluate_task(run: LoadedRun, name: str | None, split: str, data: str | None) -> dict[str, Any]:
    task, model, labels, encoded = _encoded_split(run, name, split, data)
    with tempfile.TemporaryDirectory(prefix="hftransfer-eval-") as scratch:  # the Trainer wants one
        trainer = _inference_trainer(run, task, model, labels, scratch)
        return task_metrics(trainer.evaluate(length_sorted(encoded), metric_key_prefix="eval"), "eval")


def _encoded_split(run: LoadedRun, name: str | None, split: str, data: str | None,
                   data_of: LoadedRun | None = None):
    """(task, model, labels, the split as model inputs, in the data's order); ``data_of``: read
    the split of another run's recipe (an ensemble's members read the first member's data)."""
    task, model, labels = run_task(run, name)
    where = f"tasks.{name}.data" if name is not None else "data"
    owner = data_of or run
    spec = owner.recipe.members[name].data if name is not None else owner.recipe.data
    if data is not None:
        ds = task.read_split(data, "--data", spec.format)
    else:
        seed = spec.seed if spec.seed is not None else owner.recipe.train.get("seed", 0)
        ds = getattr(load_splits(spec, task, seed, where=where), split)
        if ds is None:
            raise HFTransferError(f"the run's recipe has no {split} split{f' for task {name}' if name else ''}; "
                                  "pass --data PATH")
    task.check_labels(ds, labels, data or f"{where}.{split}")
    with data_bars():
        return task, model, labels, task.preprocess(ds, run.processor, labels)


def _inference_trainer(run: LoadedRun, task: Any, model: Any, labels: list[str], scratch: str) -> Trainer:
    args = TrainingArguments(output_dir=scratch, report_to="none",
                             per_device_eval_batch_size=task.training_defaults.get("per_device_eval_batch_size", 64),
                             disable_tqdm=not show_bars(),
                             dataloader_pin_memory=torch.cuda.is_available(),
                             remove_unused_columns=task.training_defaults.get("remove_unused_columns", True))
    trainer = Trainer(model=model, args=args, processing_class=run.processor,
                      data_collator=task.collator(run.processor),
                      compute_metrics=task.compute_metrics(labels),
                      preprocess_logits_for_metrics=task.preprocess_logits())
    trainer.remove_callback(PrinterCallback)  # stdout carries only our JSON; bars go to stderr
    return trainer


@dataclass
class SplitOutputs:
    """A run's logits on one split, row by row in the data's order: one row per example, or for
    token classification one per labelled word (sentence by sentence)."""

    logits: Any
    """float32 array [rows, labels]."""
    labels: Any
    """int array [rows]: the reference label of each row."""
    words: Any = None
    """Token tasks: how many rows (words) each sentence has."""


def split_outputs(run: LoadedRun, split: str = "validation", data: str | None = None,
                  task: str | None = None, data_of: LoadedRun | None = None) -> SplitOutputs:
    """The logits of a finished run on a split of its recipe (or of ``data_of``'s recipe, or a
    data file), in the data's order: what calibration, ensembles and weight-space fusion fit
    and score on."""
    import numpy as np

    member, model, labels, encoded = _encoded_split(run, task, split, data, data_of)
    restored_logits, restored_refs = _outputs_in_order(run, member, model, labels, encoded)
    if member.features != "per-token":
        return SplitOutputs(np.stack(restored_logits).astype(np.float32), np.asarray(restored_refs, dtype=np.int64))
    rows, refs_out, words = [], [], []
    for lg, ref in zip(restored_logits, restored_refs):
        keep = ref != -100  # labelled words (first sub-token); padding is -100 too
        rows.append(lg[keep])
        refs_out.append(ref[keep])
        words.append(int(keep.sum()))
    return SplitOutputs(np.concatenate(rows).astype(np.float32), np.concatenate(refs_out).astype(np.int64),
                        np.asarray(words))


def outputs_on(run: LoadedRun, task: Any, rows: Any, labels: list[str]) -> Any:
    """A run's logits (over its own labels) on the rows of another recipe's data, read and
    prepared by that recipe's ``task`` with the run's processor, in the rows' order (LEEP)."""
    import numpy as np

    encoded = task.preprocess(rows, run.processor, labels)
    if "labels" in encoded.column_names:  # the target's labels mean nothing to the run's head
        encoded = encoded.remove_columns("labels")
    logits, _ = _outputs_in_order(run, task, run.model, labels, encoded)
    return np.stack(logits).astype(np.float64)


def _outputs_in_order(run: LoadedRun, task: Any, model: Any, labels: list[str], encoded: Any) -> tuple[list, list]:
    """A model's logits (and the rows' label ids, None without labels) on encoded rows:
    predicted in length order (little padding), returned row by row in the rows' own order."""
    import numpy as np

    order = np.argsort(encoded["length"], kind="stable") if "length" in encoded.column_names \
        else np.arange(len(encoded))
    with tempfile.TemporaryDirectory(prefix="hftransfer-eval-") as scratch:
        trainer = _inference_trainer(run, task, model, labels, scratch)
        trainer.compute_metrics = None
        out = trainer.predict(encoded.select(order))
    logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
    refs = None if out.label_ids is None else np.asarray(out.label_ids)
    restored_logits, restored_refs = [None] * len(order), [None] * len(order)
    for row, i in enumerate(order):
        restored_logits[i] = logits[row]
        restored_refs[i] = None if refs is None else refs[row]
    return restored_logits, restored_refs


def task_metrics(result: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The task's metrics out of ``Trainer.evaluate``'s dict, without the prefix and timings."""
    return {key[len(prefix) + 1:]: value for key, value in result.items()
            if key.startswith(prefix + "_") and key[len(prefix) + 1:] not in TIMINGS + ("epoch",)}
