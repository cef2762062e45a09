"""``hftransfer rank``: score every candidate source model on the recipe's training data before
any fine-tuning, from frozen features.

Each candidate's features are those ``feature-extraction`` trains on (the same preprocessing,
pooling and cache entry, so a later feature-extraction run or comparison reuses them). On them:
LogME (the evidence of a Bayesian linear model per class), a cross-validated linear probe, and
LEEP for a candidate that is a run of the kit with a classification head of its own. Token tasks
use one feature per labelled word. With a comparison of the same candidates (``--compare DIR``),
the predicted order is set against the fine-tuned one (Kendall's τ).
"""
from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import engine, rundir
from ..errors import HFTransferError
from ..models import resolve
from ..recipe import ModelSpec, Recipe, load_recipe, model_set
from ..recipe.stages import is_staged
from ..registry import get_task
from . import scores

logger = logging.getLogger("hftransfer")

RANK = "rank.json"
SCORES = ("logme", "probe_accuracy", "leep")


@dataclass
class RankResult:
    """What :func:`rank` returns: the ranked candidates and where ``rank.json`` went."""

    path: Path
    ranking: dict[str, Any]


def default_output_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name or 'run'}-rank"


def rank(recipe: str | Path | dict | Recipe, candidates: str | list[str], *, pooling: str | None = None,
         folds: int = 5, compare_dir: str | Path | None = None, output_dir: str | Path | None = None,
         overrides: list[str] | None = None) -> RankResult:
    """Rank candidate source models for a recipe's task and data (best first) before training.

    >>> result = rank("recipes/sst2-rank.yaml", "recipes/sources/sst2-candidates.yaml")
    >>> result.ranking["recommendation"]["best"]
    """
    if is_staged(recipe):
        raise HFTransferError("rank takes a recipe of one run; this one is staged (stages:)")
    base = load_recipe(recipe, overrides)
    if base.is_multitask:
        raise HFTransferError("rank takes a single-task recipe (task: and data:); this one has tasks:")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise HFTransferError(f"--folds must be a whole number of 2 or more, got {folds!r}")
    models = model_set(candidates, "--candidates")
    if len(models) < 2:
        raise HFTransferError(f"--candidates names {len(models)} model; ranking needs 2 or more")
    finetuned = _fine_tuned(Path(compare_dir), base) if compare_dir is not None else None
    setups = {}
    for name, model in models.items():  # every candidate checked before any weights load
        try:
            setups[name] = engine.check(_candidate_recipe(base, model, pooling))
        except HFTransferError as exc:
            raise HFTransferError(f"candidate {name}: {exc}") from None
    rows = []
    for name, setup in setups.items():
        rows.append(_score(name, models[name], setup, folds))
        logger.info("%s: LogME %.4f, probe %.4f (%.1f s)", name, rows[-1]["logme"],
                    rows[-1]["probe_accuracy"], rows[-1]["seconds"])
    rows.sort(key=lambda r: -r["logme"])
    ranking = {
        "recipe": base.name, "task": base.task_type, "labels": next(iter(setups.values())).splits.labels,
        "examples": rows[0]["examples"], "score": "logme", "candidates": rows,
        "recommendation": scores.recommendation({r["name"]: r["logme"] for r in rows}),
        "seconds": round(sum(r["seconds"] for r in rows), 2),
    }
    if finetuned is not None:
        ranking["fine_tuned"] = _agreement(rows, finetuned)
    out = Path(output_dir) if output_dir is not None else default_output_dir(base)
    try:
        out.mkdir(parents=True, exist_ok=True)
        rundir.write_json(out / RANK, ranking)
        if compare_dir is not None:  # the comparison's report shows it beside the fine-tuned order
            rundir.write_json(Path(compare_dir) / RANK, ranking)
    except OSError as exc:
        raise HFTransferError(f"cannot write {str(out / RANK)!r} ({exc.strerror}); choose another --output-dir") from None
    return RankResult(path=out / RANK, ranking=ranking)


def _candidate_recipe(base: Recipe, model: dict[str, Any], pooling: str | None) -> dict[str, Any]:
    data = base.to_dict()
    data["model"] = copy.deepcopy(model)
    options = dict(base.strategy) if base.strategy_name == "feature-extraction" else {"name": "feature-extraction"}
    if pooling is None and base.strategy_name != "feature-extraction" and get_task(base.task_type).features == "pooled":
        # The recipe fine-tunes the model's own classification head, which reads the first
        # token: score that representation (a feature-extraction recipe keeps its own pooling).
        pooling = "cls"
    if pooling is not None:
        options["pooling"] = pooling
    data["strategy"] = options
    data["train"] = {k: v for k, v in (data.get("train") or {}).items() if k in ("seed", "per_device_eval_batch_size")}
    return data


def _score(name: str, model: dict[str, Any], setup: engine.Setup, folds: int) -> dict[str, Any]:
    started = time.perf_counter()
    features, labels = engine.frozen_features(setup)
    x = features.double().numpy()
    y = labels.long().numpy()
    n_classes = len(setup.splits.labels)
    row: dict[str, Any] = {"name": name, "model": model, "examples": int(len(y)), "dim": int(x.shape[1]),
                           "pooling": getattr(setup.strategy, "pooling", None),
                           "logme": scores.logme(x, y, n_classes)}
    row["probe_accuracy"], row["probe_std"] = scores.probe_accuracy(x, y, folds=folds,
                                                                    seed=int(setup.args.seed))
    row["leep"], row["leep_note"] = _leep(model, setup, y)
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def _leep(model: dict[str, Any], setup: engine.Setup, labels: np.ndarray) -> tuple[float | None, str | None]:
    """LEEP of a candidate that is a finished run of the kit classifying the same kind of input
    (its own head's label distribution on the target's examples); None and why otherwise."""
    spec = ModelSpec(**{k: v for k, v in model.items() if k in ("name_or_path", "revision")})
    if model.get("init") or model.get("config"):
        return None, "a reshaped or random network has no head of its own"
    try:
        where = Path(resolve(spec))
    except HFTransferError:
        return None, "not a run directory"
    if not ((where / rundir.RECIPE).is_file() and (where / rundir.METRICS).is_file()):
        return None, "no head of its own (not a run directory of the kit)"
    run = engine.load_run(where)
    if run.recipe.is_multitask or run.task.name != setup.task.name or run.task.features != "pooled":
        return None, f"its head predicts for {run.recipe.task_type}, not {setup.task.name}"
    logits = engine.outputs_on(run, setup.task, setup.splits.train, setup.splits.labels)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return scores.leep(probs, labels, len(setup.splits.labels)), None


def _fine_tuned(directory: Path, base: Recipe) -> dict[str, Any]:
    """The mean fine-tuned validation score of each arm of a comparison (at the recipe's own
    label budget when the comparison has it, else its largest)."""
    path = directory / "results.json"
    if not path.is_file():
        raise HFTransferError(f"--compare: {str(path)!r} does not exist; give the directory of a finished "
                              "hftransfer compare")
    results = rundir.read_json(path)
    try:
        metric, budgets = results["comparison"]["metric"], results["comparison"]["budgets"]
        cells = results["cells"]
    except (KeyError, TypeError):
        raise HFTransferError(f"--compare: {str(path)!r} is not the results.json of hftransfer compare") from None
    wanted = base.data.samples_per_label if base.data.samples_per_label in budgets else None
    budget = wanted if wanted is not None else max(budgets, key=lambda b: math.inf if b == "all" else b)
    means: dict[str, list[float]] = {}
    for cell in cells:
        value = (cell.get("validation") or {}).get(metric)
        if cell.get("budget") == budget and value is not None:
            means.setdefault(cell["arm"], []).append(float(value))
    return {"directory": os.fspath(directory), "metric": metric, "budget": budget,
            "scores": {arm: sum(v) / len(v) for arm, v in means.items()},
            "seeds": {arm: len(v) for arm, v in means.items()}}


def _agreement(rows: list[dict[str, Any]], finetuned: dict[str, Any]) -> dict[str, Any]:
    """Kendall's τ between each score's order and the fine-tuned order, over the candidates the
    comparison trained."""
    common = [r for r in rows if r["name"] in finetuned["scores"]]
    out = {**finetuned, "candidates": [r["name"] for r in common]}
    if len(common) < 2:
        out["note"] = "fewer than 2 candidates are arms of that comparison: no order to compare"
        return out
    actual = [finetuned["scores"][r["name"]] for r in common]
    out["kendall_tau"] = {}
    for score in SCORES:
        values = [r[score] for r in common]
        if all(v is not None for v in values):
            out["kendall_tau"][score] = scores.kendall_tau(values, actual)
    return out
