"""The Python API, one door beside the CLI: the same verbs, the same errors
(:class:`~hftransfer.errors.HFTransferError`).

    import hftransfer
    result = hftransfer.train("recipes/quickstart.yaml", ["strategy.name=lora"])
    print(result.run_dir, result.metrics["test"])
    print(hftransfer.predict(result.run_dir, ["what a lovely match"]))
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import engine, pipeline
from .comparison import CompareResult, render_report
from .comparison import compare as _compare
from .cards import write_cards
from .engine import LoadedRun, RunResult, evaluate_run, load_run, run_task
from .errors import HFTransferError
from .fusion import ensemble as _ensemble
from .fusion import weights
from .fusion.calibrate import CalibrationResult
from .fusion.calibrate import calibrate as calibrate_run
from .hub import PushResult, push_run
from .predictions import (
    check_batch_size,
    check_request,
    output_format,
    parse_top_k,
    prediction_inputs,
    write_predictions,
)
from .ranking import RankResult
from .ranking import rank as _rank
from .registry import all_strategies, all_tasks
from .rundir import task_model_dir

__all__ = [
    "CalibrationResult",
    "CompareResult",
    "LoadedRun",
    "Predictions",
    "PushResult",
    "RankResult",
    "RunResult",
    "calibrate",
    "check",
    "compare",
    "ensemble",
    "interpolate",
    "evaluate",
    "is_ensemble",
    "load_ensemble",
    "load_run",
    "predict",
    "predictions",
    "push",
    "rank",
    "report",
    "run_task",
    "soup",
    "strategies",
    "tasks",
    "train",
    "write_cards",
]

is_ensemble = _ensemble.is_ensemble
load_ensemble = _ensemble.load


def train(recipe: Any, overrides: list[str] | None = None, output_dir: str | Path | None = None,
          overwrite: bool = False, resume: bool = False, keep_checkpoints: bool = False) -> RunResult:
    """Train a recipe into a run directory and return it with its metrics; a staged recipe
    (``stages:``) trains its stages in order into one directory (:mod:`hftransfer.pipeline`).
    A finished run keeps its ``checkpoints/`` (optimizer state, for nothing but ``resume``) only
    with ``keep_checkpoints=True``.

    >>> result = train("recipes/quickstart.yaml", ["train.num_train_epochs=1"])
    >>> result.metrics["test"]["accuracy"]
    """
    run = pipeline.train if pipeline.is_staged(recipe) else engine.train
    return run(recipe, overrides, output_dir=output_dir, overwrite=overwrite, resume=resume,
               keep_checkpoints=keep_checkpoints)


def check(recipe: Any, overrides: list[str] | None = None) -> Any:
    """Everything ``train`` checks before it loads weights (``hftransfer validate``): the
    recipe's :class:`~hftransfer.engine.Setup`, or for a staged recipe the pipeline and a
    Setup per stage."""
    return pipeline.check(recipe, overrides) if pipeline.is_staged(recipe) else engine.check(recipe, overrides)


def compare(recipe: Any, *, strategies: str | list[str] | None = None, sources: str | list[str] | None = None,
            budgets: str | list[Any] = "all", seeds: int = 3, scratch: bool = True, min_steps: int = 50,
            overrides: list[str] | None = None, output_dir: str | Path | None = None, backend: str = "local",
            address: str | None = None, cpus_per_cell: int = 1, progress: bool = True) -> CompareResult:
    """Train a grid of cells — each strategy (or source model) × label budget × seed, the
    ``scratch`` baseline among them unless ``scratch=False`` — and write its results and report
    (see :mod:`hftransfer.comparison`). A rerun into the same ``output_dir`` trains only the cells
    that are not finished. ``overrides`` are ``key=value`` for every cell, ``ARM:key=value`` for one.

    >>> result = hftransfer.compare("recipes/sst2-compare.yaml", strategies="full,lora",
    ...                             budgets="16,64", seeds=3)
    >>> result.results["cells"][0]["test"]
    """
    return _compare(recipe, strategies=strategies, sources=sources, budgets=budgets, seeds=seeds,
                    scratch=scratch, min_steps=min_steps, overrides=overrides, output_dir=output_dir,
                    backend=backend, address=address, cpus_per_cell=cpus_per_cell, progress=progress)


def report(directory: str | Path) -> list[Path]:
    """Render a comparison's ``report.md`` and ``report.html`` again from its ``results.json``."""
    return render_report(directory)


def rank(recipe: Any, candidates: str | list[str], *, pooling: str | None = None, folds: int = 5,
         compare_dir: str | Path | None = None, output_dir: str | Path | None = None,
         overrides: list[str] | None = None) -> RankResult:
    """Rank candidate source models for a recipe before training: LogME, a cross-validated probe
    and LEEP on frozen features of its training data (see :mod:`hftransfer.ranking`). With
    ``compare_dir`` (a comparison of the same candidates) the order is set against the fine-tuned
    one, and the comparison's report shows it.

    >>> result = hftransfer.rank("recipes/sst2-rank.yaml", "embedded,runs/conll2003-full")
    >>> result.ranking["recommendation"]
    """
    result = _rank(recipe, candidates, pooling=pooling, folds=folds, compare_dir=compare_dir,
                   output_dir=output_dir, overrides=overrides)
    if compare_dir is not None:
        render_report(compare_dir)
    return result


def evaluate(run_dir: str | Path, split: str = "test", data: str | None = None,
             task: str | None = None) -> dict[str, Any]:
    """Metrics of a finished run (or ensemble) on a split of its recipe or on a data file
    (``task``: one task of a multi-task run)."""
    if is_ensemble(run_dir):
        _no_task(run_dir, task)
        return _ensemble.evaluate(run_dir, split=split, data=data)
    return evaluate_run(run_dir, split=split, data=data, task=task)


@dataclass
class Predictions:
    """What :func:`predictions` returns: the inputs read, their predictions, and the task that
    made them (its ``format_prediction`` prints one)."""

    inputs: list[Any]
    results: list[Any]
    task: Any


def predict(run_dir: str | Path, inputs: list[Any] | str | None = None, task: str | None = None, *,
            file: str | Path | None = None, column: str | None = None, batch_size: int = 32,
            top_k: int | str | None = None, output: str | Path | None = None) -> list[Any]:
    """The prediction for each input, in order (``{"label", "score"}`` for classification,
    a list of entities for token classification); ``task`` picks the head of a multi-task run.
    A single string is one input.

    ``file``: more inputs, one a line (``.txt``, or ``-`` for stdin), or a column of a
    csv/tsv/jsonl/json/parquet file (``column``: its name, default the recipe's input column;
    ``"a,b"`` for a pair task). ``batch_size``: inputs per forward pass. ``top_k``
    (classification): also list the ``top_k`` best labels' scores under ``"scores"`` (0 or
    ``"all"``: every label). ``output``: also write one row per input to a ``.jsonl`` or
    ``.csv`` file.

    >>> hftransfer.predict("runs/sst2-lora", file="reviews.csv", column="review", top_k="all",
    ...                    output="predictions.csv")
    """
    return predictions(run_dir, inputs, task, file=file, column=column, batch_size=batch_size,
                       top_k=top_k, output=output).results


def predictions(run_dir: str | Path, inputs: list[Any] | str | None = None, task: str | None = None, *,
                file: str | Path | None = None, column: str | None = None, batch_size: int = 32,
                top_k: int | str | None = None, output: str | Path | None = None) -> Predictions:
    """:func:`predict`, returning the inputs it read and the task that predicted beside the
    predictions (what ``hftransfer predict`` prints)."""
    given = engine.check_inputs(inputs)
    top_k, batch_size = parse_top_k(top_k), check_batch_size(batch_size)
    check_request(given, file, column)
    if output is not None:
        output_format(output)  # a bad extension fails before any model loads
    if is_ensemble(run_dir):
        _no_task(run_dir, task)
        loaded = load_ensemble(run_dir)
        member = loaded.runs[0].task
        read = prediction_inputs(member, given, file, column)
        results = loaded.predict(read, batch_size=batch_size, top_k=top_k)
    else:
        task_model_dir(Path(run_dir), task)  # a wrong --task fails before any model loads
        run = load_run(run_dir)
        member, model, _ = run_task(run, task)
        read = prediction_inputs(member, given, file, column)
        results = member.predict(model, run.processor, read, batch_size=batch_size, top_k=top_k)
    if output is not None:
        write_predictions(output, read, results)
    return Predictions(read, results, member)


def ensemble(runs: list[str | Path], output_dir: str | Path, combine: str = "probs",
             overwrite: bool = False) -> dict[str, Any]:
    """Fit an ensemble of finished runs (same label set) on validation NLL and write its run
    directory; returns its metrics (see :mod:`hftransfer.fusion.ensemble`)."""
    return _ensemble.build(runs, output_dir, how=combine, overwrite=overwrite)


def _no_task(run_dir: str | Path, task: str | None) -> None:
    if task is not None:
        raise HFTransferError(f"--task: {str(run_dir)!r} is an ensemble of single-task runs; leave --task out")


def push(run_dir: str | Path, repo_id: str, **kwargs: Any) -> PushResult:
    """Upload the publishable part of a finished run (see :func:`hftransfer.hub.push_run`)."""
    return push_run(run_dir, repo_id, **kwargs)


def calibrate(run_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> CalibrationResult:
    """Fit a temperature on a finished run's validation split and fold it into the classifier's
    final layer; the calibrated model is a new run in ``output_dir`` (the input is never modified).

        result = hftransfer.calibrate("runs/sst2-lora", "runs/sst2-lora-calibrated")
        print(result.temperature, result.metrics["calibration"]["validation"])
    """
    return calibrate_run(run_dir, output_dir, overwrite=overwrite)


def interpolate(run_dir: str | Path, start: str | Path | None = None, *, output_dir: str | Path,
                alphas: str | list[float] | None = None, alpha: float | None = None,
                overwrite: bool = False) -> RunResult:
    """WiSE-FT: a fine-tuned run interpolated in weight space with ``start`` (a linear probe of
    the same source, the α = 0 end), α chosen on validation from ``alphas`` (default 0, 0.1, ...,
    1) or fixed by ``alpha``; saved as a plain model in ``output_dir``
    (see :func:`hftransfer.fusion.weights.interpolate`).

    >>> hftransfer.interpolate("runs/full", start="runs/probe", output_dir="runs/wise")
    """
    return weights.interpolate(run_dir, start, output_dir=output_dir, alphas=alphas, alpha=alpha,
                               overwrite=overwrite)


def soup(run_dirs: list[str | Path], *, output_dir: str | Path, kind: str = "greedy",
         overwrite: bool = False) -> RunResult:
    """A model soup (weight average) of runs fine-tuned from one source: ``greedy`` (default) or
    ``uniform``; saved as a plain model in ``output_dir`` (see :func:`hftransfer.fusion.weights.soup`).

    >>> hftransfer.soup(["runs/s0", "runs/s1", "runs/s2"], output_dir="runs/soup")
    """
    return weights.soup(run_dirs, output_dir=output_dir, kind=kind, overwrite=overwrite)


def strategies() -> dict[str, type]:
    """Every strategy by name."""
    return all_strategies()


def tasks() -> dict[str, type]:
    """Every task type by name."""
    return all_tasks()
