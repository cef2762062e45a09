"""The run-directory contract, in one place.

A run is built in a hidden staging folder next to its final place (``.NAME.partial``, which also
holds the checkpoints ``--resume`` needs) and renamed into place when it is complete, so a crash
never leaves a directory that looks like a finished run. While a run trains, its process holds
a lock on the staging folder, so a second run into the same place stops instead of wrecking it.

The kit writes a marker file (``.hftransfer-run.json``) into every folder it makes, listing the
files it wrote; it deletes or replaces a folder only when that marker is there, and then only the
files it wrote itself. ``metrics.json`` is written last: with ``recipe.yaml`` it marks a
finished run. Nothing the kit writes may hold an access token.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HFTransferError

logger = logging.getLogger("hftransfer")

MARKER = ".hftransfer-run.json"
"""Written by the kit into every run (and staging) folder it makes: only those are ever replaced."""
LOCK = ".hftransfer-lock"
"""Held (flock) by the process that trains into a staging folder; gone with the process."""
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
WEIGHT_TRANSFER = "weight_transfer.json"
"""``model.init``: how each tensor of the network was filled from the source (copied, selected,
grown or new) and from which source tensor."""
ENSEMBLE = "ensemble.json"
"""An ensemble run's members and how they combine (it holds no model of its own)."""
PIPELINE = "pipeline.yaml"
"""A staged run's whole recipe (``stages:``); its own ``recipe.yaml`` is the last stage's."""
STAGES = "stages"
"""A staged run's stages, each a run directory (``stages/1-NAME``) trained from the one before."""

TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
"""A task of a multi-task run: a folder (RUN/tasks/NAME) and a metric key (validation.NAME.f1)."""
HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{30,}")
"""What a Hugging Face access token looks like: never in a file the kit writes."""
TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".md", ".txt", ".jinja")
"""Files checked for tokens before a run is finished and before a push (weights are not text)."""

# Errors of the disk rather than of the kit: a full disk, a quota, a file-size limit, a
# read-only or forbidden place, a name too long.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
               errno.ENAMETOOLONG)
# What torch's checkpoint writer says when the disk refuses a write (it drops the OS error).
TORCH_WRITE_FAILURES = ("file write failed", "unexpected pos", "PytorchStreamWriter failed")
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
    try:
        if path.is_symlink() or not marker.is_file() or marker.is_symlink():
            return None
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("made_by") == "hftransfer" else None


def check_output_dir(run_dir: Path, *, overwrite: bool, resume: bool) -> None:
    """Every check of an output directory that can be made before training, so a mistake costs
    nothing: a usable name, not the current directory (or above it), not a link or a file, not
    taken unless ``overwrite``, ``overwrite`` replaces only a folder the kit made, and an
    interrupted run there is neither lost nor raced."""
    shown = str(run_dir)
    if "\x00" in shown:
        raise HFTransferError("--output-dir contains a NUL character; give a plain directory path")
    try:
        shown.encode("utf-8")
    except UnicodeEncodeError:
        raise HFTransferError(f"--output-dir {shown!r} is not valid UTF-8 text; give a plain name") from None
    try:
        _check_output_dir(run_dir, shown, overwrite=overwrite, resume=resume)
    except OSError as exc:  # a name too long for the file system, a forbidden parent...
        raise HFTransferError(f"--output-dir {shown!r}: {exc.strerror}; choose another --output-dir") from None


def _check_output_dir(run_dir: Path, shown: str, *, overwrite: bool, resume: bool) -> None:
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
    if stage.exists() or stage.is_symlink():
        if read_marker(stage) is None:
            raise HFTransferError(
                f"{str(stage)!r} is in the way of the run's staging folder and was not made by "
                "hftransfer; move it away or choose another --output-dir")
        if _locked(stage):
            raise HFTransferError(
                f"another hftransfer run is training into {shown!r} right now; wait for it, or "
                "choose another --output-dir")
        done = last_complete_checkpoint(stage / CHECKPOINTS)
        if not resume and not overwrite and done is not None:
            raise HFTransferError(
                f"an interrupted run of {shown!r} is in {str(stage)!r} ({done.name}): continue it "
                "with --resume, or start over with --overwrite")
    elif resume:
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


def _locked(stage: Path) -> bool:
    """Whether a live process holds the staging folder's lock."""
    path = stage / LOCK
    if not path.is_file():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@dataclass
class Stage:
    """A run being built by this process: its staging folder (locked while it trains) and the
    parent folders the kit created for it (removed again if the run fails)."""

    path: Path
    created: list[Path] = field(default_factory=list)
    _lock: Any = None

    def hold(self) -> None:
        handle = open(self.path / LOCK, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise HFTransferError(
                f"another hftransfer run is training into {str(self.path)!r} right now; wait for it, "
                "or choose another --output-dir") from None
        self._lock = handle

    def release(self) -> None:
        if self._lock is not None:
            (self.path / LOCK).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    def discard(self) -> None:
        """Remove the staging folder and the parents the kit created for it."""
        self.release()
        discard(self.path)
        for folder in self.created:  # innermost first; only if still empty
            try:
                folder.rmdir()
            except OSError:
                break

    def drop_incomplete_checkpoints(self) -> None:
        """After a failed resume: keep the complete checkpoints, remove what the failure cut short."""
        self.release()
        directory = self.path / CHECKPOINTS
        if directory.is_dir():
            for path in directory.iterdir():
                if path.name.startswith("checkpoint-") and not (path / "trainer_state.json").is_file():
                    shutil.rmtree(path, ignore_errors=True)

    def finish(self, run_dir: Path, overwrite: bool) -> None:
        """Mark the staged run finished and rename it into place (see :func:`finish`)."""
        self.release()
        finish(self.path, run_dir, overwrite)


def open_stage(stage: Path, record: dict[str, Any]) -> Stage:
    """Start a fresh staging folder, locked by this process (replacing a failed run's leftovers,
    which the kit made and checked), marked with ``record``: what --resume must find unchanged."""
    if stage.exists():
        held = Stage(stage)
        held.hold()  # nobody else is writing there
        held.release()
        discard(stage)
    created = []
    parent = stage.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    stage.mkdir(parents=True)
    held = Stage(stage, created)
    held.hold()
    _write_marker(stage, {"state": "training", "record": record})
    return held


def resume_stage(stage: Path, record: dict[str, Any]) -> tuple[Stage, Path]:
    """The interrupted run's staging folder, locked by this process, and its checkpoint."""
    checkpoint = resume_checkpoint(stage, record)
    held = Stage(stage)
    held.hold()
    return held, checkpoint


def resume_checkpoint(stage: Path, record: dict[str, Any]) -> Path:
    """The last complete checkpoint of an interrupted run, after checking that the run is
    resumed with what it started with (a changed recipe, label set or source model would mix
    two runs in one) and that the checkpoint is the kit's own and whole."""
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
    _check_checkpoint(checkpoint)
    return checkpoint


def _check_checkpoint(checkpoint: Path) -> None:
    """A checkpoint --resume reads: real files inside it (no link out of the staging folder),
    safetensors weights (never a pickle in their place) and a trainer state that parses."""
    damaged = (f"--resume: {str(checkpoint)!r} is damaged or was changed by hand ({{}}); start over "
               "with --overwrite (without --resume)")
    for path in [checkpoint, *checkpoint.rglob("*")]:
        if path.is_symlink():
            raise HFTransferError(damaged.format(f"{path.name} is a symbolic link"))
    # (optimizer.pt, scheduler.pt, rng_state.pth and training_args.bin are the Trainer's own
    # state, read with torch's weights_only loader; weights are safetensors.)
    pickled = [p.name for p in checkpoint.iterdir()
               if p.name.startswith(("pytorch_model", "adapter_model")) and p.suffix in (".bin", ".pt", ".pth")]
    if pickled or not any(checkpoint.glob("*.safetensors")):
        raise HFTransferError(damaged.format(f"{pickled[0]} in place of safetensors weights" if pickled
                                             else "no safetensors weights"))
    state = _strict_json(checkpoint / "trainer_state.json")
    step = state.get("global_step") if isinstance(state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2 ** 31:
        raise HFTransferError(damaged.format("trainer_state.json does not parse"))


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


def discard(stage: Path) -> None:
    """Remove a staging folder, if and only if the kit made it."""
    if read_marker(stage) is None:
        raise HFTransferError(
            f"{str(stage)!r} was not made by hftransfer; move it away or choose another --output-dir")
    shutil.rmtree(stage)


def drop_checkpoints(stage: Path) -> None:
    """Remove a finished run's checkpoints from its staging folder (the kit wrote them there;
    nothing but ``--resume`` of an interrupted run reads them). What else the Trainer wrote into
    that folder stays: ``report_to: tensorboard`` logs there (``checkpoints/runs/``)."""
    folder = stage / CHECKPOINTS
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name.startswith("checkpoint-") and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def readable_files(folder: Path) -> None:
    """Give every file the kit wrote under ``folder`` (or the file ``folder`` itself: a cache
    entry) the permissions the umask allows, as ``open()`` would: safetensors writes its files
    ``-rw-------`` (through a private temporary file), which would keep a shared or published
    run's weights, or a shared cache, from its other readers."""
    mask = os.umask(0)
    os.umask(mask)
    wanted = 0o666 & ~mask
    paths = [folder] if folder.is_file() else (Path(d) / n for d, _, names in os.walk(folder) for n in names)
    for path in paths:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o7777
        if mode | wanted != mode:
            os.chmod(path, mode | wanted)


def finish(stage: Path, run_dir: Path, overwrite: bool) -> None:
    """Mark the staged run finished and rename it into place. A run it replaces must have been
    made by the kit; the files that run wrote are replaced, anything a user added among them
    (at any depth) moves into the new run."""
    check_no_secrets(stage)
    readable_files(stage)
    _write_marker(stage, {"state": "finished", "files": _files(stage)})
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
    own = set((old or {}).get("files") or []) | {MARKER, LOCK}
    kept = []
    for name in _files(trash / "run"):
        parts = name.split("/")
        if any("/".join(parts[:i]) in own for i in range(1, len(parts) + 1)):
            continue  # the old run's own file (or inside a folder it listed whole)
        target = run_dir / name
        if target.exists() or target.is_symlink():
            kept.append(name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(trash / "run" / name, target)
    if kept:
        logger.warning("the replaced run held %s, which the new run also writes; the old copies "
                       "are in %s", ", ".join(kept), trash / "run")
    else:
        shutil.rmtree(trash)


def finish_in_place(folder: Path) -> None:
    """Mark a run built where it stands (a pipeline, whose stages are runs inside it) finished."""
    check_no_secrets(folder)
    readable_files(folder)
    _write_marker(folder, {"state": "finished", "files": _files(folder)})


def _files(folder: Path) -> list[str]:
    """Every file (or link) under ``folder`` but the marker, as relative paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        out += [(rel / name).as_posix() for name in filenames + [d for d in dirnames
                                                                  if (Path(dirpath) / d).is_symlink()]]
    return sorted(name for name in out if name not in (MARKER, LOCK))


def _write_marker(folder: Path, content: dict[str, Any]) -> None:
    write_json(folder / MARKER, {"made_by": "hftransfer", **content})


def write_text(path: Path, text: str) -> None:
    """Write a file through a temporary file and a rename: a reader never sees half of it, and
    a link at ``path`` is replaced, never written through."""
    if path.is_dir() and not path.is_symlink():
        raise HFTransferError(f"{str(path)!r} is a directory; move it away so the file can be written")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Strict JSON (a non-finite number becomes null), written through :func:`write_text`."""
    write_text(path, json.dumps(_finite(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n")


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


def model_files_digest(model_dir: Path) -> str:
    """A hash of a model directory's weights and config files (``*.safetensors``, ``*config.json``):
    what refers to a model by path (an ensemble member, a fusion source) notices it changed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).iterdir()
                       if p.is_file() and (p.suffix == ".safetensors" or p.name.endswith("config.json"))):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    """A JSON file the kit wrote (strict: no NaN or Infinity); None when missing or broken."""
    return _strict_json(path)


def _strict_json(path: Path) -> Any:
    """JSON as the kit writes it: no NaN or Infinity; None when the file is missing or broken."""
    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except (OSError, ValueError, RecursionError):
        return None


def check_no_secrets(folder: Path, names: list[str] | None = None) -> None:
    """Refuse when a text file the kit wrote (or is about to upload) holds something that looks
    like a Hugging Face access token: it came from the data (a label), the source model's files
    or a hand-edited run, and it must not be saved or published."""
    for name in names if names is not None else _files(folder):
        path = folder / name
        if not name.endswith(TEXT_SUFFIXES) or path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if HF_TOKEN.search(text):
            raise HFTransferError(
                f"{name} of {str(folder)!r} would hold something that looks like a Hugging Face "
                "access token (from the data's labels, the source model's files, or a hand edit); "
                "tokens never go into a run or onto the Hub: remove it at its source")


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
    in Rust (safetensors) report the OS error inside their own exception's message; torch's
    checkpoint writer drops it."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        found = re.search(r"\(os error (\d+)\)", str(exc))
        code = int(found.group(1)) if found else None
    if code is None and isinstance(exc, RuntimeError) and any(s in str(exc) for s in TORCH_WRITE_FAILURES):
        reason = "the disk refused a write (full, or over a quota?)"
    elif code in DISK_ERRORS:
        reason = os.strerror(code)
    else:
        return None
    return HFTransferError(
        f"cannot write under {str(where)!r}: {reason}; free some space (or fix the permissions) "
        "and try again, or write elsewhere")


# --------------------------------------------------------------------------- reading finished runs


def require_finished_run(path: Path) -> None:
    """Raise unless ``path`` is a run directory that ``train`` finished."""
    if not path.is_dir():
        raise HFTransferError(f"{str(path)!r} is not a directory; pass a run directory of hftransfer train")
    if not (path / RECIPE).is_file() or not (path / METRICS).is_file():
        raise HFTransferError(
            f"{str(path)!r} is not a finished hftransfer run (no recipe.yaml/metrics.json); "
            "pass the directory that `hftransfer train` printed")


def require_kit_run(path: Path) -> None:
    """Raise unless ``path`` is a finished run that this kit made (its marker is there): the
    only kind of folder the kit writes into after training (``hftransfer card``)."""
    require_finished_run(path)
    if read_marker(path) is None:
        raise HFTransferError(
            f"{str(path)!r} has no {MARKER}, so it was not made by this version of hftransfer (or "
            "was copied without it); the kit writes only into runs it made: retrain it")


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A finished run's metrics.json (strict JSON, as the kit writes it); a clear error when it
    is damaged."""
    data = _strict_json(run_dir / METRICS)
    if not isinstance(data, dict):
        raise HFTransferError(
            f"{str(run_dir / METRICS)!r} is damaged (not the strict JSON the kit writes); retrain "
            "the run or restore the file")
    return data


def manifest_tasks(run_dir: Path) -> list[str] | None:
    """The task names of a multi-task run (from its manifest), or None for a single-task run."""
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        return None
    data = _strict_json(manifest)
    names = list(data["tasks"]) if isinstance(data, dict) and isinstance(data.get("tasks"), dict) else None
    if not names or not all(isinstance(n, str) and TASK_NAME.match(n) for n in names):
        raise HFTransferError(f"{str(manifest)!r} is damaged; retrain the run or restore the file")
    return names


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
