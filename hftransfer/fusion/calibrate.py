"""``hftransfer calibrate RUN``: temperature scaling folded into the model.

One temperature T is fitted on the run's validation logits (the NLL of ``softmax(logits / T)``,
Guo et al., 2017) and written into the classifier's final layer: its weight and bias are divided
by T, so the logits come out divided by T and the result is still a plain ``transformers`` model
(or PEFT adapter) whose ``pipeline()`` scores are the calibrated probabilities. Dividing by a
positive number never changes which label wins: accuracy and every label metric stay the same.

The calibrated model is a new run directory (the input run is never modified): the run's files,
the one scaled tensor pair (every other tensor bit-identical), ``metrics.json`` with a
``calibration`` section (before/after accuracy, NLL and ECE), the card, and ``reliability.png``.

    hftransfer calibrate runs/sst2-lora --output-dir runs/sst2-lora-calibrated
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import rundir
from ..engine import LoadedRun, SplitOutputs, evaluate_run, load_run, run_task, split_outputs
from ..errors import HFTransferError
from ..strategies.fusion import FUSION_WEIGHTS, FusedModel
from .runs import copy_run_files, derived_run, finish_derived, load_single_task_run
from .scores import ECE_BINS, fit_temperature, probabilities, reliability, summary

logger = logging.getLogger("hftransfer")

TEMPERATURE_RANGE = (1e-2, 1e2)
"""Where the fitted temperature is kept. A validation split the model gets all right (or all
wrong) has no finite optimum (T -> 0 or T -> inf); the bounds keep the weights finite and sane."""
RELIABILITY = "reliability.png"
"""The reliability diagram (validation, before and after) in the calibrated run."""
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_WEIGHTS = "model.safetensors"
MODEL_INDEX = "model.safetensors.index.json"


@dataclass
class CalibrationResult:
    """What ``calibrate`` made: the new run directory and its ``metrics.json`` content."""

    run_dir: Path
    temperature: float
    layer: str
    metrics: dict[str, Any]


def calibrate(run_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> CalibrationResult:
    """Fit a temperature on ``run_dir``'s validation split, fold it into the classifier's final
    layer and write the calibrated model as a new run in ``output_dir``.

        result = calibrate("runs/sst2-full", "runs/sst2-full-calibrated")
        result.metrics["calibration"]["validation"]["after"]["ece"]
    """
    source, target = Path(run_dir), Path(output_dir)
    _check_inputs(source, target, overwrite)
    run = load_single_task_run(source, "calibrate")
    _, model, labels = run_task(run, None)
    # A fusion run's logits come out of its fusion layer: with combine logits they are the
    # target's plus the mapped source's (both layers are scaled), with features the fusion
    # layer's alone.
    fused = isinstance(model, FusedModel)
    target_layer = None if fused and model.combine == "features" else final_layer(
        dataclasses.replace(run, model=model.target) if fused else run, len(labels))
    adapter = hasattr(model.target if fused else model, "get_base_model")
    layer = " + ".join(([target_layer] if target_layer else []) + (["fusion"] if fused else []))

    before = {"validation": _outputs(run, "validation", len(labels))}
    if isinstance(run.metrics.get("test"), dict):
        before["test"] = _outputs(run, "test", len(labels))
    fitted = fit(before["validation"])
    temperature = float(np.clip(fitted, *TEMPERATURE_RANGE))
    if temperature != fitted:
        logger.warning("calibrate: the validation NLL has no finite optimum (T -> %s); the temperature "
                       "is kept at %g", "0" if fitted < temperature else "infinity", temperature)
    logger.info("calibrate: temperature %.4f folded into %s", temperature, layer)

    with derived_run(target, overwrite, "calibrate") as held:
        stage = held.path
        copy_run_files(source, stage, skip={RELIABILITY})
        if target_layer is not None:
            scale_layer(stage, target_layer, temperature, adapter)
        if fused:
            scale_tensors(stage / FUSION_WEIGHTS, ["weight", "bias"], temperature)
        # The staged run is loaded (and evaluated) like a finished one: it needs a metrics.json,
        # the input's for now (the final one is written last, by finish_derived).
        rundir.write_json(stage / rundir.METRICS, run.metrics)
        calibrated = load_run(stage)
        after = {split: _outputs(calibrated, split, len(labels)) for split in before}
        _check_folded(before["validation"], after["validation"], temperature, layer)

        section: dict[str, Any] = {"temperature": temperature, "layer": layer, "bins": ECE_BINS}
        for split, outputs in before.items():
            section[split] = {"before": _summary(outputs), "after": _summary(after[split])}
        metrics = {key: value for key, value in run.metrics.items() if key != "calibration"}
        for split in before:  # re-measured on the calibrated model, as `hftransfer evaluate` would
            metrics[split] = evaluate_run(stage, split)
        metrics["calibration"] = section
        draw_reliability(before["validation"], after["validation"], temperature, stage / RELIABILITY)
        finish_derived(held, target, metrics, overwrite)
    return CalibrationResult(target, temperature, layer, rundir.as_json(metrics))


def _check_inputs(source: Path, target: Path, overwrite: bool) -> None:
    """Every check that needs no model, so a mistake costs nothing."""
    rundir.require_finished_run(source)
    if rundir.manifest_tasks(source) is not None:
        raise HFTransferError(
            f"calibrate {str(source)!r} is a multi-task run; calibrate takes single-task runs "
            "(the model of one task, tasks/NAME, is not a run of its own)")
    try:
        same = os.path.samefile(source, target) if target.exists() else False
        a, b = Path(os.path.realpath(source)), Path(os.path.realpath(target))
    except OSError:
        same, a, b = False, source, target
    if same or a == b or a in b.parents or b in a.parents:
        raise HFTransferError(
            f"--output-dir {str(target)!r} is (or is inside, or holds) the run being calibrated; the "
            "input run is never modified: write the calibrated run elsewhere")
    rundir.check_output_dir(target, overwrite=overwrite, resume=False)
    metrics = rundir.read_metrics(source)
    if not isinstance(metrics.get("validation"), dict):
        raise HFTransferError(
            f"the run {str(source)!r} has no validation split (its recipe sets neither data.validation "
            "nor data.validation_fraction), and the temperature is fitted on validation data only: add "
            "data.validation (or data.validation_fraction) to its recipe and retrain")


def _outputs(run: LoadedRun, split: str, num_labels: int) -> SplitOutputs:
    out = split_outputs(run, split)
    if len(out.labels) == 0:
        raise HFTransferError(f"the {split} split of {str(run.run_dir)!r} has no labelled rows; "
                              "calibrate fits and scores on them")
    if out.logits.ndim != 2 or out.logits.shape[1] != num_labels:
        raise HFTransferError(
            f"the model of {str(run.run_dir)!r} gives {out.logits.shape[-1]} outputs for {num_labels} "
            "labels; its files were changed by hand: retrain it or restore them")
    if not np.isfinite(out.logits).all():
        raise HFTransferError(
            f"the run {str(run.run_dir)!r} gives non-finite logits (NaN or infinity) on its {split} "
            "split, so no temperature can calibrate it; retrain it (lower train.learning_rate)")
    return out


def fit(outputs: SplitOutputs) -> float:
    """The temperature that minimises the validation NLL (before the bounds)."""
    value = fit_temperature(outputs.logits, outputs.labels)
    if not math.isfinite(value) or value <= 0:
        raise HFTransferError(f"the temperature fit did not converge (T = {value}); the validation "
                              "logits are degenerate: retrain the run")
    return value


def _summary(outputs: SplitOutputs) -> dict[str, float]:
    return summary(outputs.logits, outputs.labels)


def final_layer(run: LoadedRun, num_labels: int) -> str:
    """The name of the classifier's final layer: the last ``torch.nn.Linear`` under the task's
    head modules with one output per label (named as in the plain ``transformers`` model, also
    for an adapter run, whose head PEFT saves beside the adapter)."""
    model = run.model
    if hasattr(model, "get_base_model"):  # PEFT wraps the head; the plain model names it
        config = model.get_base_model().config
        with torch.device("meta"):
            model = run.task.auto_class.from_config(
                config, trust_remote_code=bool(getattr(run.recipe.model, "trust_remote_code", False)))
    prefixes = run.task.head_prefixes
    found = [name for name, module in model.named_modules()
             if name.split(".")[0] in prefixes and isinstance(module, torch.nn.Linear)
             and module.out_features == num_labels]
    if not found:
        raise HFTransferError(
            f"the model of {str(run.run_dir)!r} ({type(model).__name__}) has no linear layer with "
            f"{num_labels} outputs in its head ({', '.join(prefixes)}), where calibrate folds the "
            "temperature; this architecture cannot be calibrated in place")
    return found[-1]


def scale_layer(stage: Path, layer: str, temperature: float, adapter: bool) -> None:
    """Divide ``layer``'s weight and bias by ``temperature`` in the staged run's safetensors
    file (the adapter's for an adapter run); every other tensor and the metadata are kept."""
    from safetensors import safe_open

    if adapter:
        path = stage / ADAPTER_WEIGHTS
    elif (stage / MODEL_INDEX).is_file():  # sharded: the shard that holds the layer
        weight_map = json.loads((stage / MODEL_INDEX).read_text(encoding="utf-8")).get("weight_map", {})
        key = _key(list(weight_map), f"{layer}.weight", stage / MODEL_INDEX)
        path = stage / weight_map[key]
    else:
        path = stage / MODEL_WEIGHTS
    if not path.is_file():
        raise HFTransferError(f"the run has no {path.name}; calibrate writes safetensors weights only: "
                              "retrain the run or restore the file")
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())  # (a safe_open handle is not iterable)
    names = [_key(keys, f"{layer}.weight", path)]
    bias = [k for k in keys if k == f"{layer}.bias" or k.endswith(f".{layer}.bias")]
    scale_tensors(path, names + (bias[:1] if len(bias) == 1 else []), temperature)


def scale_tensors(path: Path, names: list[str], temperature: float) -> None:
    """Divide the tensors ``names`` of a safetensors file by ``temperature``; every other tensor
    and the metadata are kept (written to a temporary file, then renamed into place)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for name in names:
        if name not in tensors:
            raise HFTransferError(f"{path.name} of the run holds no {name!r} tensor; retrain the run or "
                                  "restore its files")
        tensor = tensors[name]
        tensors[name] = (tensor.to(torch.float64) / temperature).to(tensor.dtype).contiguous()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _key(keys: list[str], wanted: str, where: Path) -> str:
    """The one key of a weights file that is ``wanted`` (or ends with it, under PEFT's prefix)."""
    if wanted in keys:
        return wanted
    found = [k for k in keys if k.endswith("." + wanted)]
    if len(found) != 1:
        raise HFTransferError(
            f"{where.name} of the run holds {'no' if not found else 'several'} {wanted!r} tensor(s), "
            "so the classifier's final layer cannot be calibrated in place; retrain the run or "
            "restore its files")
    return found[0]


def _check_folded(before: SplitOutputs, after: SplitOutputs, temperature: float, layer: str) -> None:
    """The calibrated model's logits are the input's divided by T: else the layer is not where
    the logits come out (something follows it), and the result would not be what was fitted."""
    expected = before.logits.astype(np.float64) / temperature
    tolerance = 1e-4 * (1.0 + float(np.abs(expected).max(initial=0.0)))
    if after.logits.shape != before.logits.shape or not np.array_equal(after.labels, before.labels) \
            or float(np.abs(after.logits - expected).max(initial=0.0)) > tolerance:
        raise HFTransferError(
            f"scaling {layer} did not divide the model's logits by the temperature (the model does "
            "more after that layer); this architecture cannot be calibrated in place")


def draw_reliability(before: SplitOutputs, after: SplitOutputs, temperature: float, path: Path) -> Path:
    """A reliability diagram (accuracy per confidence bin against the diagonal), before and after
    calibration, side by side, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, no display

    figure = Figure(figsize=(9, 4.2), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, outputs, title in ((axes[0], before, "before"), (axes[1], after, f"after (T = {temperature:.3f})")):
        probs = probabilities(outputs.logits)
        table = reliability(probs, outputs.labels)
        width = table[0]["hi"] - table[0]["lo"]
        lefts = [b["lo"] for b in table]
        counts = [b["count"] for b in table]
        ax.bar(lefts, [b["accuracy"] for b in table], width=width, align="edge", color="#4c72b0",
               edgecolor="white", label="accuracy")
        gap_bottom = [min(b["accuracy"], b["confidence"]) if b["count"] else 0 for b in table]
        gap = [abs(b["confidence"] - b["accuracy"]) if b["count"] else 0 for b in table]
        ax.bar(lefts, gap, bottom=gap_bottom, width=width, align="edge", color="#dd8452", alpha=0.45,
               edgecolor="#dd8452", label="gap to confidence")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
        scores = _summary(outputs)
        ax.set_title(f"{title}\nECE {scores['ece']:.4f}, NLL {scores['nll']:.4f}, "
                     f"{sum(counts)} rows", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    figure.suptitle(f"Reliability on the validation split ({ECE_BINS} bins)", fontsize=11)
    figure.savefig(path, format="png")
    return path
