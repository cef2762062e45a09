"""Staged transfer: the stages of a staged recipe (``stages:``) trained in order, each from the
model the stage before it trained, each a run directory inside the pipeline's; then what the
later stages cost the earlier ones (forgetting).

The pipeline's directory is built where it stands (its stages refer to one another by path, so
it is never renamed): it is marked as training until the end, and ``metrics.json``, written
last, marks it finished. Its own model is the last stage's (plain ``transformers``, the same
files), so ``predict``, ``evaluate``, ``card`` and ``push`` use it like any run.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from . import engine, rundir
from .cards import write_cards
from .engine import RunResult
from .errors import HFTransferError
from .models import is_hub_id
from .recipe import recipe_changes
from .recipe.stages import StagedRecipe, is_staged, load_staged, stage_recipe
from .registry import get_task
from .strategies.base import head_params
from .strategies.peft import merge_adapter

logger = logging.getLogger("hftransfer")

__all__ = ["check", "is_staged", "train"]


def check(source: str | Path | dict, overrides: list[str] | None = None) -> tuple[StagedRecipe, list[engine.Setup]]:
    """Every check ``train`` makes before it loads weights, for every stage (``hftransfer
    validate``): each stage's data, columns and processor, against the pipeline's source."""
    staged = load_staged(source, overrides)
    setups = []
    for i, (name, recipe) in enumerate(zip(staged.stage_names, staged.stages), 1):
        try:
            setups.append(engine.check(recipe))
        except HFTransferError as exc:
            raise HFTransferError(f"stages[{i}] ({name}): {exc}") from None
    return staged, setups


def train(source: str | Path | dict, overrides: list[str] | None = None, output_dir: str | Path | None = None,
          overwrite: bool = False, resume: bool = False, keep_checkpoints: bool = False) -> RunResult:
    """Train every stage in order into ``output_dir/stages/N-NAME`` (a finished stage of an
    interrupted pipeline is kept; ``resume`` continues the stage that was interrupted), measure
    forgetting, and make the last stage's model the pipeline's."""
    staged, setups = check(source, overrides)  # every stage's data, before the first one trains
    if output_dir is not None and not isinstance(output_dir, (str, os.PathLike)):
        raise HFTransferError(f"output_dir is a directory path, got {output_dir!r}")
    run_dir = Path(output_dir) if output_dir is not None else Path("runs") / staged.name
    _check_not_own_source(staged, run_dir)
    # Under accelerate launch every process trains every stage; only the main one holds and
    # writes the pipeline's directory.
    main = setups[0].main_process
    held = _open(run_dir, staged, overwrite=overwrite, resume=resume) if main else None
    _wait_for_main()  # the others look at the directory once the main process has opened it
    try:
        stage_dirs: list[Path] = []
        metrics: dict[str, Any] = {}
        for i, (name, recipe) in enumerate(zip(staged.stage_names, staged.stages), 1):
            if stage_dirs:
                recipe = stage_recipe(recipe, str(stage_dirs[-1]))
            stage_dirs.append(run_dir / rundir.STAGES / f"{i}-{name}")
            trained = _train_stage(name, recipe, stage_dirs[-1], resume, keep_checkpoints)
            metrics = trained.metrics if trained is not None else metrics  # what the others return
            _wait_for_main()  # the next stage starts from the model the main process saved
        if main:
            metrics = _pipeline_metrics(staged, stage_dirs)
            _write_pipeline(run_dir, staged, stage_dirs[-1], metrics)
    except HFTransferError:
        stages = run_dir / rundir.STAGES
        if held is not None and (not stages.is_dir() or not any(stages.iterdir())):
            held.discard()  # no stage (or resumable part of one) to keep
        raise
    finally:
        if held is not None:
            held.release()
    return RunResult(run_dir=run_dir, metrics=metrics, main_process=main)


def _wait_for_main() -> None:
    """Under a launch, every process waits here for the others (so for what the main process
    writes); a no-op in a single process. torch's barrier, not Accelerate's: every stage's
    ``TrainingArguments`` resets Accelerate's state, and a state built here without the
    stage's settings does not wait in a CPU launch."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _check_not_own_source(staged: StagedRecipe, run_dir: Path) -> None:
    source = staged.stages[0].model.name_or_path
    if is_hub_id(source) or staged.stages[0].model.config is not None and staged.stages[0].model.init is None:
        return
    where, out = Path(os.path.abspath(os.path.expanduser(source))), Path(os.path.abspath(run_dir))
    if where == out or out in where.parents:
        raise HFTransferError(
            f"model.name_or_path {source!r} is inside the pipeline's own output directory {str(run_dir)!r}: "
            "a pipeline cannot start from what it writes; start from another model or choose another "
            "--output-dir")


def _open(run_dir: Path, staged: StagedRecipe, *, overwrite: bool, resume: bool) -> rundir.Stage:
    """The pipeline's directory, locked by this process: an interrupted pipeline's (its finished
    stages are kept) unless ``overwrite``, else a new one (replacing a finished run of the kit
    only with ``overwrite``)."""
    marker = rundir.read_marker(run_dir) if run_dir.is_dir() and not run_dir.is_symlink() else None
    interrupted = marker is not None and marker.get("state") == "training" \
        and "pipeline" in (marker.get("record") or {})
    record = {"pipeline": staged.name, "stages": staged.stage_names}
    if interrupted and not overwrite:
        if marker["record"] != record:
            raise HFTransferError(
                f"{str(run_dir)!r} holds an interrupted pipeline of other stages "
                f"({', '.join(map(str, marker['record'].get('stages') or [])) or '?'}); continue it with its own "
                "recipe, start over with --overwrite, or choose another --output-dir")
        held = rundir.Stage(run_dir)
        held.hold()
        return held
    if resume and not interrupted:
        raise HFTransferError(f"--resume: {str(run_dir)!r} holds no interrupted pipeline to continue")
    rundir.check_output_dir(run_dir, overwrite=overwrite, resume=False)
    if run_dir.exists() and any(run_dir.iterdir()):
        logger.warning("--overwrite: the pipeline in %s is replaced; its stages train again", run_dir)
    return rundir.open_stage(run_dir, record)


def _train_stage(name: str, recipe: Any, stage_dir: Path, resume: bool,
                 keep_checkpoints: bool = False) -> RunResult | None:
    if (stage_dir / rundir.METRICS).is_file() and (stage_dir / rundir.RECIPE).is_file():
        changed = recipe_changes(stage_dir, recipe)
        if changed:
            raise HFTransferError(
                f"stage {name} in {str(stage_dir)!r} was trained from another recipe (it differs at "
                f"{', '.join(changed[:3])}); start the pipeline over with --overwrite")
        logger.info("stage %s: finished before, kept (%s)", name, stage_dir)
        return None
    checkpoint = rundir.last_complete_checkpoint(rundir.staging_dir(stage_dir) / rundir.CHECKPOINTS)
    if checkpoint is not None and not resume:
        raise HFTransferError(
            f"stage {name} of this pipeline was interrupted ({checkpoint}): continue it with --resume "
            "(the finished stages are kept), or start the whole pipeline over with --overwrite")
    logger.info("stage %s: training into %s", name, stage_dir)
    return engine.train(recipe, output_dir=stage_dir, resume=checkpoint is not None,
                        keep_checkpoints=keep_checkpoints)


# --------------------------------------------------------------------------- forgetting


def _pipeline_metrics(staged: StagedRecipe, stage_dirs: list[Path]) -> dict[str, Any]:
    """The last stage's metrics, with the pipeline's source as the base model, a row per stage
    and the forgetting of every earlier supervised stage."""
    stages = [rundir.read_metrics(d) for d in stage_dirs]
    first, last = stages[0], stages[-1]
    rows = []
    for i, (name, recipe, metrics, directory) in enumerate(zip(staged.stage_names, staged.stages, stages, stage_dirs)):
        primary = get_task(recipe.task_type).primary_metric
        labels, before = metrics.get("labels"), stages[i - 1].get("labels") if i else None
        rows.append({
            "name": name,
            "dir": f"{rundir.STAGES}/{directory.name}",
            "task": recipe.task_type,
            "strategy": recipe.strategy_name,
            "from": first.get("base_model") if i == 0 else f"stage {staged.stage_names[i - 1]}",
            "head": "-" if not labels else "kept" if labels == before else "new",
            "train_examples": (metrics.get("data") or {}).get("train"),
            "metric": primary,
            "validation": (metrics.get("validation") or {}).get(primary),
            "test": (metrics.get("test") or {}).get(primary),
            "wall_s": (metrics.get("train") or {}).get("wall_s"),
        })
    out = {**last, "base_model": first.get("base_model"), "stages": rows,
           "forgetting": forgetting(staged, stage_dirs, stages)}
    out.pop("base_model_license", None)
    if first.get("base_model_license"):
        out["base_model_license"] = first["base_model_license"]
    return out


def forgetting(staged: StagedRecipe, stage_dirs: list[Path], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """For every supervised stage before the last: its validation metric again, with its own
    head on the final encoder (every tensor outside the head taken from the last stage's model
    where the names and shapes match): ``before``, ``after`` and the ``drop``."""
    if len(stage_dirs) < 2:
        return {}
    final = _plain_model(engine.load_run(stage_dirs[-1]).model).state_dict()
    out = {}
    for name, recipe, metrics, directory in zip(staged.stage_names[:-1], staged.stages, stages, stage_dirs):
        task = get_task(recipe.task_type)
        primary = task.primary_metric
        before = (metrics.get("validation") or {}).get(primary)
        if not metrics.get("labels") or not isinstance(before, (int, float)):
            continue  # unsupervised (masked-LM) or without a validation split: nothing to re-measure
        run = engine.load_run(directory)
        model = _plain_model(run.model)
        head = head_params(model, task)
        replaced = kept = 0
        with torch.no_grad():
            for key, tensor in model.state_dict().items():
                if key in head:
                    continue
                if key in final and final[key].shape == tensor.shape:
                    tensor.copy_(final[key])
                    replaced += 1
                else:
                    kept += 1
        if not replaced:
            out[name] = {"metric": primary, "before": before,
                         "skipped": "no tensor of the final model matches this stage's encoder by name"}
            continue
        after = engine.evaluate_loaded(dataclasses.replace(run, model=model), split="validation").get(primary)
        out[name] = {"metric": primary, "before": before, "after": after,
                     "drop": None if after is None else before - after,
                     "tensors_from_final": replaced, "tensors_kept": kept}
        logger.info("forgetting of stage %s: %s %.4f -> %.4f", name, primary, before, after)
    return out


def _plain_model(model: Any) -> Any:
    """A stage's model as plain ``transformers`` (an adapter merged into its base, in memory)."""
    if not hasattr(model, "peft_config"):
        return model
    return merge_adapter(model, "forgetting", "the stages are finished in stages/; measure it by hand")


# --------------------------------------------------------------------------- the pipeline's own files


def _write_pipeline(run_dir: Path, staged: StagedRecipe, last: Path, metrics: dict[str, Any]) -> None:
    """The last stage's model, processor and recipe at the top of the pipeline's directory
    (hard links where the disk allows), then ``pipeline.yaml``, the card and metrics.json."""
    skip = {rundir.MARKER, rundir.LOCK, rundir.METRICS, "README.md", rundir.CHECKPOINTS}
    for item in last.iterdir():
        if item.name in skip or item.is_symlink():
            continue
        target = run_dir / item.name
        if item.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(item, target, copy_function=_link_or_copy)
        else:
            target.unlink(missing_ok=True)
            _link_or_copy(item, target)
    rundir.write_text(run_dir / rundir.PIPELINE, staged.to_yaml())
    metrics = rundir.as_json(metrics)
    write_cards(run_dir, metrics=metrics)
    rundir.write_json(run_dir / rundir.METRICS, metrics)
    rundir.finish_in_place(run_dir)


def _link_or_copy(src: Any, dst: Any) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)
