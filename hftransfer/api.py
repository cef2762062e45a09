"""The Python API, one door beside the CLI: the same verbs, the same errors
(:class:`~hftransfer.errors.HFTransferError`).

    import hftransfer
    result = hftransfer.train("recipes/quickstart.yaml", ["strategy.name=lora"])
    print(result.run_dir, result.metrics["test"])
    print(hftransfer.predict(result.run_dir, ["what a lovely match"]))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .cards import write_cards
from .engine import LoadedRun, RunResult, check, evaluate_run, load_run, predict, run_task, train
from .fusion import weights
from .hub import PushResult, push_run
from .registry import all_strategies, all_tasks

__all__ = ["train", "check", "evaluate", "predict", "load_run", "run_task", "push", "write_cards",
           "interpolate", "soup", "strategies", "tasks", "RunResult", "LoadedRun", "PushResult"]


def evaluate(run_dir: str | Path, split: str = "test", data: str | None = None,
             task: str | None = None) -> dict[str, Any]:
    """Metrics of a finished run on a split of its recipe or on a data file (``task``: one task
    of a multi-task run)."""
    return evaluate_run(run_dir, split=split, data=data, task=task)


def push(run_dir: str | Path, repo_id: str, **kwargs: Any) -> PushResult:
    """Upload the publishable part of a finished run (see :func:`hftransfer.hub.push_run`)."""
    return push_run(run_dir, repo_id, **kwargs)


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
