"""Running a comparison: its cells one after another in this process, or as tasks on a Ray
cluster; a rerun trains only the cells that are not finished; ``results.json``/``results.csv``
after every cell; each cell's card gets its scratch baseline; the report at the end.

A comparison directory holds ``compare.json`` (what it was made with: a rerun with another
recipe is refused), ``cells/ARM/BUDGET/seed-N`` (each a normal run directory), the results and
the report.
"""
from __future__ import annotations

import csv
import fcntl
import io
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import engine, rundir
from ..cards import write_cards
from ..errors import HFTransferError
from ..models import public_name
from ..recipe import Recipe, recipe_changes
from .grid import ALL, DEFAULT_MIN_STEPS, Cell, Grid, build_grid
from .report import render_report

logger = logging.getLogger("hftransfer")

RECORD = "compare.json"
RESULTS = "results.json"
RESULTS_CSV = "results.csv"
_LOCK = ".hftransfer-compare-lock"
# Environment a Ray worker needs to load models as this process does (never a token: Ray keeps
# a task's environment in its cluster state).
_WORKER_ENV = ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
               "HFTRANSFER_CACHE", "HF_ENDPOINT", "TOKENIZERS_PARALLELISM")


@dataclass
class CompareResult:
    """What :func:`compare` returns."""

    directory: Path
    results: dict[str, Any]
    report: list[Path]
    trained: int
    """Cells trained by this call (the others were finished before)."""


def default_output_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name or 'run'}-compare"


def compare(recipe: str | Path | dict | Recipe, *, strategies: str | list[str] | None = None,
            sources: str | list[str] | None = None, budgets: str | list[Any] = ALL, seeds: int = 3,
            scratch: bool = True, min_steps: int = DEFAULT_MIN_STEPS, overrides: list[str] | None = None,
            output_dir: str | Path | None = None, backend: str = "local", address: str | None = None,
            cpus_per_cell: int = 1, progress: bool = True) -> CompareResult:
    """Train every cell of a comparison that is not finished yet and report them all.

    >>> result = compare("recipes/sst2-compare.yaml", strategies="full,lora,feature-extraction",
    ...                  budgets="16,64,256", seeds=3)
    >>> result.directory / "report.html"
    """
    if backend not in ("local", "ray"):
        raise HFTransferError(f"--backend must be local or ray, got {backend!r}")
    if backend == "local" and address:
        raise HFTransferError("--address names a Ray cluster: use it with --backend ray")
    if isinstance(cpus_per_cell, bool) or not isinstance(cpus_per_cell, int) or cpus_per_cell < 1:
        raise HFTransferError(f"--cpus-per-cell must be a whole number of 1 or more, got {cpus_per_cell!r}")
    if output_dir is not None and not isinstance(output_dir, (str, os.PathLike)):
        raise HFTransferError(f"output_dir is a directory path, got {output_dir!r}")
    grid = build_grid(recipe, strategies=strategies, sources=sources, budgets=budgets, seeds=seeds,
                      scratch=scratch, min_steps=min_steps, overrides=overrides)
    directory = Path(output_dir) if output_dir is not None else default_output_dir(grid.recipe)
    created = not directory.exists()
    ray, connected = _ray(address) if backend == "ray" else (None, False)
    try:
        lock = _open(directory, grid)
        try:
            cells = grid.cells()
            recipes = {cell.key: grid.cell_recipe(cell) for cell in cells}
            pending = [cell for cell in cells if not _finished(directory, cell, recipes[cell.key])]
            with _progress(len(cells), len(cells) - len(pending), progress) as bar:
                if pending and backend == "ray":
                    _run_on_ray(ray, directory, pending, recipes, cpus_per_cell,
                                lambda c: _done(directory, grid, c, bar))
                for cell in pending if backend == "local" else []:
                    run_cell(recipes[cell.key], directory / cell.key, cell)
                    _done(directory, grid, cell, bar)
            results = write_results(directory, grid)
            report = render_report(directory)
        except HFTransferError:
            if created and not any((directory / "cells").glob("*/*/seed-*")):
                shutil.rmtree(directory, ignore_errors=True)  # nothing of value was made here
            raise
        finally:
            lock.close()
    finally:
        if connected:  # this call connected to Ray: disconnect (a cluster keeps running)
            ray.shutdown()
    return CompareResult(directory=directory, results=results, report=report, trained=len(pending))


def _open(directory: Path, grid: Grid) -> Any:
    """The comparison's directory, locked by this process: a new one, or one made with the same
    recipe (a rerun trains its unfinished cells; more seeds or budgets add cells)."""
    identity = rundir.as_json(grid.identity())
    record = directory / RECORD
    if directory.exists() and not directory.is_dir():
        raise HFTransferError(f"--output-dir {str(directory)!r} is a file; choose a directory")
    if record.is_file():
        saved = rundir.read_json(record)
        before = saved.get("identity") if isinstance(saved, dict) else None
        if before != identity:
            changed = rundir.differences(before, identity) if isinstance(before, dict) else ["compare.json"]
            raise HFTransferError(
                f"{str(directory)!r} holds a comparison made with another recipe or settings (it differs at "
                f"{', '.join(changed[:3]) or 'compare.json'}); its cells cannot be mixed with these: choose "
                "another --output-dir, or delete that directory to start over")
    elif directory.is_dir() and any(directory.iterdir()):
        raise HFTransferError(
            f"{str(directory)!r} exists and is not a comparison of hftransfer compare (no {RECORD}); "
            "choose another --output-dir")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / _LOCK, "a")
    except OSError as exc:
        raise HFTransferError(f"cannot write the comparison {str(directory)!r} ({exc.strerror}); "
                              "choose another --output-dir") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise HFTransferError(f"another hftransfer compare is writing {str(directory)!r} right now; wait for "
                              "it, or choose another --output-dir") from None
    rundir.write_json(record, {"made_by": "hftransfer", "identity": identity})
    return handle


def _finished(directory: Path, cell: Cell, recipe: dict[str, Any]) -> bool:
    run_dir = directory / cell.key
    if not ((run_dir / rundir.METRICS).is_file() and (run_dir / rundir.RECIPE).is_file()):
        return False
    changed = [path for path in recipe_changes(run_dir, recipe) if path != "name"]  # names differ by design
    if changed:
        raise HFTransferError(
            f"cell {cell.key} was trained from another recipe than this comparison makes for it (it differs "
            f"at {', '.join(changed[:3])}); delete {str(run_dir)!r} to train it again")
    return True


def _done(directory: Path, grid: Grid, cell: Cell, bar: Any) -> None:
    """After a cell: its row in the results files (so a stopped comparison keeps it) and a line."""
    results = write_results(directory, grid)
    row = next(r for r in results["cells"] if r["cell"] == cell.key)
    bar.update(1)
    shown = "test" if row.get("test") else "validation"
    metric = _metric(grid)
    value = (row.get(shown) or {}).get(metric)
    bar.write(f"{cell.describe()}: {shown} {metric} {value if value is None else f'{value:.4f}'} "
              f"({row['wall_s']:.0f} s)")


def _metric(grid: Grid) -> str:
    chosen = grid.setups[grid.arms[0].name].args.metric_for_best_model
    if chosen and chosen.removeprefix("eval_") != "loss":
        return chosen.removeprefix("eval_")
    first = grid.setups[grid.arms[0].name]
    return first.task.metric_names(first.splits.labels)[0]


def cell_row(grid: Grid, cell: Cell, run_dir: Path) -> dict[str, Any]:
    """One line of ``results.json``, read from the cell's run directory."""
    metrics = rundir.read_metrics(run_dir)
    train = metrics.get("train") or {}
    history = rundir.read_json(run_dir / rundir.LOG_HISTORY) if (run_dir / rundir.LOG_HISTORY).is_file() else []
    epochs = next((e["epoch"] for e in reversed(history) if isinstance(e, dict) and "epoch" in e), None)
    row = {
        "cell": cell.key, "arm": cell.arm.name, "strategy": cell.arm.strategy,
        "source": metrics.get("base_model"), "budget": ALL if cell.budget is None else cell.budget,
        "seed": cell.seed, "n_train": (metrics.get("data") or {}).get("train"),
        "epochs": None if epochs is None else round(float(epochs), 2), "steps": train.get("steps"),
        "validation": _scores(metrics.get("validation")),
    }
    if "test" in metrics:
        row["test"] = _scores(metrics["test"])
    params = metrics.get("params") or {}
    row.update(trainable_params=params.get("trainable"), total_params=params.get("total"),
               wall_s=train.get("wall_s"), peak_rss_mb=train.get("peak_rss_mb"),
               samples_per_second=train.get("samples_per_second"), run_dir=cell.key)
    return row


def _scores(split: Any) -> dict[str, float]:
    return {k: v for k, v in (split or {}).items() if isinstance(v, (int, float)) and k != "loss"}


def write_results(directory: Path, grid: Grid) -> dict[str, Any]:
    """``results.json`` and ``results.csv`` from every finished cell of the grid (and the scratch
    baseline in each finished cell's metrics and card)."""
    rows, finished = [], {}
    for cell in grid.cells():
        if (directory / cell.key / rundir.METRICS).is_file():
            finished[(cell.arm.name, cell.budget, cell.seed)] = cell
            rows.append(cell_row(grid, cell, directory / cell.key))
    _attach_baselines(directory, grid, finished)
    first = grid.setups[grid.arms[0].name]
    counts = {"train": len(first.splits.train)}
    for split in ("validation", "test"):
        if getattr(first.splits, split) is not None:
            counts[split] = len(getattr(first.splits, split))
    metrics = sorted({k for r in rows for s in ("validation", "test") for k in (r.get(s) or {})},
                     key=lambda k: (k != _metric(grid), k))
    results = {
        "comparison": {
            "recipe": grid.recipe.name, "task": grid.recipe.task_type, "metric": _metric(grid),
            "metrics": metrics or [_metric(grid)],
            "arms": [{"name": a.name, "strategy": a.strategy,
                      "source": a.source_name or public_name(grid.recipe.model)} for a in grid.arms],
            "baseline": grid.baseline,
            "budgets": [ALL if b is None else b for b in grid.budgets], "seeds": grid.seeds,
            "labels": first.splits.labels, "data": counts, "min_steps": grid.min_steps,
            "cells": len(grid.cells()), "notes": grid.notes,
        },
        "cells": rows,
    }
    rundir.write_json(directory / RESULTS, results)
    rundir.write_text(directory / RESULTS_CSV, _csv(rows, metrics))
    return results


def _csv(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    head = ["arm", "strategy", "source", "budget", "seed", "n_train", "epochs", "steps"]
    tail = ["trainable_params", "total_params", "wall_s", "peak_rss_mb", "samples_per_second", "run_dir"]
    scores = [f"{split}_{m}" for split in ("validation", "test") for m in metrics]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head + scores + tail)
    for row in rows:
        writer.writerow([row.get(k) for k in head]
                        + [(row.get(s.split("_", 1)[0]) or {}).get(s.split("_", 1)[1]) for s in scores]
                        + [row.get(k) for k in tail])
    return out.getvalue()


def _attach_baselines(directory: Path, grid: Grid, finished: dict[tuple, Cell]) -> None:
    """Every finished cell's metrics (and card) get the scratch cell of its budget and seed."""
    if grid.baseline is None:
        return
    for (arm, budget, seed), cell in finished.items():
        base = finished.get((grid.baseline, budget, seed))
        if arm == grid.baseline or base is None:
            continue
        run_dir = directory / cell.key
        metrics = rundir.read_metrics(run_dir)
        theirs = rundir.read_metrics(directory / base.key)
        baseline = {"strategy": grid.baseline, "run": os.path.relpath(directory / base.key, run_dir),
                    **{s: theirs[s] for s in ("validation", "test") if s in theirs}}
        if metrics.get("baseline") != baseline:
            metrics["baseline"] = baseline
            write_cards(run_dir, metrics=metrics)
            rundir.write_json(run_dir / rundir.METRICS, metrics)


def _progress(total: int, done: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="cells", unit="cell", disable=not enabled or None,
                dynamic_ncols=True)


# --------------------------------------------------------------------------- Ray


def _ray(address: str | None) -> tuple[Any, bool]:
    """Ray, connected to the cluster at ``address`` (else a local instance started now), and
    whether this call connected it (a caller of the Python API may have connected already)."""
    try:
        import ray
    except ImportError:
        raise HFTransferError("--backend ray needs Ray: pip install 'hftransfer[ray]' (or pip install ray)") from None
    if ray.is_initialized():
        return ray, False
    if address and address != "auto":
        _check_reachable(address)
    env = {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": env} if env else None)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"at {address!r}" if address else "on this machine"
        raise HFTransferError(
            f"--backend ray: no Ray cluster {where} ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
            "start one with `ray start --head` and pass its address, or leave --address out to start a "
            "local one") from None
    return ray, True


def _check_reachable(address: str) -> None:
    """Fail at once on an address nothing listens at (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise HFTransferError(f"--address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379, the address "
                              "`ray start --head` prints)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise HFTransferError(
            f"--backend ray: no Ray cluster answers at {address!r} ({exc.strerror or type(exc).__name__}); start "
            "one with `ray start --head` and pass the address it prints, or leave --address out to start a "
            "local one") from None


def _run_on_ray(ray: Any, directory: Path, cells: list[Cell], recipes: dict[str, dict[str, Any]],
                cpus: int, done: Any) -> None:
    """Every cell as one Ray task (``cpus`` cores each); each writes its run directory where this
    process reads it (a shared disk on a real cluster)."""
    task = ray.remote(num_cpus=cpus, max_retries=0)(run_cell)
    here = os.getcwd()
    waiting = {task.remote(recipes[c.key], str((directory / c.key).resolve()), c, here, cpus): c for c in cells}
    try:
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=1)
            for ref in ready:
                cell = waiting.pop(ref)
                try:
                    ray.get(ref)
                except Exception as exc:  # a task's error comes back wrapped; ours are one line
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, HFTransferError):
                        raise HFTransferError(str(cause)) from None
                    raise
                done(cell)
    finally:
        for ref in waiting:
            ray.cancel(ref, force=True)


def run_cell(recipe: dict[str, Any], cell_dir: str | Path, cell: Cell, cwd: str | None = None,
             threads: int | None = None) -> None:
    """Train one cell (in this process, or as a Ray task): relative data paths resolve against
    ``cwd``, the directory the comparison was started from; ``threads`` torch threads."""
    if cwd is not None:
        os.chdir(cwd)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        engine.train(recipe, output_dir=cell_dir)
    except HFTransferError as exc:
        raise HFTransferError(f"cell {cell.describe()}: {exc}") from None
