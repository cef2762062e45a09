"""``hftransfer ensemble``: several finished runs of one label set predict together.

Each member keeps its own architecture and processor (tokenizer, image processor): it reads the
raw inputs its own way, and only the outputs meet. On the validation split the ensemble fits,
in this order:

1. a temperature per member (its validation NLL, :func:`scores.fit_temperature`);
2. member weights, on validation NLL of the combination: ``probs`` averages the members'
   calibrated probabilities (weights on the simplex), ``logits`` adds their calibrated logits
   (weights ≥ 0, so the sum also finds its own temperature). Both objectives are convex in the
   weights and every member alone is one of the candidates, so the fitted ensemble's validation
   NLL is at most its best member's (the fit falls back to that member when the optimiser
   ends worse).

The first member's data is the ensemble's: every member reads its validation split (for the
fit) and test split, with its own processor, so a source model trained on other data joins a
target model as a member. The ensemble run directory holds ``ensemble.json`` (members, as paths
relative to it, with the hash of each member's weights; temperatures; weights), the first
member's recipe (its task and data), metrics.json and a card. ``evaluate`` and ``predict`` take it; it is not a ``transformers`` model, and the card says
so: ``pipeline()`` cannot load it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import rundir
from ..engine import LoadedRun, load_run, split_outputs
from ..errors import HFTransferError
from ..tasks.base import label_scores
from . import scores
from .runs import derived_run, finish_derived, load_single_task_run

ENSEMBLE = rundir.ENSEMBLE
COMBINES = ("probs", "logits")
SEQUENCE_TASKS = ("text-classification", "image-classification", "audio-classification")


def is_ensemble(run_dir: str | Path) -> bool:
    return (Path(run_dir) / ENSEMBLE).is_file()


# --------------------------------------------------------------------------- fitting


def combine(member_logits: list[np.ndarray], temperatures: list[float], weights: np.ndarray,
            how: str) -> np.ndarray:
    """The ensemble's log-probabilities [rows, labels]."""
    calibrated = [np.asarray(z, dtype=np.float64) / t for z, t in zip(member_logits, temperatures)]
    if how == "logits":
        return scores.log_softmax(sum(w * z for w, z in zip(weights, calibrated)))
    mixed = sum(w * np.exp(scores.log_softmax(z)) for w, z in zip(weights, calibrated))
    return np.log(np.clip(mixed, 1e-300, None))


def fit_weights(member_logits: list[np.ndarray], temperatures: list[float], labels: np.ndarray,
                how: str) -> np.ndarray:
    """Member weights that minimise the ensemble's NLL on ``labels`` (see the module doc)."""
    from scipy.optimize import minimize

    k = len(member_logits)
    rows = np.arange(len(labels))

    def loss(w: np.ndarray) -> float:
        return float(-combine(member_logits, temperatures, w, how)[rows, labels].mean())

    start = np.full(k, 1.0 / k)
    if how == "logits":
        found = minimize(loss, start, method="L-BFGS-B", bounds=[(0.0, None)] * k)
    else:
        found = minimize(loss, start, method="SLSQP", bounds=[(0.0, 1.0)] * k,
                         constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}])
    candidates = [np.clip(found.x, 0.0, None)] + [np.eye(k)[i] for i in range(k)]
    if how == "probs":
        candidates[0] = candidates[0] / max(candidates[0].sum(), 1e-12)
    return min(candidates, key=loss)


# --------------------------------------------------------------------------- building


def _members(paths: list[str | Path]) -> list[LoadedRun]:
    if len(paths) < 2:
        raise HFTransferError("ensemble: give at least two runs")
    if len({os.path.realpath(p) for p in paths}) < len(paths):
        raise HFTransferError("ensemble: a run is listed twice; every member is a different run")
    runs = [load_single_task_run(p, "ensemble") for p in paths]
    first = runs[0]
    for run in runs:
        if is_ensemble(run.run_dir):
            raise HFTransferError(f"ensemble: {str(run.run_dir)!r} is an ensemble itself; list its members")
        if run.task.name not in SEQUENCE_TASKS:
            raise HFTransferError(
                f"ensemble: {str(run.run_dir)!r} is a {run.task.name} run; ensembles combine one "
                f"prediction per input ({', '.join(SEQUENCE_TASKS)})")
        if run.task.name != first.task.name:
            raise HFTransferError(
                f"ensemble: {str(first.run_dir)!r} is a {first.task.name} run but {str(run.run_dir)!r} "
                f"a {run.task.name} run; members solve the same task")
        if run.metrics.get("labels") != first.metrics.get("labels"):
            raise HFTransferError(
                f"ensemble: {str(first.run_dir)!r} predicts labels {first.metrics.get('labels')} but "
                f"{str(run.run_dir)!r} predicts {run.metrics.get('labels')}; members share one label set, "
                "in the same order")
    return runs


def _validation(runs: list[LoadedRun]) -> tuple[list[np.ndarray], np.ndarray]:
    """Every member's logits on the first member's validation split, and its labels."""
    first = runs[0]
    if first.recipe.data.validation is None and not first.recipe.data.validation_fraction:
        raise HFTransferError(
            f"ensemble: the recipe of {str(first.run_dir)!r} (the first member, whose data the ensemble "
            "is fit on) has no validation split; give data.validation or data.validation_fraction")
    outputs = [split_outputs(run, "validation", data_of=first) for run in runs]
    for run, out in zip(runs, outputs):
        if not np.isfinite(out.logits).all():
            raise HFTransferError(f"ensemble: {str(run.run_dir)!r} gives non-finite outputs on validation")
    return [o.logits for o in outputs], outputs[0].labels


def build(paths: list[str | Path], output_dir: str | Path, how: str = "probs",
          overwrite: bool = False) -> dict[str, Any]:
    """Fit an ensemble of finished runs on validation and write its run directory; returns its
    metrics."""
    if how not in COMBINES:
        raise HFTransferError(f"ensemble: --combine must be one of {', '.join(COMBINES)}, got {how!r}")
    out_dir = Path(output_dir)
    rundir.check_output_dir(out_dir, overwrite=overwrite, resume=False)
    runs = _members(paths)
    logits, labels = _validation(runs)
    temperatures = [scores.fit_temperature(z, labels) for z in logits]
    weights = fit_weights(logits, temperatures, labels, how)
    fitted = combine(logits, temperatures, weights, how)
    members = [{"run": str(run.run_dir), "temperature": t, "weight": float(w),
                "validation": scores.summary(z, labels)}
               for run, t, w, z in zip(runs, temperatures, weights, logits)]
    validation = {**scores.summary(fitted, labels), "f1": _f1(fitted, labels, len(runs[0].metrics["labels"]))}
    with derived_run(out_dir, overwrite, "ensemble") as held:
        stage = held.path
        manifest = {"combine": how, "members": [
            {"path": os.path.relpath(os.path.realpath(run.run_dir), os.path.realpath(out_dir)),
             "weights_sha256": rundir.model_files_digest(run.run_dir), "temperature": t, "weight": float(w)}
            for run, t, w in zip(runs, temperatures, weights)]}
        rundir.write_json(stage / ENSEMBLE, manifest)
        (stage / rundir.RECIPE).write_text((runs[0].run_dir / rundir.RECIPE).read_text(encoding="utf-8"),
                                           encoding="utf-8")
        first = runs[0].metrics
        metrics: dict[str, Any] = {
            "strategy": "ensemble", "task": first.get("task"), "labels": first.get("labels"),
            "data": first.get("data"),
            "ensemble": {"combine": how, "members": members, "fit": "validation NLL"},
            "validation": validation,
        }
        ensemble = _Ensemble(manifest, runs, stage)
        test = ensemble.split_log_probs("test") if _has_test(runs[0]) else None
        if test is not None:  # test is read once, for the fitted ensemble
            metrics["test"] = {**scores.summary(test[0], test[1]), "f1": _f1(test[0], test[1], len(first["labels"]))}
        finish_derived(held, out_dir, metrics, overwrite, card=_card(out_dir, metrics))
    return metrics


def _has_test(run: LoadedRun) -> bool:
    data = run.recipe.data
    return data.test is not None or bool(data.test_fraction)


def _f1(log_probs: np.ndarray, labels: np.ndarray, classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, log_probs.argmax(-1), average="binary" if classes == 2 else "macro",
                          zero_division=0))


# --------------------------------------------------------------------------- using


class _Ensemble:
    """A loaded ensemble: its members (loaded runs) and how they combine."""

    def __init__(self, manifest: dict[str, Any], runs: list[LoadedRun], run_dir: Path):
        self.manifest, self.runs, self.run_dir = manifest, runs, run_dir
        self.how = manifest["combine"]
        self.temperatures = [m["temperature"] for m in manifest["members"]]
        self.weights = np.asarray([m["weight"] for m in manifest["members"]])

    def split_log_probs(self, split: str, data: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        outputs = [split_outputs(run, split, data, data_of=self.runs[0]) for run in self.runs]
        return combine([o.logits for o in outputs], self.temperatures, self.weights, self.how), outputs[0].labels

    def predict(self, inputs: list[Any], batch_size: int = 32, top_k: int | None = None) -> list[dict[str, Any]]:
        """``{"label", "score"}`` per input (with ``top_k``: ``"scores"`` too, as a run's)."""
        logits = [run.task.logits(run.model, run.processor, inputs, batch_size).numpy() for run in self.runs]
        probs = np.exp(combine(logits, self.temperatures, self.weights, self.how))
        return label_scores(probs, self.runs[0].metrics["labels"], top_k)


def load(run_dir: str | Path) -> _Ensemble:
    """An ensemble run directory with its members loaded (each checked unchanged since the fit)."""
    path = Path(run_dir)
    rundir.require_finished_run(path)
    manifest = rundir.read_json(path / ENSEMBLE)
    members = manifest.get("members") if isinstance(manifest, dict) else None
    if not isinstance(members, list) or len(members) < 2 or manifest.get("combine") not in COMBINES or not all(
            isinstance(m, dict) and isinstance(m.get("path"), str) and isinstance(m.get("weights_sha256"), str)
            and isinstance(m.get("temperature"), (int, float)) and isinstance(m.get("weight"), (int, float))
            for m in members):
        raise HFTransferError(f"{str(path / ENSEMBLE)!r} is damaged; build the ensemble again")
    runs = []
    for m in members:
        where = path / m["path"]
        if not (where / rundir.METRICS).is_file():
            raise HFTransferError(
                f"ensemble member {m['path']!r} (relative to {str(path)!r}) is not there any more; an "
                "ensemble refers to its members: put the run back or build the ensemble again")
        if rundir.model_files_digest(where) != m["weights_sha256"]:
            raise HFTransferError(
                f"ensemble member {str(where)!r} changed after the ensemble was fit; build the ensemble again")
        runs.append(load_run(where))
    return _Ensemble(manifest, runs, path)


def evaluate(run_dir: str | Path, split: str = "test", data: str | None = None) -> dict[str, Any]:
    """The ensemble's accuracy, F1, NLL and ECE on a split of its recipe or a data file."""
    if data is None and split not in ("train", "validation", "test"):
        raise HFTransferError(f"--split must be train, validation or test, got {split!r}")
    if data is not None and not any(ch in data for ch in "*?[") and not Path(os.path.expanduser(data)).exists():
        raise HFTransferError(f"--data: {data!r} does not exist")
    ensemble = load(run_dir)
    log_probs, labels = ensemble.split_log_probs(split, data)
    return {**scores.summary(log_probs, labels),
            "f1": _f1(log_probs, labels, len(ensemble.runs[0].metrics["labels"]))}


def predict(run_dir: str | Path, inputs: list[Any], batch_size: int = 32,
            top_k: int | None = None) -> list[dict[str, Any]]:
    """``[{"label", "score"}]`` per input: the ensemble's probability of its top label (with
    ``top_k``, the best ``top_k`` labels' too; 0: all)."""
    return load(run_dir).predict(list(inputs), batch_size, top_k)


def _card(run_dir: Path, metrics: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| `{m['run']}` | {m['temperature']:.3f} | {m['weight']:.3f} | {m['validation']['accuracy']:.4f} "
        f"| {m['validation']['nll']:.4f} |" for m in metrics["ensemble"]["members"])
    test = metrics.get("test")
    scores_line = f"validation accuracy {metrics['validation']['accuracy']:.4f}, NLL {metrics['validation']['nll']:.4f}" + (
        f"; test accuracy {test['accuracy']:.4f}, NLL {test['nll']:.4f} (read once)" if test else "")
    return (
        "---\nlibrary_name: hftransfer\ntags:\n- hftransfer\n- ensemble\n---\n\n"
        f"# {run_dir.name}\n\n"
        f"An ensemble of {len(metrics['ensemble']['members'])} {metrics['task']} runs, made with "
        "hftransfer: each member reads the inputs with its own processor and the "
        f"members' calibrated {'probabilities are averaged' if metrics['ensemble']['combine'] == 'probs' else 'logits are added'} "
        "with weights fit on validation NLL.\n\n"
        "It is **not** a `transformers` model: `pipeline()` cannot load it. It needs the kit and its "
        "member runs, at the paths in `ensemble.json`:\n\n"
        f"```bash\nhftransfer predict {run_dir.name} \"an input\"\nhftransfer evaluate {run_dir.name} --split test\n```\n\n"
        "| member | temperature | weight | validation accuracy | validation NLL |\n|---|---|---|---|---|\n"
        f"{rows}\n\nThe ensemble: {scores_line}.\n")
