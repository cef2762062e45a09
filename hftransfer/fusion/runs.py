"""Finished runs as inputs of fusion, and a derived run as its output.

A derived run (calibrated, interpolated, a soup, an ensemble) is built in a staging folder and
renamed into place like a trained one, with the kit's marker, so it is never half-written, is
refused where a trained run would be, and can be overwritten only with ``--overwrite``.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import rundir
from ..cards import write_cards
from ..engine import LoadedRun, load_run
from ..errors import HFTransferError

# What a derived run takes over from the run it starts from: the model, its processor and the
# recipe (what the kit needs to load and evaluate it); never checkpoints, logs, cards or metrics.
NOT_COPIED = {rundir.MARKER, rundir.LOCK, rundir.METRICS, "README.md", rundir.CHECKPOINTS, rundir.LOGS}


def load_single_task_run(path: str | Path, what: str) -> LoadedRun:
    """A finished single-task run (``what`` names the argument in errors)."""
    if (Path(path) / rundir.ENSEMBLE).is_file():
        raise HFTransferError(f"{what}: {str(path)!r} is an ensemble, not a model; {what} takes the runs "
                              "of single models")
    run = load_run(path)
    if run.recipe.is_multitask:
        raise HFTransferError(f"{what} {str(path)!r} is a multi-task run; {what} takes single-task runs")
    return run


def copy_run_files(source: Path, stage: Path, skip: set[str] = frozenset()) -> None:
    """The model, processor and recipe files of ``source`` into ``stage`` (links refused: a run
    holds only its own files)."""
    for item in sorted(source.iterdir()):
        if item.name in NOT_COPIED or item.name in skip or item.name.startswith("."):
            continue
        if item.is_symlink():
            raise HFTransferError(f"{str(item)!r} is a link; a run directory holds its own files only")
        if item.is_dir():
            shutil.copytree(item, stage / item.name, symlinks=True)
        else:
            shutil.copy2(item, stage / item.name)


@contextmanager
def derived_run(output_dir: str | Path, overwrite: bool, kind: str) -> Iterator[rundir.Stage]:
    """The staging folder of a new run directory (``.path``): the body fills it (model files,
    recipe.yaml) and ends with :func:`finish_derived`. On any error the staging folder (and the
    parents made for it) is removed and nothing is left behind."""
    run_dir = Path(output_dir)
    rundir.check_output_dir(run_dir, overwrite=overwrite, resume=False)
    held = rundir.open_stage(rundir.staging_dir(run_dir), {"derived": kind})
    try:
        yield held
    except BaseException:
        held.discard()
        raise
    finally:
        held.release()


def finish_derived(held: rundir.Stage, run_dir: str | Path, metrics: dict[str, Any], overwrite: bool,
                   card: str | None = None) -> Path:
    """Write the derived run's card (rendered from its files, or ``card``) and metrics.json
    (last: with recipe.yaml it marks a finished run) and rename it into place."""
    metrics = rundir.as_json(metrics)
    if card is None:
        write_cards(held.path, metrics=metrics)
    else:
        rundir.write_text(held.path / "README.md", card)
    rundir.write_json(held.path / rundir.METRICS, metrics)
    held.finish(Path(run_dir), overwrite)
    return Path(run_dir)
