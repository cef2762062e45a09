"""Model cards: Hub metadata (base model, library, pipeline tag, license, model-index) and a body
that records how the model was transferred, what it scored and how to reproduce it.

A card is rendered from the run's own files only — ``recipe.yaml``, ``metrics.json``,
``logs/training_args.json`` (the effective training arguments the engine recorded) and the
adapter's ``adapter_config.json`` — so ``hftransfer card RUN`` gives the same bytes every time,
and an old run keeps its card when a default of the kit changes. Every run writes its cards
(``RUN/README.md``, and ``RUN/tasks/NAME/README.md`` for a multi-task run);
``hftransfer push --merge-adapter`` renders the card of the merged model.

``metrics.json`` may carry a ``baseline`` entry (for example the ``scratch`` run of the same
recipe, filled by whatever compared them)::

    "baseline": {"strategy": "scratch", "validation": {"accuracy": 0.5}, "test": {"accuracy": 0.5}}

Its numbers are shown beside the run's in the results table (not in the model-index, which holds
this model's results only). Without it the card shows no baseline: numbers are never invented.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from . import rundir
from .errors import HFTransferError
from .models import is_hub_id
from .recipe import Recipe, load_recipe
from .registry import get_strategy, get_task

# Training arguments worth a row in the card, in display order (when known for the run).
HYPERPARAMETERS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "seed", "warmup_steps", "warmup_ratio", "weight_decay",
    "lr_scheduler_type", "optim", "max_grad_norm", "label_smoothing_factor", "fp16", "bf16",
)
# Metric entries that describe the evaluation call rather than the model's quality.
_NOT_METRICS = ("loss", "epoch", "runtime", "samples_per_second", "steps_per_second")


@dataclass
class RunFiles:
    """What a card is rendered from: a run's own files."""

    recipe: Recipe
    metrics: dict[str, Any]
    training_args: dict[str, Any] | None
    """The effective training arguments (None for runs from before the kit recorded them)."""
    adapter: dict[str, Any] | None
    """The adapter's ``adapter_config.json`` (None for a run that saved a whole model)."""
    pipeline: str | None = None
    """A staged run's whole recipe (``pipeline.yaml``), which reproduces it (None otherwise)."""


def read_run(run_dir: Path, model_dir: Path | None = None, metrics: dict[str, Any] | None = None) -> RunFiles:
    """The files a card needs, from ``run_dir`` (the adapter's from ``model_dir``, a task's
    folder of a multi-task run, when given). ``metrics``: the content of metrics.json while the
    engine stages a run (it writes that file last, as the mark of a finished run)."""
    args_file = run_dir / rundir.TRAINING_ARGS
    adapter_file = (model_dir or run_dir) / "adapter_config.json"
    metrics = metrics if metrics is not None else rundir.read_metrics(run_dir)
    return RunFiles(recipe=load_recipe(run_dir / rundir.RECIPE), metrics=metrics,
                    training_args=_json(args_file) if args_file.is_file() else None,
                    adapter=_json(adapter_file) if adapter_file.is_file() else None,
                    pipeline=(run_dir / rundir.PIPELINE).read_text(encoding="utf-8")
                    if (run_dir / rundir.PIPELINE).is_file() else None)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    return data if isinstance(data, dict) else {}


def _metric_names(*tables: dict[str, Any]) -> list[str]:
    return sorted({k for table in tables for k, v in table.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _NOT_METRICS})


def _fmt(value: Any) -> str:
    """A metric for a table cell: four decimals."""
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _fmt_setting(value: Any) -> str:
    """A setting as the user would write it: 5e-05, 3, true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _inline(value: Any) -> str:
    """A value as compact one-line YAML (flow style), for table cells."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _hyperparameters(run: RunFiles) -> list[tuple[str, str]]:
    """The training arguments worth a row, as the run recorded them."""
    recorded = run.training_args is not None
    values = run.training_args if recorded else dict(run.recipe.train)
    rows = [(key, _fmt_setting(values[key])) for key in HYPERPARAMETERS if key in values]
    warmup = values.get("warmup_steps")
    if isinstance(warmup, float) and 0 < warmup < 1:  # transformers reads it as a fraction of the steps
        rows = [(k, f"{v} (a fraction of the training steps)" if k == "warmup_steps" else v) for k, v in rows]
    world = int(run.metrics.get("train", {}).get("world_size", 1) or 1)
    batch = values.get("per_device_train_batch_size")
    if isinstance(batch, int):
        accum = int(values.get("gradient_accumulation_steps", 1) or 1)
        rows.append(("effective batch size",
                     f"{batch * accum * world} ({batch} × {accum} accumulation × {world} process(es))"))
    data_seed = run.recipe.data.seed if run.recipe.data.seed is not None else values.get("seed")
    if data_seed is not None:
        rows.append(("data seed (splits, budgets)", _fmt_setting(data_seed)))
    options = {k: v for k, v in run.recipe.strategy.items() if k != "name"}
    rows.append((f"strategy `{run.recipe.strategy_name}` options", f"`{_inline(options)}`" if options else "defaults"))
    if not recorded:
        rows.append(("(recorded)", "the recipe's own `train:` settings; this run predates the record "
                                   "of the effective arguments"))
    return rows


def _what_trained(run: RunFiles, description: str) -> str:
    """One sentence on which parameters moved: the strategy, and the adapter as it was saved."""
    if not run.adapter:
        return description
    shown = {k: run.adapter[k] for k in ("r", "lora_alpha", "lora_dropout", "target_modules")
             if run.adapter.get(k) is not None}
    if isinstance(shown.get("target_modules"), list):
        shown["target_modules"] = sorted(shown["target_modules"])
    text = f"{description}; {run.adapter.get('peft_type', 'adapter')}" + (f" `{_inline(shown)}`" if shown else "")
    return text


def render_card(run: RunFiles, *, merged: bool = False, whole_recipe: Recipe | None = None,
                companions: list[tuple[str, str]] | None = None) -> ModelCard:
    """The card of a run (or of one task of a multi-task run, given as its own view of the
    files, the ``whole_recipe`` that reproduces it and its ``companions``: the other tasks'
    names and types). ``merged=True`` renders the card of an adapter run whose adapter was
    merged into the base weights (``hftransfer push --merge-adapter``): a plain transformers
    model."""
    recipe, metrics = run.recipe, run.metrics
    task_cls = get_task(recipe.task_type)
    strategy_cls = get_strategy(recipe.strategy_name)
    adapter = run.adapter is not None and not merged
    splits = [s for s in ("validation", "test") if isinstance(metrics.get(s), dict)]
    metric_names = _metric_names(*(metrics[s] for s in splits))
    model_name = recipe.name or "hftransfer-run"
    base_model = str(metrics.get("base_model") or recipe.model.name_or_path)
    dataset = recipe.data.dataset if is_hub_id(recipe.data.dataset) else None
    results = _eval_results(task_cls.pipeline_tag, recipe.data, {s: metrics[s] for s in splits}, metric_names)
    data = ModelCardData(
        base_model=base_model if is_hub_id(base_model) else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=task_cls.pipeline_tag,
        tags=["hftransfer", f"strategy-{recipe.strategy_name}", recipe.task_type]
        + (["merged-adapter"] if merged else [])
        + (["wise-ft"] if isinstance(metrics.get("interpolation"), dict) else [])
        + (["model-soup"] if isinstance(metrics.get("soup"), dict) else []),
        datasets=[dataset] if dataset else None,
        model_name=model_name,
        eval_results=results or None,
        **_license(metrics),
    )

    # Results: this run's splits, then the baseline's when metrics.json carries one.
    baseline = metrics.get("baseline") if isinstance(metrics.get("baseline"), dict) else None
    baseline_splits = [s for s in ("validation", "test") if baseline and isinstance(baseline.get(s), dict)]
    result_rows = [(f"{split}", [_fmt(metrics[split].get(m)) for m in metric_names]) for split in splits]
    before = metrics.get("before") if isinstance(metrics.get("before"), dict) else {}  # the model as built
    result_rows += [(f"{split} (before training)", [_fmt(before[split].get(m)) for m in metric_names])
                    for split in splits if isinstance(before.get(split), dict)]
    if baseline_splits:
        label = f"`{baseline.get('strategy', 'baseline')}` baseline"
        result_rows += [(f"{split} ({label})", [_fmt(baseline[split].get(m)) for m in metric_names])
                        for split in baseline_splits]

    params = metrics.get("params", {})
    total = params.get("total", 0) or 1
    budget = []
    if recipe.data.samples_per_label:
        budget.append(f"{recipe.data.samples_per_label} per label")
    if recipe.data.max_train_samples:
        budget.append(f"at most {recipe.data.max_train_samples}")
    counts = metrics.get("data", {})
    if recipe.data.dataset:
        source_data = f"Hub dataset `{recipe.data.dataset}`" + (
            f" (config `{recipe.data.dataset_config}`)" if recipe.data.dataset_config else "")
    else:
        source_data = "local files: " + ", ".join(
            f"{s} `{Path(p).name}`" for s in ("train", "validation", "test")
            if (p := getattr(recipe.data, s)))
    transfer = metrics.get("transfer") if isinstance(metrics.get("transfer"), dict) else {}
    train = metrics.get("train", {})
    template = resources.files("hftransfer").joinpath("templates/model_card.md").read_text("utf-8")
    return ModelCard.from_template(
        data, template_str=template,
        name=model_name,
        base_model=base_model, task=recipe.task_type, strategy=recipe.strategy_name,
        pipeline_tag=task_cls.pipeline_tag, auto_class=task_cls.auto_class_name,
        processor_class=task_cls.processor_auto_class, processor_arg=task_cls.pipeline_processor_arg,
        strategy_description=strategy_cls.description,
        what_trained=_what_trained(run, strategy_cls.description),
        adapter=adapter, merged=merged,
        trainable=f"{params.get('trainable', 0):,}", total=f"{params.get('total', 0):,}",
        trainable_pct=f"{100 * params.get('trainable', 0) / total:.2f}%",
        source_data=source_data,
        n_train=counts.get("train", "?"), n_validation=counts.get("validation", "?"),
        n_test=counts.get("test", "?"),
        budget=", ".join(budget) or "all training examples",
        labels=", ".join(f"`{label}`" for label in metrics.get("labels", [])),
        transfer=[(k, _fmt_setting(v)) for k, v in transfer.items() if not isinstance(v, (dict, list))]
        + _init_rows(metrics.get("init")) + _fusion_rows(metrics),
        metric_names=metric_names, result_rows=result_rows, has_baseline=bool(baseline_splits),
        has_test="test" in splits,
        calibration=_calibration(metrics.get("calibration")),
        hyperparameters=_hyperparameters(run),
        runtime=train.get("runtime_s", "?"), samples_per_second=train.get("samples_per_second", "?"),
        peak_rss=train.get("peak_rss_mb", "?"), world_size=train.get("world_size", 1),
        recipe=(run.pipeline or (whole_recipe or recipe).to_yaml()).strip(),
        recipe_file=rundir.PIPELINE if run.pipeline else rundir.RECIPE,
        stages=_stage_rows(metrics.get("stages")),
        forgetting=_forgetting_rows(metrics.get("forgetting")),
        license=data.license,
        companions=companions or [],
        fused_with=transfer.get("source") if recipe.strategy_name == "fusion" else None,
        combine=transfer.get("combine"),
    )


# File names that say which split a file is, not what the data is (conll2003/train.txt is conll2003).
_SPLIT_NAMES = ("train", "training", "dev", "valid", "validation", "val", "test", "data")


def data_name(data: Any) -> str:
    """What the model-index calls a run's data: the Hub dataset id (or a local dataset's folder
    name), else the name of the training data's file or folder; the folder holding a file named
    after its split (``sst2/train.csv``: ``sst2``) or a glob (``reviews/*.csv``: ``reviews``)."""
    if data.dataset:
        return data.dataset if is_hub_id(data.dataset) else Path(data.dataset.rstrip("/\\")).name or data.dataset
    entry = str(data.train or data.validation or data.test or "")
    parts = Path(entry).parts
    globbed = next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")), None)
    if globbed is not None:
        return Path(*parts[:globbed]).name if globbed else "local data"
    path = Path(entry)
    key = (path.stem if path.suffix else path.name).lower().replace("-", "_").split("_")[0]
    if key in _SPLIT_NAMES and path.parent.name not in ("", ".", ".."):
        return path.parent.name
    return path.name if path.name not in ("", ".", "..") else "local data"


def _eval_results(pipeline_tag: str, data: Any, by_split: dict[str, dict[str, Any]], metric_names: list[str],
                  task_name: str | None = None) -> list[EvalResult]:
    """The model-index entries of one task: each split's metrics on the task's data."""
    dataset = data.dataset if is_hub_id(data.dataset) else None
    name = data_name(data)
    prefix = f"{task_name} " if task_name else ""
    return [
        EvalResult(task_type=pipeline_tag, task_name=task_name, dataset_type=name, dataset_name=name,
                   dataset_config=data.dataset_config if dataset else None,
                   dataset_split=split, metric_type=metric, metric_name=f"{prefix}{split} {metric}",
                   metric_value=float(values[metric]))
        for split, values in by_split.items() for metric in metric_names
        if isinstance(values.get(metric), (int, float))
    ]


def _stage_rows(stages: Any) -> list[list[str]]:
    """A staged run's stages, in order: what each trained, from what, and its own results."""
    if not isinstance(stages, list):
        return []
    return [[f"`{s.get('name')}`", str(s.get("task")), f"`{s.get('strategy')}`", f"`{s.get('from')}`",
             str(s.get("head")), str(s.get("train_examples")),
             f"{s.get('metric')} {_fmt(s.get('validation'))}", _fmt(s.get("test"))]
            for s in stages if isinstance(s, dict)]


def _forgetting_rows(forgetting: Any) -> list[list[str]]:
    """Each earlier stage's validation metric before and after the later stages."""
    if not isinstance(forgetting, dict):
        return []
    return [[f"`{name}`", str(f.get("metric")), _fmt(f.get("before")),
             _fmt(f.get("after")) if "skipped" not in f else f"not measured: {f['skipped']}",
             _fmt(f.get("drop"))]
            for name, f in forgetting.items() if isinstance(f, dict)]


def _init_rows(init: Any) -> list[tuple[str, str]]:
    """``model.init``: how the network differs from the source and how it was filled."""
    if not isinstance(init, dict):
        return []
    changed = init.get("changed") or {}
    rows = [("network", ", ".join(f"`{k}: {_fmt_setting(v)}`" for k, v in changed.items())
             or "the source's architecture")]
    if init.get("weights") == "random":
        return rows + [("weights", "random (a no-transfer twin of the transferred network)")]
    if init.get("layers") is not None:
        rows.append(("layers from the source", ", ".join(str(i) for i in init["layers"])))
    tensors = init.get("tensors") or {}
    rows.append(("tensors filled from the source", ", ".join(f"{n} {how}" for how, n in tensors.items())
                 + f" (per tensor: `{rundir.WEIGHT_TRANSFER}`)"))
    return rows


def _calibration(section: Any) -> dict[str, Any] | None:
    """``hftransfer calibrate``: the temperature, the layer it went into, and accuracy / NLL / ECE
    before and after, per split."""
    if not isinstance(section, dict) or section.get("temperature") is None:
        return None
    temperature = f"{float(section['temperature']):.4f}"
    rows = []
    for split in ("validation", "test"):
        scores = section.get(split)
        if not isinstance(scores, dict):
            continue
        for when, t in (("before", "1"), ("after", temperature)):
            values = scores.get(when) or {}
            rows.append((split, when, t, *(_fmt(values.get(k)) for k in ("accuracy", "nll", "ece"))))
    return {"temperature": temperature, "layer": str(section.get("layer", "")),
            "bins": section.get("bins", 15), "rows": rows}


def _fusion_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """A model made from finished runs' weights (``interpolate``, ``soup``): what it is and how
    the recipe below relates to it."""
    wise, soup = metrics.get("interpolation"), metrics.get("soup")
    if isinstance(wise, dict):
        start = f"`{wise['start']}` ({wise.get('start_strategy')})" if wise.get("start") \
            else "the adapter run's base model with its head (adapter scale 0)"
        sweep = ", ".join(f"{_fmt_setting(row['alpha'])}: {_fmt(row['validation'].get('accuracy'))}"
                          for row in wise.get("alphas", []))
        return [
            ("weight-space fusion", f"WiSE-FT interpolation (1 − α)·start + α·fine-tuned, α = "
                                    f"{_fmt_setting(wise.get('chosen_alpha'))} chosen on validation accuracy"
             + (" (the adapter merged into the base first)" if wise.get("adapter_merged") else "")),
            ("α = 0 (start)", start),
            ("α = 1 (fine-tuned)", f"`{wise.get('end')}` ({wise.get('end_strategy')})"),
            ("validation accuracy by α", sweep),
            ("reproduce", (f"train the recipe below{_as_trained(wise.get('end_recipe_strategy'))} "
                           "(the fine-tuned end), then `hftransfer interpolate`")),
        ]
    if isinstance(soup, dict):
        used = soup.get("used") or []
        members = soup.get("members") or []
        return [
            ("weight-space fusion", f"{soup.get('kind')} model soup: the average of {len(used)} of "
                                    f"{len(members)} runs fine-tuned from the same source"
             + (" (adapter runs among them merged into their base first)" if soup.get("adapters_merged") else "")),
            ("soup ingredients", ", ".join(f"`{run}`" for run in used)),
            ("validation accuracy (uniform / greedy soup)",
             f"{_fmt(_soup_accuracy(soup, 'uniform'))} / {_fmt(_soup_accuracy(soup, 'greedy'))}"),
            ("reproduce", (f"train the recipe below{_as_trained(soup.get('recipe_strategy'))} "
                           "(the best ingredient) and the others, then `hftransfer soup`")),
        ]
    return []


def _soup_accuracy(soup: dict[str, Any], kind: str) -> Any:
    return ((soup.get(kind) or {}).get("validation") or {}).get("accuracy")


def _as_trained(strategy: Any) -> str:
    """An adapter run's recipe is saved with strategy full (the merged model is a plain one):
    how to train the run it came from."""
    if not isinstance(strategy, dict) or strategy.get("name", "full") == "full":
        return ""
    return f" with `strategy: {_inline(strategy)}`"


def _license(metrics: dict[str, Any]) -> dict[str, str]:
    """The source model's license as the run recorded it (its README's front matter)."""
    recorded = metrics.get("base_model_license")
    if not isinstance(recorded, dict):
        return {}
    return {k: str(v) for k, v in recorded.items() if k in ("license", "license_name", "license_link")}


def card_of(run_dir: Path, task: str | None = None, metrics: dict[str, Any] | None = None) -> ModelCard:
    """The card of a run, or of one task of a multi-task run, rendered from the run's files."""
    try:
        return _card_of(run_dir, task, metrics)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a hand-edited metrics.json
        raise HFTransferError(
            f"the files of {str(run_dir)!r} do not have the shape the kit writes ({type(exc).__name__}: "
            f"{str(exc)[:120]}); restore metrics.json or retrain the run") from None


def _card_of(run_dir: Path, task: str | None, metrics: dict[str, Any] | None) -> ModelCard:
    run = read_run(run_dir, metrics=metrics)
    if task is None:
        return render_multitask_card(run) if run.recipe.is_multitask else render_card(run)
    folder = run_dir / rundir.TASKS / task
    companions = [(other, entry.task_type) for other, entry in run.recipe.members.items() if other != task]
    view = replace(read_run(run_dir, folder, run.metrics), recipe=task_view(run.recipe, task),
                   metrics=task_metrics_view(run.metrics, task))
    return render_card(view, whole_recipe=run.recipe, companions=companions)


def write_cards(run_dir: Path, metrics: dict[str, Any] | None = None) -> list[Path]:
    """Render a run's cards from its files: ``README.md``, and for a multi-task run every
    ``tasks/NAME/README.md``. Returns their paths. (``metrics``: see :func:`read_run`.)"""
    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / rundir.RECIPE)
    paths = [run_dir / "README.md"] + [run_dir / rundir.TASKS / name / "README.md" for name in recipe.members]
    cards = [card_of(run_dir, task, metrics) for task in [None, *recipe.members]]
    for path, card in zip(paths, cards):
        save(card, path)
    return paths


def save(card: ModelCard, path: Path) -> Path:
    """Write a card as a whole (never through a link at ``path``), and never one that holds
    something that looks like an access token (a hand-edited metrics.json could carry one)."""
    text = str(card)
    if rundir.HF_TOKEN.search(text):
        raise HFTransferError(
            f"the card for {str(path.parent)!r} would hold something that looks like a Hugging Face "
            "access token (from metrics.json or the recipe); remove it there")
    rundir.write_text(path, text)
    return path


def write_merged_card(run_dir: Path, out_dir: Path) -> Path:
    """The card of ``run_dir``'s adapter merged into its base, written into ``out_dir``."""
    return save(render_card(read_run(Path(run_dir)), merged=True), Path(out_dir) / "README.md")


def task_view(recipe: Recipe, name: str) -> Recipe:
    """One task of a multi-task recipe as a single-task recipe (for its card)."""
    entry = recipe.members[name]
    return Recipe(name=f"{recipe.name or 'multitask'}-{name}", model=recipe.model, task=entry.task,
                  data=entry.data, strategy=recipe.strategy, train=recipe.train,
                  task_options=entry.task_options, strategy_options=recipe.strategy_options)


def task_metrics_view(metrics: dict[str, Any], name: str) -> dict[str, Any]:
    """One task's share of a multi-task run's metrics.json."""
    out = {key: metrics[key] for key in ("strategy", "base_model", "base_model_license", "train")
           if key in metrics}
    out["task"] = metrics.get("tasks", {}).get(name)
    out["labels"] = metrics.get("labels", {}).get(name, [])
    out["data"] = metrics.get("data", {}).get(name, {})
    for split in ("validation", "test"):
        if isinstance(metrics.get(split), dict) and isinstance(metrics[split].get(name), dict):
            out[split] = metrics[split][name]
    out["params"] = metrics.get("params", {}).get("tasks", {}).get(name, {})
    return out


def render_multitask_card(run: RunFiles) -> ModelCard:
    """The card of a multi-task run directory: every task's results and where its model is."""
    recipe, metrics = run.recipe, run.metrics
    base_model = str(metrics.get("base_model") or recipe.model.name_or_path)
    rows = []
    for name, entry in recipe.members.items():
        task_cls = get_task(entry.task_type)
        primary = task_cls.primary_metric
        cells = [_fmt((metrics.get(split) or {}).get(name, {}).get(primary)) for split in ("validation", "test")]
        params = metrics.get("params", {}).get("tasks", {}).get(name, {})
        rows.append((name, entry.task_type, primary, cells[0], cells[1],
                     f"{params.get('trainable', 0):,} ({params.get('percent', 0):.2f}%)", task_cls.pipeline_tag))
    combined = [_fmt((metrics.get(split) or {}).get("combined")) for split in ("validation", "test")]
    results, tags, untested = [], [], []
    for name, entry in recipe.members.items():
        task_cls = get_task(entry.task_type)
        by_split = {split: metrics[split][name] for split in ("validation", "test")
                    if isinstance(metrics.get(split), dict) and isinstance(metrics[split].get(name), dict)}
        results += _eval_results(task_cls.pipeline_tag, entry.data, by_split, _metric_names(*by_split.values()),
                                 task_name=name)
        tags.append(task_cls.pipeline_tag)
        if "test" not in by_split:
            untested.append(name)
    datasets = sorted({e.data.dataset for e in recipe.members.values() if is_hub_id(e.data.dataset)})
    data = ModelCardData(
        base_model=base_model if is_hub_id(base_model) else None,
        library_name="transformers",
        # The Hub takes one pipeline tag: the tasks' own when they share it, else the first task's
        # (every task's model, in tasks/NAME/, carries its own).
        pipeline_tag=tags[0] if tags else None,
        datasets=datasets or None,
        eval_results=results or None,
        tags=["hftransfer", "strategy-multitask", "multi-task"] + sorted({e.task_type for e in recipe.members.values()}),
        model_name=recipe.name or "hftransfer-multitask",
        **_license(metrics),
    )
    train = metrics.get("train", {})
    template = resources.files("hftransfer").joinpath("templates/multitask_card.md").read_text("utf-8")
    return ModelCard.from_template(
        data, template_str=template, name=recipe.name or "hftransfer-multitask", base_model=base_model,
        description=get_strategy(recipe.strategy_name).description, rows=rows, combined=combined,
        adapters=getattr(recipe.strategy_options, "adapters", None),
        hyperparameters=_hyperparameters(run),
        runtime=train.get("runtime_s", "?"), steps=train.get("steps", "?"),
        world_size=train.get("world_size", 1), recipe=recipe.to_yaml().strip(), license=data.license,
        untested=untested, all_untested=len(untested) == len(rows),
    )
