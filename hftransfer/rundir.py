"""The run-directory contract, in one place.

A run is built in a hidden staging folder next to its final place (``.NAME.partial``, which also
holds the checkpoints ``--resume`` needs) and renamed into place when it is complete, so a crash
never leaves a directory that looks like a finished run. The kit writes a marker file
(``.hftransfer-run.json``) into every folder it makes; it deletes or replaces a folder only when
that marker is there, and then only the entries it wrote itself. ``metrics.json`` is written
last: with ``recipe.yaml`` it marks a finished run.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import HFTransferError

logger = logging.getLogger("hftransfer")

MARKER = ".hftransfer-run.json"
"""Written by the kit into every run (and staging) folder it makes: only those are ever replaced."""
MANIFEST = "multitask.json"
"""A multi-task run's list of tasks and where their models are (``tasks/NAME``)."""
RECIPE = "recipe.yaml"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
TASKS = "tasks"
LOGS = "logs"
LOG_HISTORY = "logs/log_history.json"
TRAINING_ARGS = "logs/training_args.json"
"""The effective training arguments of the run, as the engine passed them (cards render from it)."""

# Errors of the disk rather than of the kit: a full disk, a quota, a file-size limit, a
# read-only or forbidden place.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
# Settings that do not change what a run trains, so --resume accepts a change of them.
RESUMABLE_CHANGES = ("train.disable_tqdm", "train.logging_steps", "train.logging_strategy",
                     "train.report_to", "train.dataloader_num_workers",
                     "train.per_device_eval_batch_size", "train.save_total_limit")


def staging_dir(run_dir: Path) -> Path:
    """Where a run is built before it is renamed into place (also holds resumable checkpoints)."""
    return run_dir.parent / f".{run_dir.name}.partial"


def read_marker(path: Path) -> dict[str, Any] | None:
    """The kit's marker of a folder, or None when the kit did not make it."""
    marker = path / MARKER
    if path.is_symlink() or not marker.is_file() or marker.is_symlink():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("made_by") == "hftransfer" else None


def check_output_dir(run_dir: Path, *, overwrite: bool, resume: bool) -> None:
    """Every check of an output directory that can be made before training, so a mistake costs
    nothing: it is not the current directory (or above it), not a link or a file, not taken
    unless ``overwrite``, and ``overwrite`` replaces only a folder the kit made."""
    shown = str(run_dir)
    if "\x00" in shown:
        raise HFTransferError("--output-dir contains a NUL character; give a plain directory path")
    absolute = Path(os.path.abspath(run_dir))
    cwd = Path.cwd()
    if absolute == cwd or absolute in cwd.parents or not absolute.name:
        raise HFTransferError(
            f"--output-dir {shown!r} is the current directory or holds it; a run needs a directory "
            "of its own, e.g. --output-dir runs/NAME")
    if run_dir.is_symlink():
        raise HFTransferError(f"--output-dir {shown!r} is a symbolic link; give the real directory")
    if run_dir.exists() and not run_dir.is_dir():
        raise HFTransferError(f"output directory {shown!r} is a file; choose another --output-dir")
    if run_dir.exists():
        if not overwrite:
            raise HFTransferError(
                f"output directory {shown!r} already exists; pass --overwrite to replace it "
                "or --output-dir to write elsewhere")
        if read_marker(run_dir) is None and any(run_dir.iterdir()):
            raise HFTransferError(
                f"output directory {shown!r} exists and is not an hftransfer run (it has no "
                f"{MARKER}); refusing to replace it: move it away or choose another --output-dir")
    stage = staging_dir(run_dir)
    if (stage.exists() or stage.is_symlink()) and read_marker(stage) is None:
        raise HFTransferError(
            f"{str(stage)!r} is in the way of the run's staging folder and was not made by "
            "hftransfer; move it away or choose another --output-dir")
    if resume and not stage.exists():
        raise HFTransferError(f"--resume: no checkpoint to resume under {str(stage / CHECKPOINTS)!r}")
    _check_writable(absolute.parent, shown)


def _check_writable(directory: Path, shown: str) -> None:
    """Fail now, not after training, when the run could not be written: create and remove a
    probe folder in the nearest existing ancestor of ``directory``."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hftransfer-probe-", dir=existing))
    except OSError as exc:
        raise HFTransferError(
            f"cannot write the run {shown!r}: {existing} is not writable ({exc.strerror}); "
            "choose another --output-dir") from None


def open_stage(stage: Path, record: dict[str, Any]) -> None:
    """Start a fresh staging folder (replacing a crashed run's leftovers, which the kit made)
    and mark it with ``record``: what --resume must find unchanged."""
    if stage.exists():
        discard(stage)
    stage.mkdir(parents=True)
    _write_marker(stage, {"state": "training", "record": record})


def resume_checkpoint(stage: Path, record: dict[str, Any]) -> Path:
    """The last complete checkpoint of an interrupted run, after checking that the run is
    resumed with what it started with (a changed recipe, label set or source model would mix
    two runs in one)."""
    marker = read_marker(stage)
    if marker is None or marker.get("state") != "training":
        raise HFTransferError(f"--resume: {str(stage)!r} holds no interrupted run of hftransfer")
    before = marker.get("record") or {}
    for path in differences(before, record):
        if path in RESUMABLE_CHANGES:
            continue
        what = _RECORDED.get(path, path)
        shown = "" if path in _RECORDED else f" ({_short(_at(before, path))} -> {_short(_at(record, path))})"
        raise HFTransferError(
            f"--resume: {what} changed since the interrupted run started{shown}; resume with what "
            "it started with, or start over with --overwrite (without --resume)")
    checkpoint = last_complete_checkpoint(stage / CHECKPOINTS)
    if checkpoint is None:
        raise HFTransferError(f"--resume: no checkpoint to resume under {str(stage / CHECKPOINTS)!r}")
    return checkpoint


_RECORDED = {"labels": "the label set (read from the data)",
             "source_config": "the source model's config"}


def last_complete_checkpoint(directory: Path) -> Path | None:
    """The newest ``checkpoint-N`` whose trainer state was written (the Trainer writes it last,
    so a checkpoint cut short by a crash is skipped)."""
    if not directory.is_dir():
        return None
    done = [p for p in directory.iterdir()
            if p.name.startswith("checkpoint-") and p.name[len("checkpoint-"):].isdigit()
            and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def drop_incomplete_checkpoints(stage: Path) -> None:
    """Remove checkpoints a failure cut short (no trainer state), keeping the complete ones."""
    directory = stage / CHECKPOINTS
    if read_marker(stage) is None or not directory.is_dir():
        return
    for path in directory.iterdir():
        if path.name.startswith("checkpoint-") and not (path / "trainer_state.json").is_file():
            shutil.rmtree(path, ignore_errors=True)


def discard(stage: Path) -> None:
    """Remove a staging folder, if and only if the kit made it."""
    if read_marker(stage) is None:
        raise HFTransferError(
            f"{str(stage)!r} was not made by hftransfer; move it away or choose another --output-dir")
    shutil.rmtree(stage)


def finish(stage: Path, run_dir: Path, overwrite: bool) -> None:
    """Mark the staged run finished and rename it into place. A run it replaces must have been
    made by the kit; the entries that run wrote are replaced, anything a user added beside them
    moves into the new run."""
    _write_marker(stage, {"state": "finished",
                          "files": sorted(p.name for p in stage.iterdir() if p.name != MARKER)})
    if not (run_dir.exists() or run_dir.is_symlink()):
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage, run_dir)
        return
    old = read_marker(run_dir)
    if not overwrite or (old is None and any(run_dir.iterdir())):  # it appeared while we trained
        raise HFTransferError(f"output directory {str(run_dir)!r} appeared during training; "
                              f"the finished run is in {str(stage)!r}")
    trash = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.old-", dir=run_dir.parent))
    os.replace(run_dir, trash / "run")
    os.replace(stage, run_dir)
    own = set((old or {}).get("files") or []) | {MARKER}
    kept = []
    for entry in sorted((trash / "run").iterdir()):
        if entry.name in own:
            continue
        if (run_dir / entry.name).exists() or (run_dir / entry.name).is_symlink():
            kept.append(entry.name)
        else:
            os.replace(entry, run_dir / entry.name)
    if kept:
        logger.warning("the replaced run held %s, which the new run also writes; the old copies "
                       "are in %s", ", ".join(kept), trash / "run")
    else:
        shutil.rmtree(trash)


def _write_marker(folder: Path, content: dict[str, Any]) -> None:
    write_json(folder / MARKER, {"made_by": "hftransfer", **content})


def write_json(path: Path, data: Any) -> None:
    """Strict JSON (a non-finite number becomes null), written to a temporary file and renamed,
    so a reader never sees half of it."""
    text = json.dumps(_finite(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def as_json(data: Any) -> Any:
    """``data`` as a reader of the file :func:`write_json` writes would get it back."""
    return json.loads(json.dumps(_finite(data), allow_nan=False, default=str))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [prefix or "(value)"]


def _at(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def disk_error(exc: BaseException, where: Path) -> HFTransferError | None:
    """A one-line error for a disk that refused a write (full, read-only...), else None. Writers
    in Rust (safetensors) report the OS error inside their own exception's message."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        found = re.search(r"\(os error (\d+)\)", str(exc))
        code = int(found.group(1)) if found else None
    if code not in DISK_ERRORS:
        return None
    return HFTransferError(
        f"cannot write the run under {str(where)!r}: {os.strerror(code)}; free some space (or fix "
        "the permissions) and train again, or choose another --output-dir")


# --------------------------------------------------------------------------- reading finished runs


def require_finished_run(path: Path) -> None:
    """Raise unless ``path`` is a run directory that ``train`` finished."""
    if not path.is_dir():
        raise HFTransferError(f"{str(path)!r} is not a directory; pass a run directory of hftransfer train")
    if not (path / RECIPE).is_file() or not (path / METRICS).is_file():
        raise HFTransferError(
            f"{str(path)!r} is not a finished hftransfer run (no recipe.yaml/metrics.json); "
            "pass the directory that `hftransfer train` printed")


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A finished run's metrics.json; a clear error when it is damaged."""
    try:
        data = json.loads((run_dir / METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise HFTransferError(
            f"{str(run_dir / METRICS)!r} is damaged; retrain the run or restore the file")
    return data


def manifest_tasks(run_dir: Path) -> list[str] | None:
    """The task names of a multi-task run (from its manifest), or None for a single-task run."""
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        return None
    try:
        return list(json.loads(manifest.read_text(encoding="utf-8"))["tasks"])
    except (OSError, ValueError, KeyError, TypeError):
        raise HFTransferError(f"{str(manifest)!r} is damaged; retrain the run or restore the file") from None


def task_model_dir(run_dir: Path, task: str | None) -> Path:
    """Where a finished run's model is: the run itself, or ``tasks/TASK`` of a multi-task run
    (whose tasks are read from its manifest, without loading any model)."""
    require_finished_run(run_dir)
    names = manifest_tasks(run_dir)
    if names is None:
        if task is not None:
            raise HFTransferError(f"--task: {str(run_dir)!r} is a single-task run; leave --task out")
        return run_dir
    if task is None:
        raise HFTransferError(
            f"{str(run_dir)!r} is a multi-task run: every task is its own model; pass --task with one "
            f"of {', '.join(names)}")
    if task not in names:
        raise HFTransferError(f"--task {task!r} is not a task of this run; its tasks are {', '.join(names)}")
    return run_dir / TASKS / task
