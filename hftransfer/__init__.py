"""hftransfer: move what a pretrained Hugging Face model knows to your task, one recipe a way.

The Python API mirrors the CLI::

    import hftransfer
    result = hftransfer.train("recipes/quickstart.yaml", ["strategy.name=lora"])
    print(result.run_dir, result.metrics["test"])
    print(hftransfer.predict(result.run_dir, ["what a lovely match"]))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import HFTransferError
from .recipe import Recipe, load_recipe

__version__ = "0.1.0"
__all__ = ["HFTransferError", "Recipe", "load_recipe", "train", "evaluate", "predict",
           "load_run", "SAMPLE_DATA"]

SAMPLE_DATA = Path(__file__).parent / "sample_data"
"""The project's own small sample dataset (train/validation/test csv) used by the quickstart."""


def train(recipe: Any, overrides: list[str] | None = None, **kwargs: Any):
    """Run a recipe (path, mapping or Recipe); returns a ``RunResult(run_dir, metrics)``."""
    from .engine import train as _train

    return _train(recipe, overrides, **kwargs)


def evaluate(run_dir: str | Path, split: str = "test", data: str | None = None,
             task: str | None = None) -> dict[str, Any]:
    """Metrics of a finished run on a split of its recipe or on a data file (``task``: one task
    of a multi-task run)."""
    from .engine import evaluate_run

    return evaluate_run(run_dir, split=split, data=data, task=task)


def load_run(run_dir: str | Path):
    """A finished run loaded for inference (``.model``, ``.processor``, ``.task``, ``.recipe``)."""
    from .engine import load_run as _load_run

    return _load_run(run_dir)


def predict(run_dir: str | Path, inputs: list[Any], task: str | None = None) -> list[Any]:
    """The prediction for each input, in order (``{"label", "score"}`` for classification);
    ``task`` picks the head of a multi-task run."""
    from .engine import run_task

    run = load_run(run_dir)
    member, model, _ = run_task(run, task)
    return member.predict(model, run.processor, list(inputs))
