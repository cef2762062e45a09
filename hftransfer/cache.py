"""Where the kit caches what it can compute again: features of frozen encoders and adapter runs
merged into their base (``$HFTRANSFER_CACHE``, else ``<HF cache home>/hftransfer``).

Every entry is written to a temporary name and renamed into place, so an entry that exists is
complete; a failure leaves no entry behind.
"""
from __future__ import annotations

import os
import shutil
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


KINDS = (FEATURES, TEACHER, MERGED)


def usage() -> dict[str, tuple[int, int]]:
    """Per kind of entry: (how many entries, their size in bytes) under :func:`cache_root`."""
    out = {}
    for kind in KINDS:
        folder = cache_root() / kind
        files = [f for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
        entries = {f.relative_to(folder).parts[0] for f in files if not f.name.startswith(".")}
        out[kind] = (len(entries), sum(f.stat().st_size for f in files))
    return out


def clear(kinds: tuple[str, ...] = KINDS) -> tuple[int, int]:
    """Remove every entry of ``kinds`` (they are computed again when needed); returns (entries,
    bytes) removed. Only the kit's own kind folders are touched, never the rest of the root."""
    removed = size = 0
    for kind in kinds:
        if kind not in KINDS:
            raise HFTransferError(f"unknown cache kind {kind!r}; valid: {', '.join(KINDS)}")
        folder = cache_root() / kind
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            files = [entry] if entry.is_file() else [f for f in entry.rglob("*") if f.is_file()]
            size += sum(f.stat().st_size for f in files)
            removed += 0 if entry.name.startswith(".") else 1
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return removed, size

