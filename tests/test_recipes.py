"""Every shipped recipe cannot rot: each is validated and trained for a few steps with its own
strategy and settings, on a tiny model and tiny data of its task (model and data overridden)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import tiny_recipe_dict
from test_image import TINY_VIT, write_folders
from test_token import toy_sentences, write_conll

import hftransfer
from hftransfer.api import check

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (REPO / "recipes").glob("**/*.yaml") if not {"accelerate", "sources"} & set(p.parts))


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory, tiny_model_dir, toy_data) -> dict:
    """A tiny model and data for each kind of task the shipped recipes train."""
    import torch
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    root = tmp_path_factory.mktemp("recipe-inputs")
    vit = root / "vit"
    torch.manual_seed(0)
    ViTModel(ViTConfig(**TINY_VIT)).save_pretrained(vit)
    ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(vit)
    images = write_folders(root / "images", ["blue", "red"], {"train": 12, "validation": 4, "test": 4}, seed=0)
    for split, n in (("train", 48), ("validation", 12), ("test", 12)):
        write_conll(root / "ner" / f"{split}.txt", toy_sentences(n, len(split)))
    text = {split: str(toy_data / f"{split}.csv") for split in ("train", "validation", "test")}
    tokens = {split: str(root / "ner" / f"{split}.txt") for split in ("train", "validation", "test")}
    pictures = {split: str(images / split) for split in ("train", "validation", "test")}
    # A teacher for recipes that distill (a source for those that fuse): a tiny text classifier.
    teacher = root / "teacher"
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, "full", train={"num_train_epochs": 1}),
                     output_dir=teacher)
    return {"text-classification": (tiny_model_dir, text), "masked-lm": (tiny_model_dir, text),
            "token-classification": (tiny_model_dir, tokens),
            "image-classification": (vit, pictures), "teacher": {"text-classification": teacher}}


def tiny_overrides(recipe: dict, inputs: dict) -> list[str]:
    """Overrides that keep the recipe's strategy and settings but train a tiny model on tiny
    data of each of its tasks (each of its stages), for one short epoch."""
    if "stages" in recipe:
        sections = {f"stages.{stage['name']}": stage for stage in recipe["stages"]}
    elif "tasks" in recipe:
        sections = {f"tasks.{name}": {**entry, "strategy": recipe["strategy"]}
                    for name, entry in recipe["tasks"].items()}
    else:
        sections = {"": recipe}
    overrides = []
    for prefix, section in sections.items():
        at = prefix + "." if prefix else ""
        task_type, strategy = section["task"]["type"], (section.get("strategy") or {}).get("name", "full")
        model, data = inputs[task_type]
        for split, path in data.items():
            if split in section["data"] or split == "train":
                overrides.append(f"{at}data.{split}={path}")
        if "unlabeled" in (section.get("data") or {}):
            overrides.append(f"{at}data.unlabeled={data['train']}")
        if "stages" in recipe:  # a stage's own train: wins over the pipeline's
            overrides += [f"{at}train.num_train_epochs=1", f"{at}train.per_device_train_batch_size=8"]
        if strategy == "distill":
            overrides.append(f"{at}strategy.teacher={inputs['teacher'][task_type]}")
        if strategy == "fusion":  # the same tiny classifier as the frozen source
            overrides.append(f"{at}strategy.source={inputs['teacher'][task_type]}")
    if "config" not in recipe.get("model", {}):  # an inline config is tiny already
        overrides.append(f"model.name_or_path={model}")
    if "num_hidden_layers" in (recipe.get("model", {}).get("init") or {}):  # the tiny models have 2
        overrides.append("model.init.num_hidden_layers=1")
    return overrides + ["train.num_train_epochs=1", "train.per_device_train_batch_size=8",
                        "train.disable_tqdm=true"]


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_trains_a_few_steps(path, tiny_inputs, tmp_path, work):
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    overrides = tiny_overrides(recipe, tiny_inputs)
    last = recipe["stages"][-1] if "stages" in recipe else recipe
    setup = check(path, overrides)
    if "stages" in recipe:  # the pipeline and a setup per stage
        setup = setup[1][-1]
    strategy = (last.get("strategy") or {}).get("name", "full")
    assert setup.recipe.strategy_name == strategy
    result = hftransfer.train(path, overrides, output_dir=tmp_path / "run")
    assert result.metrics["strategy"] == strategy
    assert 0 < result.metrics["train"]["steps"] <= 16  # one epoch of 8-example batches
    assert (result.run_dir / "README.md").is_file() and (result.run_dir / "metrics.json").is_file()
