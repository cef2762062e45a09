"""Where the kit caches what it can compute again: features of frozen encoders and adapter runs
merged into their base (``$HFTRANSFER_CACHE``, else ``<HF cache home>/hftransfer``).

Every entry is written to a temporary name and renamed into place, so an entry that exists is
complete; a failure leaves no entry behind.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import HFTransferError

FEATURES = "features"
"""Cached features: one safetensors file per (encoder weights, inputs, pooling)."""
TEACHER = "teacher"
"""A teacher's outputs (distillation): one safetensors file per (teacher weights, inputs)."""
MERGED = "merged"
"""Adapter runs merged into their base model, to serve as a plain source model."""


def cache_root() -> Path:
    """``$HFTRANSFER_CACHE``, else ``<HF cache home>/hftransfer``."""
    if os.environ.get("HFTRANSFER_CACHE"):
        return Path(os.environ["HFTRANSFER_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hftransfer"


def entry(kind: str, name: str) -> Path:
    """The path of one cache entry (``kind`` is FEATURES, TEACHER or MERGED)."""
    folder = cache_root() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HFTransferError(
            f"the cache folder {str(folder)!r} cannot be made ({exc.strerror}); point HFTRANSFER_CACHE "
            "at a writable directory") from None
    return folder / name


def staging_name(path: Path) -> Path:
    """A temporary sibling of ``path`` for this process: written there, renamed into place."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")
