"""The registered task types; see :class:`Task` for what a task provides."""
from .base import Task
from . import text  # noqa: F401  (registers text-classification)

__all__ = ["Task"]
