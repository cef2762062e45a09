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
from .fusion.calibrate import CalibrationResult
from .fusion.calibrate import calibrate as calibrate_run
from .hub import PushResult, push_run
from .registry import all_strategies, all_tasks

__all__ = ["train", "check", "evaluate", "predict", "load_run", "run_task", "push", "write_cards",
           "calibrate", "strategies", "tasks", "RunResult", "LoadedRun", "PushResult", "CalibrationResult"]


def evaluate(run_dir: str | Path, split: str = "test", data: str | None = None,
             task: str | None = None) -> dict[str, Any]:
    """Metrics of a finished run on a split of its recipe or on a data file (``task``: one task
    of a multi-task run)."""
    return evaluate_run(run_dir, split=split, data=data, task=task)


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


def strategies() -> dict[str, type]:
    """Every strategy by name."""
    return all_strategies()


def tasks() -> dict[str, type]:
    """Every task type by name."""
    return all_tasks()
