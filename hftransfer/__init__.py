"""hftransfer: move what a pretrained Hugging Face model knows to your task, one recipe a way.

The Python API mirrors the CLI::

    import hftransfer
    result = hftransfer.train("recipes/quickstart.yaml", ["strategy.name=lora"])
    print(result.run_dir, result.metrics["test"])
    print(hftransfer.predict(result.run_dir, ["what a lovely match"]))

``import hftransfer`` stays light: the verbs below load the deep-learning stack (through
:mod:`hftransfer.api`) when first used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import HFTransferError
from .recipe import Recipe, load_recipe
from .registry import load

__version__ = "0.1.0"
__all__ = ["HFTransferError", "Recipe", "load_recipe", "train", "evaluate", "predict", "load_run",
           "push", "calibrate", "ensemble", "interpolate", "soup", "compare", "report", "rank", "SAMPLE_DATA"]

SAMPLE_DATA = Path(__file__).parent / "sample_data"
"""The project's own small sample dataset (train/validation/test csv) used by the quickstart."""

_API = ("train", "evaluate", "predict", "load_run", "push", "calibrate", "ensemble", "interpolate", "soup",
        "compare", "report", "rank")


def __getattr__(name: str) -> Any:
    # PEP 562: hftransfer.train and friends come from hftransfer.api on first use.
    if name in _API:
        return load(f"hftransfer.api:{name}")
    raise AttributeError(f"module 'hftransfer' has no attribute {name!r}")
