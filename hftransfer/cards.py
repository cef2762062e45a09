"""Model cards: Hub metadata (base model, pipeline tag, model-index) and a body that records how
the model was transferred. Written by every run; ``hftransfer card RUN`` re-renders it."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recipe import Recipe


def render_card(recipe: "Recipe", metrics: dict[str, Any]):
    """A ``huggingface_hub.ModelCard`` for a run's recipe and metrics."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .registry import get_strategy, get_task

    task_cls = get_task(recipe.task_type)
    strategy_cls = get_strategy(recipe.strategy_name)
    splits = [s for s in ("validation", "test") if isinstance(metrics.get(s), dict)]
    metric_names = sorted({k for s in splits for k, v in metrics[s].items()
                           if isinstance(v, (int, float)) and k not in ("loss", "epoch")})
    dataset_name = recipe.data.dataset or recipe.name or "custom"
    results = [
        EvalResult(task_type=task_cls.pipeline_tag, dataset_type=dataset_name, dataset_name=dataset_name,
                   dataset_split=split, metric_type=name, metric_name=f"{split} {name}",
                   metric_value=float(metrics[split][name]))
        for split in splits for name in metric_names if name in metrics[split]
    ]
    adapter = strategy_cls.saves_adapter
    data = ModelCardData(
        base_model=metrics["base_model"],
        library_name="peft" if adapter else "transformers",
        pipeline_tag=task_cls.pipeline_tag,
        tags=["hftransfer", f"strategy-{recipe.strategy_name}", recipe.task_type],
        datasets=[recipe.data.dataset] if recipe.data.dataset else None,
        model_name=recipe.name or "hftransfer-run",
        eval_results=results or None,
    )
    params = metrics.get("params", {})
    total = params.get("total", 0) or 1
    budget = []
    if recipe.data.samples_per_label:
        budget.append(f"{recipe.data.samples_per_label} per label")
    if recipe.data.max_train_samples:
        budget.append(f"at most {recipe.data.max_train_samples}")
    if adapter:
        usage = ("Load it with `peft`: rebuild the base model with this directory's `config.json` "
                 "(it carries the label names), then attach the adapter with "
                 "`PeftModel.from_pretrained(base, path)`.")
    else:
        usage = (f"Load it with `transformers.pipeline(\"{task_cls.pipeline_tag}\", model=path)`.")
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = "\n".join(f"| {s} | " + " | ".join(fmt(metrics[s].get(m, "")) for m in metric_names) + " |"
                     for s in splits)
    train = metrics.get("train", {})
    template = resources.files("hftransfer").joinpath("templates/model_card.md").read_text("utf-8")
    return ModelCard.from_template(
        data, template_str=template,
        name=recipe.name or "hftransfer run",
        base_model=metrics["base_model"], task=recipe.task_type, strategy=recipe.strategy_name,
        strategy_description=strategy_cls.description,
        trainable=f"{params.get('trainable', 0):,}", total=f"{params.get('total', 0):,}",
        trainable_pct=f"{100 * params.get('trainable', 0) / total:.2f}%",
        n_train=metrics.get("data", {}).get("train", "?"),
        budget=", ".join(budget) or "all training examples",
        labels=", ".join(f"`{l}`" for l in metrics.get("labels", [])),
        metric_names=" | ".join(metric_names), metric_rule="---|" * len(metric_names),
        metric_rows=rows,
        runtime=train.get("runtime_s", "?"), samples_per_second=train.get("samples_per_second", "?"),
        peak_rss=train.get("peak_rss_mb", "?"), world_size=train.get("world_size", 1),
        usage=usage, recipe=recipe.to_yaml().strip(),
    )


def write_card(run_dir: Path, recipe: "Recipe", metrics: dict[str, Any]) -> Path:
    """Render the card into ``run_dir/README.md``."""
    path = Path(run_dir) / "README.md"
    render_card(recipe, metrics).save(str(path))
    return path
