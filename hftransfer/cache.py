"""Where the kit caches what it can compute again: features of frozen encoders and adapter runs
merged into their base (``$HFTRANSFER_CACHE``, else ``<HF cache home>/hftransfer``), and the key
of a frozen model's weights that such entries are found by (:func:`fingerprint`).

Every entry is written to a temporary name and renamed into place, so an entry that exists is
complete; a failure leaves no entry behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------- keys of a model's weights
# A cache entry computed by a frozen model is keyed by what that model's weights hold. Hashing every
# weight costs seconds for a large model, so a weight still as it was loaded from files is named by
# those files instead: a Hub snapshot by its commit, a local folder by its files' sizes, times and
# sampled bytes. Only weights that are new or changed since loading are hashed whole.

LOADED = "_hftransfer_loaded"
"""Set on each tensor :func:`mark_loaded` tags: (its files and name there, version, sampled values)."""
SAMPLE_BYTES = 1 << 20  # per file: the first, middle and last MiB (a header edit, a tail append, a rewrite)
UNKEYED_CONFIG = ("id2label", "label2id", "_name_or_path", "transformers_version")
"""Config fields that do not change what the model computes from its inputs (labels name the head's
outputs; the head of a feature extractor is not part of its features)."""


def weights_source(location: str, revision: str | None = None) -> str | None:
    """What names the files a model loads from ``location``: the commit of a Hub snapshot in the
    local Hugging Face cache, or for a local folder the name, size, modification and change times
    and a hash of sampled bytes of each file a model reads (weights, configs, remote code); None
    when unknown. The transformers version is part of it: it turns files into tensors."""
    import transformers

    folder = Path(location)
    if folder.is_dir():
        digest = hashlib.sha256()
        try:
            for path in sorted(folder.iterdir()):
                if not path.is_file() or path.suffix not in (".safetensors", ".bin", ".json", ".py"):
                    continue
                stat = path.stat()
                # ctime too: copy tools set a file's modification time back, never its change time.
                digest.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|".encode())
                with open(path, "rb") as handle:
                    for offset in sorted({0, max(stat.st_size // 2 - SAMPLE_BYTES // 2, 0),
                                          max(stat.st_size - SAMPLE_BYTES, 0)}):
                        handle.seek(offset)
                        digest.update(handle.read(SAMPLE_BYTES))
        except OSError:  # a file that cannot be read names nothing (loading it says why)
            return None
        return f"files:{digest.hexdigest()}|transformers {transformers.__version__}"
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(location, "config.json", revision=revision)
    except Exception:  # not a Hub id, or an unreadable cache: unknown
        return None
    commit = re.search(r"/snapshots/([0-9a-f]{40})/", Path(config).as_posix()) if isinstance(config, str) else None
    return f"hub:{location}@{commit.group(1)}|transformers {transformers.__version__}" if commit else None


def mark_loaded(model: Any, source: str, new: set[str]) -> None:
    """Tag every tensor of a model just loaded from ``source`` (:func:`weights_source`) but those
    named in ``new`` (weights the files did not supply, initialised at random): a later
    :func:`fingerprint` names a tagged tensor by its source while it is unchanged."""
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name not in new:
            try:
                setattr(tensor, LOADED, (f"{source}|{name}", tensor._version, _sample(tensor)))
            except (RuntimeError, NotImplementedError):  # no version counter, no values here (meta)
                pass


def _sample(tensor: Any) -> Any:
    """Eight values spread over the tensor, on the CPU."""
    flat = tensor.detach().reshape(-1)
    return flat[sorted({i * (len(flat) - 1) // 7 for i in range(8)}) if len(flat) else []].cpu()


def as_loaded(tensor: Any) -> str | None:
    """The source and name of a tensor that still holds what was loaded (see :func:`mark_loaded`);
    None for any other. In-place changes count in the tensor's version counter; a write through
    ``.data`` (PEFT's merge does that) does not, and is caught by the sampled values."""
    import torch

    mark = getattr(tensor, LOADED, None)
    if mark is None:
        return None
    name, version, sample = mark
    try:
        same = tensor._version == version and torch.equal(_sample(tensor), sample)
    except (RuntimeError, TypeError, NotImplementedError):  # no version counter, no values (meta)
        return None
    return name if same else None


def fingerprint(model: Any, skip: Any = None) -> str:
    """A key of what ``model`` (but the weights of ``skip``) computes: its config and every weight,
    each named by its source (:func:`as_loaded`) or, when new or changed, hashed whole."""
    skipped = {id(t) for t in skip.state_dict(keep_vars=True).values()} if skip is not None else set()
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        settings = {k: v for k, v in config.to_dict().items() if k not in UNKEYED_CONFIG}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
        if id(tensor) in skipped:
            continue
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        source = as_loaded(tensor)
        digest.update(b"loaded:" + source.encode() if source is not None else b"values:" + tensor_bytes(tensor))
    return digest.hexdigest()


def tensor_bytes(tensor: Any) -> bytes:
    """A tensor's values as bytes (as raw bytes: numpy has no bfloat16)."""
    import torch

    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
