"""Weight-space fusion: runs combined by their weights into one plain ``transformers`` model.

- :func:`interpolate` (WiSE-FT, Wortsman et al. 2022): θ_α = (1 − α)·θ_start + α·θ_run over a
  grid of α, the α with the best validation accuracy kept (ties: the larger α). The start is a
  linear probe of the same source (a ``feature-extraction`` run: its directory holds the whole
  source encoder with the trained head written into the model's own classification head).
  For an adapter run the end is the adapter merged into its base; without a start, the start
  is the base with the run's own head, so θ_α = θ_base + α·ΔW: the adapter's scale.
- :func:`soup` (model soups, Wortsman et al. 2022): the average of runs fine-tuned from one
  source; ``greedy`` adds runs in order of validation accuracy, each only if the soup's
  validation accuracy does not drop; ``uniform`` averages them all. Both are scored; the
  chosen kind is saved.

Every result is a new run directory (staged, then renamed into place) holding a plain model
that ``predict``, ``evaluate``, ``push`` and ``transformers.pipeline`` load. The validation
split chooses; the test split is read once, for the saved model only.

>>> interpolate("runs/full", start="runs/probe", output_dir="runs/wise")
>>> soup(["runs/seed0", "runs/seed1", "runs/seed2"], output_dir="runs/soup")
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import rundir
from ..engine import LoadedRun, RunResult, evaluate_loaded, split_outputs
from ..resources import peak_rss_mb
from ..errors import HFTransferError
from ..strategies.peft import merge_adapter
from .runs import copy_run_files, derived_run, finish_derived, load_single_task_run
from .scores import accuracy, nll

logger = logging.getLogger("hftransfer")

DEFAULT_ALPHAS = tuple(i / 10 for i in range(11))
"""WiSE-FT's grid: α = 0, 0.1, ..., 1."""
SOUP_KINDS = ("greedy", "uniform")

# What a derived run takes over from the metrics of the run it starts from: what the data and
# the source were, never what was measured on the old weights.
KEPT_METRICS = ("base_model", "base_model_license", "task", "task_types", "labels", "data", "init", "baseline")
# The model files of a run: written anew (the fused weights), never copied.
MODEL_FILE_NAMES = {"config.json", "adapter_config.json", rundir.RECIPE, rundir.WEIGHT_TRANSFER}
MODEL_FILE_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin")


@dataclass
class Member:
    """A finished run as a plain model: its loaded run (model merged, if it was an adapter),
    its state (float tensors on the CPU) and what it was."""

    path: Path
    run: LoadedRun
    state: dict[str, torch.Tensor]
    adapter: bool
    strategy: str


# --------------------------------------------------------------------------- arguments


def parse_alphas(text: str | list[float] | tuple[float, ...], what: str = "--alphas") -> list[float]:
    """The α grid from ``0,0.5,1`` (or a list): numbers in [0, 1], no repeats, sorted."""
    items = text.split(",") if isinstance(text, str) else list(text)
    values = []
    for item in items:
        try:
            value = float(item.strip() if isinstance(item, str) else item)
        except (TypeError, ValueError):
            raise HFTransferError(f"{what}: {item!r} is not a number; give a comma-separated list "
                                  "of values in [0, 1], e.g. 0,0.25,0.5,0.75,1") from None
        values.append(check_alpha(value, what))
    if not values:
        raise HFTransferError(f"{what} is empty; give values in [0, 1], e.g. 0,0.5,1")
    if len(set(values)) != len(values):
        raise HFTransferError(f"{what} {text!r} repeats a value; give each α once")
    return sorted(values)


def check_alpha(value: Any, what: str = "--alpha") -> float:
    """α as a float in [0, 1] (0: the start, 1: the fine-tuned run)."""
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise HFTransferError(f"{what} {value!r} is not a number in [0, 1]") from None
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise HFTransferError(f"{what} {value!r} is outside [0, 1]: 0 is the start (probe), 1 the "
                              "fine-tuned run; WiSE-FT does not extrapolate")
    return alpha


def _check_output(output_dir: str | Path, inputs: list[Path], what: str) -> None:
    """The output must be none of the inputs, nor inside one, nor hold one: inputs stay untouched
    (even with --overwrite)."""
    out = Path(output_dir).resolve()
    for path in inputs:
        src = path.resolve()
        if out == src or src in out.parents or out in src.parents:
            raise HFTransferError(
                f"--output-dir {str(output_dir)!r} overlaps the input run {str(path)!r}; {what} never "
                "writes into its inputs: choose a new directory")


# --------------------------------------------------------------------------- loading runs


def _load_member(path: str | Path, what: str) -> Member:
    """A finished single-task run as a plain model (an adapter merged into its base)."""
    return _member_of(load_single_task_run(path, what), Path(path), what)


def _member_of(run: LoadedRun, path: Path, what: str) -> Member:
    """A loaded run as a plain model: an adapter is merged into its base (the kit's merge, as
    ``push --merge-adapter`` does)."""
    strategy = run.recipe.strategy_name
    adapter = hasattr(run.model, "peft_config")
    if adapter:
        run = dataclasses.replace(run, model=merge_adapter(
            run.model, f"{what} {str(path)!r}",
            "weight-space fusion needs an adapter that merges into the base weights (lora, ia3, ...)"))
    if "validation" not in run.metrics:
        raise HFTransferError(f"{what} {str(path)!r} has no validation split; weight-space fusion "
                              "chooses on validation: give the recipe a data.validation")
    return Member(path, run, _state(run.model), adapter, strategy)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


def _source(run: LoadedRun) -> str:
    return str(run.metrics.get("base_model") or run.recipe.model.name_or_path)


def _labels(run: LoadedRun) -> list[str]:
    labels = run.metrics.get("labels")
    if isinstance(labels, list):
        return labels
    id2label = run.model.config.id2label
    return [id2label[i] for i in sorted(id2label)]


def _check_same(a: Member, b: Member, what: str, same_source: bool = True) -> None:
    """Same label list, source model (optional), task, architecture and tensor shapes."""
    a_name, b_name = str(a.path), str(b.path)
    if a.run.recipe.task_type != b.run.recipe.task_type:
        raise HFTransferError(f"{what}: {a_name!r} is a {a.run.recipe.task_type} run and {b_name!r} a "
                              f"{b.run.recipe.task_type} run; their weights do not mix")
    if _labels(a.run) != _labels(b.run):
        raise HFTransferError(
            f"{what}: {a_name!r} has labels {_labels(a.run)} and {b_name!r} has {_labels(b.run)}; "
            "their heads mean different things: fuse runs trained on the same label set")
    if same_source and _source(a.run) != _source(b.run):
        raise HFTransferError(
            f"{what}: {a_name!r} was trained from {_source(a.run)!r} and {b_name!r} from "
            f"{_source(b.run)!r}; weight-space fusion joins runs of one source model")
    a_arch = (a.run.model.config.model_type, type(a.run.model).__name__)
    b_arch = (b.run.model.config.model_type, type(b.run.model).__name__)
    if a_arch != b_arch:
        raise HFTransferError(f"{what}: {a_name!r} is a {a_arch[1]} and {b_name!r} a {b_arch[1]}; "
                              "weights of different architectures do not mix")
    hint = ""
    if "feature-extraction" in (a.strategy, b.strategy):
        hint = (" (a feature-extraction run with mean pooling adds an averaging encoder layer: "
                "train the probe with strategy.pooling=cls)")
    for name in sorted(set(a.state) | set(b.state), key=_order(a.state, b.state)):
        if name not in a.state or name not in b.state:
            owner, other = (a_name, b_name) if name in a.state else (b_name, a_name)
            raise HFTransferError(f"{what}: tensor {name!r} of {owner!r} is missing from {other!r}; "
                                  f"the models have different shapes{hint}")
        if a.state[name].shape != b.state[name].shape:
            raise HFTransferError(
                f"{what}: tensor {name!r} has shape {list(a.state[name].shape)} in {a_name!r} and "
                f"{list(b.state[name].shape)} in {b_name!r}; the models have different shapes{hint}")
        if not a.state[name].is_floating_point() and not torch.equal(a.state[name], b.state[name]):
            raise HFTransferError(f"{what}: the integer tensor {name!r} differs between {a_name!r} and "
                                  f"{b_name!r}; it cannot be averaged")


def _scored_on(run: LoadedRun) -> dict[str, Any]:
    """What decides a run's validation and test examples (not its training budget): runs that
    agree on it are scored on the same examples."""
    data = run.recipe.data
    keys = ("validation", "test", "dataset", "dataset_config", "validation_split", "test_split", "format")
    out = {key: getattr(data, key) for key in keys}
    if data.validation is None and (data.dataset is None or data.validation_split is None):
        # Validation carved from train: the same rows only with the same file and seed.
        out.update(train=data.train, train_split=data.train_split, validation_fraction=data.validation_fraction,
                   seed=data.seed if data.seed is not None else run.recipe.train.get("seed", 0))
    return out


def _check_same_data(a: Member, b: Member, what: str) -> None:
    mine, theirs = _scored_on(a.run), _scored_on(b.run)
    for key in [*mine, *(k for k in theirs if k not in mine)]:  # validation first
        if mine.get(key) != theirs.get(key):
            raise HFTransferError(
                f"{what}: {str(a.path)!r} and {str(b.path)!r} are scored on different examples (data.{key}: "
                f"{mine.get(key)!r} vs {theirs.get(key)!r}); a soup is chosen on one validation split: "
                "combine runs of the same data")


def _order(*states: dict[str, torch.Tensor]):
    """Tensor names in model order (the first state's, then the others'): the first difference
    an error names is the first one in the network."""
    rank: dict[str, int] = {}
    for state in states:
        for name in state:
            rank.setdefault(name, len(rank))
    return rank.__getitem__


# --------------------------------------------------------------------------- weights and scores


def _mix(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Σ wᵢ·θᵢ per float tensor (computed in float32 or wider, stored in the tensor's dtype);
    other tensors (integer buffers) are equal in all states and kept."""
    out = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            out[name] = first.clone()
            continue
        wide = torch.promote_types(first.dtype, torch.float32)
        total = sum(w * s[name].to(wide) for w, s in zip(weights, states) if w != 0.0)
        out[name] = (total if torch.is_tensor(total) else torch.zeros_like(first, dtype=wide)).to(first.dtype)
    return out


def _interpolated(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float):
    """(1 − α)·start + α·end; exactly ``start`` at 0 and ``end`` at 1."""
    if alpha == 0.0:
        return {k: v.clone() for k, v in start.items()}
    if alpha == 1.0:
        return {k: v.clone() for k, v in end.items()}
    return _mix([start, end], [1.0 - alpha, alpha])


def _average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return _mix(states, [1.0 / len(states)] * len(states))


def _validation(run: LoadedRun, state: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Validation accuracy and NLL of ``run``'s model, with ``state`` loaded into it first."""
    if state is not None:
        run.model.load_state_dict(state)
    out = split_outputs(run, "validation")
    return {"accuracy": accuracy(out.logits, out.labels), "nll": nll(out.logits, out.labels)}


def _final_metrics(run: LoadedRun) -> dict[str, Any]:
    """The saved model's task metrics: validation, and test (read once, here) when the recipe
    has one."""
    metrics = {"validation": evaluate_loaded(run, "validation")}
    if "test" in run.metrics:
        metrics["test"] = evaluate_loaded(run, "test")
    return metrics


# --------------------------------------------------------------------------- writing the run


def _derived_recipe(member: Member, suffix: str) -> str:
    """The recipe of the run the fused model came from (it reproduces that run); an adapter run's
    recipe becomes strategy ``full``, as the merged weights are a plain model."""
    recipe = member.run.recipe.to_dict()
    if member.adapter:
        recipe["strategy"] = {"name": "full"}
    if recipe.get("name"):
        recipe["name"] = f"{recipe['name']}-{suffix}"
    return yaml.safe_dump(recipe, sort_keys=False)


def _base_metrics(member: Member, started: float, ingredients: list[Member], model: torch.nn.Module,
                  strategy: str) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    trained = [m.run.metrics.get("train", {}) for m in ingredients]
    return {
        "strategy": strategy,
        **{k: member.run.metrics[k] for k in KEPT_METRICS if k in member.run.metrics},
        "params": {"trainable": int(member.run.metrics.get("params", {}).get("trainable", total)), "total": total},
        "train": {
            # The training that went into the ingredients, and this process's fusion (no step).
            "runtime_s": round(sum(float(t.get("runtime_s", 0.0) or 0.0) for t in trained), 3),
            "steps": int(sum(int(t.get("steps", 0) or 0) for t in trained)),
            "fusion_s": round(time.perf_counter() - started, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "world_size": 1,
        },
    }


def _write(member: Member, output_dir: str | Path, overwrite: bool, kind: str, suffix: str,
           metrics: dict[str, Any]) -> Path:
    """The fused model (``member.run.model``, holding the chosen weights), the processor files of
    ``member`` and its recipe, into a new run directory."""
    with derived_run(output_dir, overwrite, kind) as held:
        skip = {item.name for item in member.path.iterdir()
                if item.name in MODEL_FILE_NAMES or item.name.endswith(MODEL_FILE_SUFFIXES)}
        copy_run_files(member.path, held.path, skip=skip)
        args = member.path / rundir.TRAINING_ARGS
        if args.is_file() and not args.is_symlink():  # how the run (the recipe below) trained: for the card
            (held.path / rundir.LOGS).mkdir(exist_ok=True)
            shutil.copy2(args, held.path / rundir.TRAINING_ARGS)
        model = member.run.model
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(held.path)  # safetensors
        (held.path / rundir.RECIPE).write_text(_derived_recipe(member, suffix), encoding="utf-8")
        return finish_derived(held, output_dir, metrics, overwrite)


# --------------------------------------------------------------------------- interpolate


def interpolate(run: str | Path, start: str | Path | None = None, *, output_dir: str | Path,
                alphas: str | list[float] | None = None, alpha: float | None = None,
                overwrite: bool = False) -> RunResult:
    """WiSE-FT: the fine-tuned ``run`` interpolated with ``start`` (the α = 0 end: a linear
    probe of the same source, e.g. a ``feature-extraction`` run with ``pooling: cls``) over the
    α grid; the α with the best validation accuracy (ties: the larger α) is saved. ``alpha``
    fixes one α instead. An adapter ``run`` may go without ``start``: the α = 0 end is then its
    base model with its own head, so α scales the adapter's weight change."""
    if alphas is not None and alpha is not None:
        raise HFTransferError("give --alphas (a grid to choose from) or --alpha (one value), not both")
    grid = [check_alpha(alpha)] if alpha is not None else parse_alphas(alphas if alphas is not None else DEFAULT_ALPHAS)
    inputs = [Path(run)] + ([Path(start)] if start is not None else [])
    _check_output(output_dir, inputs, "interpolate")
    rundir.check_output_dir(Path(output_dir), overwrite=overwrite, resume=False)
    started = time.perf_counter()

    raw = load_single_task_run(run, "interpolate RUN")
    adapter = hasattr(raw.model, "peft_config")
    if start is None and not adapter:
        raise HFTransferError(
            f"interpolate: {str(run)!r} is a `{raw.recipe.strategy_name}` run, so the α = 0 end must be a "
            "probe of the same source: train one with the same recipe and \"strategy={name: partial-freeze, "
            "freeze_layers: N}\" (N = the encoder's depth: its own head on the frozen encoder) or "
            "strategy.name=feature-extraction strategy.pooling=cls, then pass it as --start")
    base_state = None
    if adapter and start is None:
        # The base with the run's head: PEFT's unload drops the adapter and keeps the trained
        # head (modules_to_save), i.e. the adapter at scale 0.
        base_state = _state(copy.deepcopy(raw.model).unload())
    end = _member_of(raw, Path(run), "interpolate RUN")
    if start is not None:
        begin = _load_member(start, "interpolate --start")
        _check_same(begin, end, "interpolate")
        start_state = begin.state
    else:
        start_state = base_state
    shown_start = str(start) if start is not None else None

    sweep, best = [], None
    for a in grid:
        scores = _validation(end.run, _interpolated(start_state, end.state, a))
        sweep.append({"alpha": a, "validation": scores})
        logger.info("interpolate: α=%g validation accuracy %.4f, nll %.4f", a, scores["accuracy"], scores["nll"])
        if best is None or scores["accuracy"] >= best["validation"]["accuracy"]:  # ties: larger α
            best = sweep[-1]
    chosen = best["alpha"]
    end.run.model.load_state_dict(_interpolated(start_state, end.state, chosen))

    strategy = "full" if adapter else end.strategy
    metrics = _base_metrics(end, started, [end] + ([begin] if start is not None else []), end.run.model, strategy)
    metrics.update(_final_metrics(end.run))
    metrics["interpolation"] = {
        "method": "wise-ft",
        "start": shown_start,
        "start_strategy": begin.strategy if start is not None else None,
        "start_weights": "run" if start is not None else "the base model with the run's head (adapter scale 0)",
        "end": str(run),
        "end_strategy": end.strategy,
        "adapter_merged": adapter,
        # The recipe saved with the model says strategy full (a plain model); this is the
        # strategy the fine-tuned end trained with.
        "end_recipe_strategy": raw.recipe.strategy,
        "alphas": sweep,
        "chosen_alpha": chosen,
        "selection": "validation accuracy; ties go to the larger α" if len(grid) > 1 else "given (--alpha)",
    }
    out = _write(end, output_dir, overwrite, "interpolate", "wise-ft", metrics)
    return RunResult(out, rundir.read_metrics(out))


# --------------------------------------------------------------------------- soup


def soup(runs: list[str | Path], *, output_dir: str | Path, kind: str = "greedy",
         overwrite: bool = False) -> RunResult:
    """A model soup of ``runs`` (≥ 2 runs fine-tuned from one source, same labels and shapes;
    adapter runs are merged first). Both soups are scored on validation: ``uniform`` averages
    every run; ``greedy`` starts from the best run and adds the next best only if validation
    accuracy does not drop. ``kind`` is the one saved."""
    if kind not in SOUP_KINDS:
        raise HFTransferError(f"soup kind must be greedy or uniform, got {kind!r}")
    paths = [Path(r) for r in runs]
    if len(paths) < 2:
        raise HFTransferError(f"soup takes at least 2 runs, got {len(paths)}")
    _check_output(output_dir, paths, "soup")
    rundir.check_output_dir(Path(output_dir), overwrite=overwrite, resume=False)
    started = time.perf_counter()

    members = [_load_member(p, "soup member") for p in paths]
    for other in members[1:]:
        _check_same(members[0], other, "soup")
        _check_same_data(members[0], other, "soup")
    judge = members[0].run  # one model object scores every candidate
    scored = [(m, _validation(judge, m.state)) for m in members]
    ranked = sorted(scored, key=lambda pair: -pair[1]["accuracy"])  # stable: ties keep the given order

    uniform = _validation(judge, _average([m.state for m in members]))
    used, current = [ranked[0][0]], ranked[0][1]
    for member, _ in ranked[1:]:
        candidate = _validation(judge, _average([m.state for m in used + [member]]))
        logger.info("soup: with %s validation accuracy %.4f (now %.4f)", member.path,
                    candidate["accuracy"], current["accuracy"])
        if candidate["accuracy"] >= current["accuracy"]:
            used, current = used + [member], candidate

    saved = used if kind == "greedy" else members
    judge.model.load_state_dict(_average([m.state for m in saved]))
    best = ranked[0][0]
    adapters = any(m.adapter for m in members)
    carrier = dataclasses.replace(best, run=dataclasses.replace(best.run, model=judge.model))
    strategy = "full" if best.adapter else best.strategy
    metrics = _base_metrics(carrier, started, members, judge.model, strategy)
    metrics.update(_final_metrics(carrier.run))
    metrics["soup"] = {
        "kind": kind,
        "members": [{"run": str(m.path), "strategy": m.strategy, "validation_accuracy": s["accuracy"]}
                    for m, s in scored],
        "used": [str(m.path) for m in saved],
        "uniform": {"validation": uniform, "used": [str(m.path) for m in members]},
        "greedy": {"validation": current, "used": [str(m.path) for m in used]},
        "adapters_merged": adapters,
        "recipe_from": str(best.path),
        "recipe_strategy": best.run.recipe.strategy,
    }
    out = _write(carrier, output_dir, overwrite, "soup", f"{kind}-soup", metrics)
    return RunResult(out, rundir.read_metrics(out))

