"""The registered task types; see :class:`Task` for what a task provides."""
from .base import Task
from . import text  # noqa: F401  (registers text-classification)
from . import token  # noqa: F401  (registers token-classification)
from . import image  # noqa: F401
from . import audio  # noqa: F401

__all__ = ["Task"]
