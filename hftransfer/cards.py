"""Model cards: Hub metadata (base model, library, pipeline tag, license, model-index) and a body
that records how the model was transferred, what it scored and how to reproduce it.

Every run writes one (``RUN/README.md``); ``hftransfer card RUN`` re-renders it and
``hftransfer push --merge-adapter`` renders the card of the merged model. The card is built from
the resolved recipe and ``metrics.json`` only, so re-rendering is deterministic.

``metrics.json`` may carry a ``baseline`` entry (for example the ``scratch`` run of the same
recipe, filled by whatever compared them)::

    "baseline": {"strategy": "scratch", "validation": {"accuracy": 0.5}, "test": {"accuracy": 0.5}}

Its numbers are shown beside the run's in the results table (not in the model-index, which holds
this model's results only). Without it the card shows no baseline: numbers are never invented.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from .recipe import Recipe

# Training arguments worth a row in the card, in display order (when known for the run).
HYPERPARAMETERS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "seed", "warmup_steps", "warmup_ratio", "weight_decay",
    "lr_scheduler_type", "optim", "max_grad_norm", "label_smoothing_factor", "fp16", "bf16",
)
# Metric entries that describe the evaluation call rather than the model's quality.
_NOT_METRICS = ("loss", "epoch", "runtime", "samples_per_second", "steps_per_second")


def _is_hub_id(name: Any) -> bool:
    """A plausible Hub repo id that is not also a path on this machine."""
    if not isinstance(name, str) or not name or name.startswith((".", "/", "~")):
        return False
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(name)
    except Exception:  # HFValidationError; any failure means "not a Hub id"
        return False
    return not Path(os.path.expanduser(name)).exists()


def source_license(recipe: "Recipe") -> dict[str, str]:
    """``license`` (and ``license_name``/``license_link``) of the source model, when known.

    Read from the front matter of the source's ``README.md`` when the source is a local
    directory (the embedded MiniLM, a downloaded model, another hftransfer run); empty otherwise.
    """
    from .models import embedded_model_path, is_embedded

    name = recipe.model.name_or_path
    try:
        path = Path(embedded_model_path()) if is_embedded(name) else Path(os.path.expanduser(name))
        readme = path / "README.md"
        if not readme.is_file():
            return {}
        from huggingface_hub import metadata_load

        meta = metadata_load(readme) or {}
    except Exception:  # a missing package or a malformed front matter: the license is unknown
        return {}
    return {key: str(meta[key]) for key in ("license", "license_name", "license_link")
            if isinstance(meta.get(key), (str, int, float)) and str(meta[key]).strip()}


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


def _hyperparameters(recipe: "Recipe", metrics: dict[str, Any]) -> list[tuple[str, str]]:
    from .recipe import training_values
    from .multitask import task_for
    from .registry import get_strategy

    values = training_values(recipe, get_strategy(recipe.strategy_name), task_for(recipe))
    rows = [(key, _fmt_setting(values[key])) for key in HYPERPARAMETERS if key in values]
    warmup = values.get("warmup_steps")
    if isinstance(warmup, float) and 0 < warmup < 1:  # transformers reads it as a fraction of the steps
        rows = [(k, f"{v} (a fraction of the training steps)" if k == "warmup_steps" else v) for k, v in rows]
    world = int(metrics.get("train", {}).get("world_size", 1) or 1)
    batch = values.get("per_device_train_batch_size")
    if isinstance(batch, int):
        accum = int(values.get("gradient_accumulation_steps", 1) or 1)
        rows.append(("effective batch size",
                     f"{batch * accum * world} ({batch} × {accum} accumulation × {world} process(es))"))
    data_seed = recipe.data.seed if recipe.data.seed is not None else values.get("seed")
    if data_seed is not None:
        rows.append(("data seed (splits, budgets)", _fmt_setting(data_seed)))
    options = {k: v for k, v in recipe.strategy.items() if k != "name"}
    rows.append((f"strategy `{recipe.strategy_name}` options", f"`{_inline(options)}`" if options else "defaults"))
    return rows


def _what_trained(recipe: "Recipe", strategy_cls: Any, task_cls: Any) -> str:
    """One sentence on which parameters moved, from the strategy and its effective options."""
    text = strategy_cls.description
    options = recipe.strategy_options
    adapters = getattr(options, "adapters", None)
    if (hasattr(strategy_cls, "peft_config") or adapters) and options is not None:
        try:
            config = (strategy_cls.adapter_config(options, task_cls.peft_task_type) if adapters
                      else strategy_cls.peft_config(options, task_cls.peft_task_type))
        except Exception:  # the card must render even if PEFT changed; the description still holds
            return text
        shown = {k: getattr(config, k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")
                 if getattr(config, k, None) is not None}
        if isinstance(shown.get("target_modules"), (set, frozenset)):
            shown["target_modules"] = sorted(shown["target_modules"])
        peft_type = getattr(getattr(config, "peft_type", None), "value", "adapter")
        text += f"; {peft_type}" + (f" `{_inline(shown)}`" if shown else "")
        if "target_modules" not in shown:
            text += " (PEFT's default target modules for the architecture)"
    return text


def render_card(recipe: "Recipe", metrics: dict[str, Any], *, merged: bool = False,
                adapter: bool | None = None, whole_recipe: "Recipe | None" = None,
                companions: list[tuple[str, str]] | None = None):
    """A ``huggingface_hub.ModelCard`` for a run's recipe and metrics.

    ``merged=True`` renders the card of an adapter run whose adapter was merged into the base
    weights (``hftransfer push --merge-adapter``): a plain transformers model. One task of a
    multi-task run passes its own view of the recipe, the ``whole_recipe`` that reproduces it
    and its ``companions`` (the other tasks' names and types).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .registry import get_strategy, get_task

    task_cls = get_task(recipe.task_type)
    strategy_cls = get_strategy(recipe.strategy_name)
    if adapter is None:
        adapter = strategy_cls.saves_adapter
    adapter = adapter and not merged
    splits = [s for s in ("validation", "test") if isinstance(metrics.get(s), dict)]
    metric_names = _metric_names(*(metrics[s] for s in splits))
    model_name = recipe.name or "hftransfer-run"
    base_model = str(metrics.get("base_model") or recipe.model.name_or_path)
    dataset = recipe.data.dataset if _is_hub_id(recipe.data.dataset) else None
    dataset_name = recipe.data.dataset or recipe.name or "custom"
    results = [
        EvalResult(task_type=task_cls.pipeline_tag, dataset_type=dataset_name, dataset_name=dataset_name,
                   dataset_config=recipe.data.dataset_config if dataset else None,
                   dataset_split=split, metric_type=name, metric_name=f"{split} {name}",
                   metric_value=float(metrics[split][name]))
        for split in splits for name in metric_names
        if isinstance(metrics[split].get(name), (int, float))
    ]
    data = ModelCardData(
        base_model=base_model if _is_hub_id(base_model) else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=task_cls.pipeline_tag,
        tags=["hftransfer", f"strategy-{recipe.strategy_name}", recipe.task_type]
        + (["merged-adapter"] if merged else []),
        datasets=[dataset] if dataset else None,
        model_name=model_name,
        eval_results=results or None,
        **source_license(recipe),
    )

    # Results: this run's splits, then the baseline's when metrics.json carries one.
    baseline = metrics.get("baseline") if isinstance(metrics.get("baseline"), dict) else None
    baseline_splits = [s for s in ("validation", "test") if baseline and isinstance(baseline.get(s), dict)]
    result_rows = [(f"{split}", [_fmt(metrics[split].get(m)) for m in metric_names]) for split in splits]
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
        what_trained=_what_trained(recipe, strategy_cls, task_cls),
        adapter=adapter, merged=merged,
        trainable=f"{params.get('trainable', 0):,}", total=f"{params.get('total', 0):,}",
        trainable_pct=f"{100 * params.get('trainable', 0) / total:.2f}%",
        source_data=source_data,
        n_train=counts.get("train", "?"), n_validation=counts.get("validation", "?"),
        n_test=counts.get("test", "?"),
        budget=", ".join(budget) or "all training examples",
        labels=", ".join(f"`{label}`" for label in metrics.get("labels", [])),
        transfer=[(k, _fmt_setting(v)) for k, v in transfer.items() if not isinstance(v, (dict, list))],
        metric_names=metric_names, result_rows=result_rows, has_baseline=bool(baseline_splits),
        hyperparameters=_hyperparameters(recipe, metrics),
        runtime=train.get("runtime_s", "?"), samples_per_second=train.get("samples_per_second", "?"),
        peak_rss=train.get("peak_rss_mb", "?"), world_size=train.get("world_size", 1),
        recipe=(whole_recipe or recipe).to_yaml().strip(),
        license=data.license,
        companions=companions or [],
    )


def write_card(run_dir: Path, recipe: "Recipe", metrics: dict[str, Any], *, merged: bool = False) -> Path:
    """Render the card into ``run_dir/README.md`` and return its path."""
    path = Path(run_dir) / "README.md"
    card = render_multitask_card(recipe, metrics) if recipe.is_multitask else render_card(recipe, metrics, merged=merged)
    card.save(str(path))
    return path


def task_view(recipe: "Recipe", name: str) -> "Recipe":
    """One task of a multi-task recipe as a single-task recipe (for its card)."""
    from .recipe import Recipe

    entry = recipe.members[name]
    return Recipe(name=f"{recipe.name or 'multitask'}-{name}", model=recipe.model, task=entry.task,
                  data=entry.data, strategy=recipe.strategy, train=recipe.train,
                  task_options=entry.task_options, strategy_options=recipe.strategy_options)


def task_metrics_view(metrics: dict[str, Any], name: str) -> dict[str, Any]:
    """One task's share of a multi-task run's metrics.json."""
    out = {key: metrics[key] for key in ("strategy", "base_model", "train") if key in metrics}
    out["task"] = metrics.get("tasks", {}).get(name)
    out["labels"] = metrics.get("labels", {}).get(name, [])
    out["data"] = metrics.get("data", {}).get(name, {})
    for split in ("validation", "test"):
        if isinstance(metrics.get(split), dict) and isinstance(metrics[split].get(name), dict):
            out[split] = metrics[split][name]
    out["params"] = metrics.get("params", {}).get("tasks", {}).get(name, {})
    return out


def write_task_cards(run_dir: Path, recipe: "Recipe", metrics: dict[str, Any]) -> None:
    """``RUN/tasks/NAME/README.md`` for every task of a multi-task run."""
    adapters = getattr(recipe.strategy_options, "adapters", None) is not None
    for name in recipe.members:
        companions = [(other, entry.task_type) for other, entry in recipe.members.items() if other != name]
        card = render_card(task_view(recipe, name), task_metrics_view(metrics, name), adapter=adapters,
                           whole_recipe=recipe, companions=companions)
        card.save(str(Path(run_dir) / "tasks" / name / "README.md"))


def render_multitask_card(recipe: "Recipe", metrics: dict[str, Any]):
    """The card of a multi-task run directory: every task's results and where its model is."""
    from huggingface_hub import ModelCard, ModelCardData

    from .registry import get_strategy, get_task

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
    data = ModelCardData(
        base_model=base_model if _is_hub_id(base_model) else None,
        library_name="transformers",
        tags=["hftransfer", "strategy-multitask", "multi-task"] + sorted({e.task_type for e in recipe.members.values()}),
        model_name=recipe.name or "hftransfer-multitask",
        **source_license(recipe),
    )
    train = metrics.get("train", {})
    template = resources.files("hftransfer").joinpath("templates/multitask_card.md").read_text("utf-8")
    return ModelCard.from_template(
        data, template_str=template, name=recipe.name or "hftransfer-multitask", base_model=base_model,
        description=get_strategy(recipe.strategy_name).description, rows=rows, combined=combined,
        adapters=getattr(recipe.strategy_options, "adapters", None),
        hyperparameters=_hyperparameters(recipe, metrics),
        runtime=train.get("runtime_s", "?"), steps=train.get("steps", "?"),
        world_size=train.get("world_size", 1), recipe=recipe.to_yaml().strip(), license=data.license,
    )
