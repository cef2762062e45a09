"""image-classification on a tiny random-init ViT: every strategy, the run directory loading
with plain transformers/peft, image folders / tables / image data, and bad inputs."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import assert_cli_error, assert_same_predictions, run_cli, run_without_the_kit, tree, user_error

import hftransfer
from hftransfer.cli import main

COLOURS = {"red": 0, "green": 1, "blue": 2}
TINY_VIT = {"image_size": 16, "patch_size": 4, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64}


def colour_image(label: str, rng: np.random.Generator, size: int = 16):
    """A noisy square whose dominant channel is its label: learnable in a few steps."""
    from PIL import Image

    pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    pixels[..., COLOURS[label]] = rng.integers(150, 256, (size, size))
    return Image.fromarray(pixels)


def stripe_image(label: str, rng: np.random.Generator, size: int = 16):
    """Grey stripes, horizontal or vertical: a second, different label set."""
    from PIL import Image

    pixels = rng.integers(0, 60, (size, size), dtype=np.uint8)
    line = rng.integers(180, 256)
    if label == "horizontal":
        pixels[::4, :] = line
    else:
        pixels[:, ::4] = line
    return Image.fromarray(pixels).convert("RGB")


def write_folders(root: Path, labels: list[str], counts: dict[str, int], seed: int, draw=colour_image) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for label in labels:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw(label, rng).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random-init ViT for 16x16 images, with its image processor."""
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    out = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    ViTModel(ViTConfig(**TINY_VIT)).save_pretrained(out)
    ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def image_data(tmp_path_factory) -> Path:
    """train/validation/test image folders with labels red and blue."""
    return write_folders(tmp_path_factory.mktemp("images"), ["blue", "red"],
                         {"train": 16, "validation": 8, "test": 8}, seed=0)


@pytest.fixture(scope="session")
def stripes_data(tmp_path_factory) -> Path:
    return write_folders(tmp_path_factory.mktemp("stripes"), ["horizontal", "vertical"],
                         {"train": 12, "validation": 6}, seed=1, draw=stripe_image)


def image_recipe(model_dir: Path | None, data_dir: Path, strategy_name: str = "full", **sections) -> dict:
    recipe = {
        "name": f"tiny-image-{strategy_name}",
        "model": {"name_or_path": str(model_dir)} if model_dir else {"config": {"model_type": "vit", **TINY_VIT}},
        "task": {"type": "image-classification"},
        "data": {"train": str(data_dir / "train"), "validation": str(data_dir / "validation"),
                 "test": str(data_dir / "test")},
        "strategy": {"name": strategy_name},
        "train": {"num_train_epochs": 4, "per_device_train_batch_size": 8, "learning_rate": 3e-3,
                  "save_strategy": "no", "disable_tqdm": True, "logging_steps": 50},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


VARIANTS = {
    "full": ("full", {"task": {"augment": {"random_resized_crop": [0.8, 1.0], "horizontal_flip": True}}}),
    "full-l2sp": ("full", {"strategy": {"regularization": {"type": "l2sp"}}}),
    "full-lr-decay": ("full", {"strategy": {"layer_lr_decay": 0.8}}),
    "scratch": ("scratch", {}),
    "partial-freeze": ("partial-freeze", {}),
    "partial-freeze-gradual": ("partial-freeze", {"strategy": {"gradual_unfreeze": True}}),
    "lora": ("lora", {}),
    "feature-extraction": ("feature-extraction", {"train": {"num_train_epochs": 20}}),
    "inline-config": ("full", {}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_vit_dir, image_data):
    """One trained run per strategy variant, shared by the tests of this module."""
    base = tmp_path_factory.mktemp("image-runs")
    out = {}
    for name, (strategy, sections) in VARIANTS.items():
        model_dir = None if name == "inline-config" else tiny_vit_dir
        out[name] = hftransfer.train(image_recipe(model_dir, image_data, strategy, **sections),
                                     output_dir=base / name)
    return out


TEST_IMAGES = ["red/000.png", "blue/001.png", "red/002.png", "blue/003.png"]


def test_every_strategy_trains(runs):
    for name, result in runs.items():
        metrics = result.metrics
        assert metrics["task"] == "image-classification", name
        assert metrics["labels"] == ["blue", "red"], name
        assert metrics["data"] == {"train": 32, "validation": 16, "test": 16}, name
        assert set(metrics["test"]) >= {"accuracy", "f1"}, name
        assert 0 < metrics["params"]["trainable"] <= metrics["params"]["total"], name
        assert (result.run_dir / "preprocessor_config.json").exists(), name
    assert runs["full"].metrics["validation"]["accuracy"] >= 0.75  # the colour is learnable
    assert runs["inline-config"].metrics["base_model"].startswith("random-init vit")
    assert runs["lora"].metrics["params"]["trainable"] < runs["full"].metrics["params"]["trainable"]
    assert (runs["lora"].run_dir / "adapter_model.safetensors").exists()
    assert not (runs["lora"].run_dir / "model.safetensors").exists()
    assert runs["partial-freeze"].metrics["transfer"]["frozen_at_end"] > 0
    assert runs["partial-freeze-gradual"].metrics["transfer"]["frozen_at_end"] == 0


def test_lora_saves_the_head_beside_the_adapter(runs):
    from safetensors.torch import load_file

    adapter = load_file(runs["lora"].run_dir / "adapter_model.safetensors")
    assert any("lora_A" in k for k in adapter)
    assert any(k.endswith("classifier.weight") for k in adapter)  # modules_to_save
    assert not any("embeddings" in k for k in adapter)


def test_runs_load_in_plain_transformers_with_the_kit_predictions(runs, image_data, tiny_vit_dir,
                                                                   capsys, tmp_path):
    images = [str(image_data / "test" / p) for p in TEST_IMAGES]
    kit = {}
    for name, result in runs.items():
        assert main(["predict", str(result.run_dir), "--json", *images]) == 0
        kit[name] = json.loads(capsys.readouterr().out)
        assert [set(r) for r in kit[name]] == [{"label", "score"}] * len(images)
    dirs = {name: str(result.run_dir) for name, result in runs.items()}
    script = textwrap.dedent(f"""
        import json, sys
        from peft import PeftModel
        from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageClassification,
                                  pipeline)
        out = {{}}
        for name, run in {dirs!r}.items():
            if name == "lora":
                base = json.load(open(run + "/adapter_config.json"))["base_model_name_or_path"]
                model = AutoModelForImageClassification.from_pretrained(
                    base, config=AutoConfig.from_pretrained(run))
                model = PeftModel.from_pretrained(model, run)
                pipe = pipeline("image-classification", model=model,
                                image_processor=AutoImageProcessor.from_pretrained(run))
            else:
                pipe = pipeline("image-classification", model=run)
            out[name] = [r[0] for r in pipe({images!r})]
        print(json.dumps(out))
    """)
    plain = run_without_the_kit(script, tmp_path)
    for name in runs:
        assert_same_predictions(plain[name], kit[name], name)


@pytest.mark.parametrize("name", ["full", "feature-extraction"])
def test_evaluate_reproduces_test_metrics(runs, name, capsys):
    # For feature-extraction this checks the export: the saved model scores exactly what the
    # head scored on the cached features.
    assert main(["evaluate", str(runs[name].run_dir), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(runs[name].metrics["test"]["accuracy"])
    assert result["loss"] == pytest.approx(runs[name].metrics["test"]["loss"], abs=1e-4)


def test_a_run_is_the_source_of_a_run_with_other_labels(runs, stripes_data, tmp_path):
    """The head is replaced for the new labels; every other weight transfers."""
    from safetensors.torch import load_file

    from hftransfer.recipe import load_recipe
    from hftransfer.registry import get_strategy, get_task

    source = runs["full"].run_dir
    recipe = load_recipe(image_recipe(source, stripes_data, "full", data={"test": None},
                                      train={"num_train_epochs": 1}))
    task = get_task("image-classification")(recipe.task_options)
    strategy = get_strategy("full")(recipe.strategy_options, task)
    model = strategy.build_model(recipe.model, ["horizontal", "vertical", "diagonal"])
    assert model.classifier.out_features == 3
    assert {n.split(".")[0] for n in strategy.new_params} == {"classifier"}
    saved = load_file(source / "model.safetensors")  # the Hub key format
    from transformers import AutoModelForImageClassification

    reference = AutoModelForImageClassification.from_pretrained(source)
    assert torch.equal(model.vit.layers[0].attention.q_proj.weight,
                       reference.vit.layers[0].attention.q_proj.weight)
    assert torch.equal(model.vit.embeddings.patch_embeddings.projection.weight,
                       saved["vit.embeddings.patch_embeddings.projection.weight"])
    result = hftransfer.train(recipe, output_dir=tmp_path / "run")
    assert result.metrics["labels"] == ["horizontal", "vertical"]
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "horizontal", "1": "vertical"}


# --------------------------------------------------------------------------- data


def test_tables_of_image_paths_resolve_against_their_folder(image_data, tmp_path):
    from hftransfer.recipe import load_recipe
    from hftransfer.registry import get_task

    rows = [(f"images/{label}/{i:03d}.png", label) for label in ("blue", "red") for i in range(3)]
    for label in ("blue", "red"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            src = image_data / "train" / label / f"{i:03d}.png"
            (tmp_path / "images" / label / f"{i:03d}.png").write_bytes(src.read_bytes())
    (tmp_path / "train.csv").write_text("picture,kind\n" + "".join(f"{p},{l}\n" for p, l in rows))
    (tmp_path / "train.jsonl").write_text("".join(
        json.dumps({"picture": str(tmp_path / p), "kind": l}) + "\n" for p, l in rows))
    recipe = load_recipe({"task": {"type": "image-classification", "image_column": "picture",
                                   "label_column": "kind"}, "data": {"train": "x.csv"}})
    task = get_task("image-classification")(recipe.task_options)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    import os

    cwd = os.getcwd()
    os.chdir(elsewhere)  # relative paths follow the data file, not the working directory
    try:
        for name in ("train.csv", "train.jsonl"):
            ds = task.read_split(str(tmp_path / name), "data.train", None)
            assert len(ds) == 6 and task.raw_labels(ds) == [l for _, l in rows]
            assert Path(ds[0]["picture"]["path"]) == (tmp_path / rows[0][0]).resolve()
    finally:
        os.chdir(cwd)


def test_parquet_and_hub_style_image_data(image_data, tmp_path, tiny_vit_dir):
    """Image bytes inside parquet files and Hub datasets (Image + ClassLabel features)."""
    import datasets

    from hftransfer.data import load_splits
    from hftransfer.recipe import ModelSpec, load_recipe
    from hftransfer.registry import get_task

    paths = sorted((image_data / "train").rglob("*.png"))[::4]
    labels = [p.parent.name for p in paths]
    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["blue", "red"])})
    ds = datasets.Dataset.from_dict(
        {"img": [{"bytes": p.read_bytes(), "path": None} for p in paths], "y": labels}, features=features)
    ds.to_parquet(str(tmp_path / "train.parquet"))
    recipe = load_recipe({"task": {"type": "image-classification", "image_column": "img", "label_column": "y"},
                          "data": {"train": str(tmp_path / "train.parquet"), "validation_fraction": 0.25}})
    task = get_task("image-classification")(recipe.task_options)
    splits = load_splits(recipe.data, task, seed=0)
    assert splits.labels == ["blue", "red"] and len(splits.train) + len(splits.validation) == len(paths)
    assert splits.train[0]["img"]["bytes"]  # the images travel inside the parquet file

    hub = task.check_split(ds, "data.train")  # what load_splits does with a Hub dataset's splits
    processor = task.load_processor(str(tiny_vit_dir), ModelSpec(name_or_path=str(tiny_vit_dir)),
                                    _config(tiny_vit_dir))
    encoded = task.preprocess(hub, processor, ["blue", "red"])
    batch = task.collator(processor)([encoded[0], encoded[1]])
    assert batch["pixel_values"].shape == (2, 3, 16, 16)
    assert batch["labels"].tolist() == [["blue", "red"].index(l) for l in labels[:2]]


def _config(path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)


def test_augmentation_only_when_training(image_data, tiny_vit_dir):
    import random

    from hftransfer.recipe import ModelSpec, load_recipe
    from hftransfer.registry import get_task

    recipe = load_recipe({"task": {"type": "image-classification",
                                   "augment": {"random_resized_crop": [0.3, 0.5], "horizontal_flip": True}},
                          "data": {"train": "x"}})
    assert recipe.task_options.augment.random_resized_crop == [0.3, 0.5]
    task = get_task("image-classification")(recipe.task_options)
    ds = task.read_split(str(image_data / "validation"), "data.validation", None)
    processor = task.load_processor(str(tiny_vit_dir), ModelSpec(name_or_path=str(tiny_vit_dir)),
                                    _config(tiny_vit_dir))
    random.seed(0)
    train = task.preprocess(ds, processor, ["blue", "red"], training=True)
    plain = task.preprocess(ds, processor, ["blue", "red"])
    a, b = train[:4]["pixel_values"], train[:4]["pixel_values"]
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))  # random crops and flips
    assert all(x.shape == (3, 16, 16) for x in a)
    c, d = plain[:4]["pixel_values"], plain[:4]["pixel_values"]
    assert all(np.array_equal(x, y) for x, y in zip(c, d))


def test_inline_config_gets_a_processor_of_its_size():
    from hftransfer.models import source_config
    from hftransfer.recipe import load_recipe
    from hftransfer.registry import get_task

    recipe = load_recipe({"model": {"config": {"model_type": "vit", **TINY_VIT, "image_size": 24,
                                               "num_channels": 1}},
                          "task": {"type": "image-classification"}, "data": {"train": "x"}})
    task = get_task("image-classification")(recipe.task_options)
    processor = task.load_processor(None, recipe.model, source_config(recipe.model))
    assert processor.size == {"height": 24, "width": 24}
    assert len(processor.image_mean) == 1 and task.mode == "L"


def test_a_processor_of_another_size_is_refused(tiny_vit_dir, tmp_path):
    from hftransfer.models import source_config
    from hftransfer.recipe import load_recipe
    from hftransfer.registry import get_task

    recipe = load_recipe({"model": {"config": {"model_type": "vit", **TINY_VIT, "image_size": 32},
                                    "processor": str(tiny_vit_dir)},
                          "task": {"type": "image-classification"}, "data": {"train": "x"}})
    task = get_task("image-classification")(recipe.task_options)
    user_error("16x16", "32x32", call=lambda: task.load_processor(None, recipe.model,
                                                                  source_config(recipe.model)))


def test_load_best_model_at_end_restores_the_best_checkpoint(tiny_vit_dir, image_data, tmp_path):
    # transformers 5 writes ViT checkpoints with renamed keys that its Trainer reloads only in
    # part (huggingface/transformers#48805); TransferTrainer reloads them in full.
    # greater_is_better on the loss selects the first epoch: the worst model, on purpose.
    result = hftransfer.train(image_recipe(tiny_vit_dir, image_data, "full", train={
        "eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
        "metric_for_best_model": "loss", "greater_is_better": True, "num_train_epochs": 3}),
        output_dir=tmp_path / "run")
    history = json.loads((result.run_dir / "logs" / "log_history.json").read_text())
    losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    assert result.metrics["validation"]["loss"] == pytest.approx(max(losses), abs=1e-5)


# --------------------------------------------------------------------------- bad inputs


@pytest.fixture
def bad_data(tmp_path, image_data) -> Path:
    """A writable copy of the validation folders, to break."""
    import shutil

    out = tmp_path / "data"
    shutil.copytree(image_data / "validation", out / "train")
    return out


def _recipe_file(work: Path, tiny_vit_dir: Path, data: dict, **task) -> Path:
    recipe = {"model": {"name_or_path": str(tiny_vit_dir)},
              "task": {"type": "image-classification", **task},
              "data": {"validation_fraction": 0.25, **data},
              "train": {"num_train_epochs": 1, "save_strategy": "no"}}
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _fails_writing_nothing(capsys, work: Path, recipe: Path, *needles: str) -> None:
    before = tree(work)
    rc, _, err = run_cli(capsys, "train", recipe)
    assert_cli_error(rc, err, *needles)
    assert tree(work) == before


def test_undecodable_image_is_named(capsys, work, tiny_vit_dir, bad_data):
    bad = bad_data / "train" / "red" / "broken.png"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    recipe = _recipe_file(work, tiny_vit_dir, {"train": str(bad_data / "train")})
    _fails_writing_nothing(capsys, work, recipe, "broken.png", "not a readable image")


def test_empty_label_folder_is_named(capsys, work, tiny_vit_dir, bad_data):
    (bad_data / "train" / "green").mkdir()
    (bad_data / "train" / "green" / "notes.txt").write_text("no images here")
    recipe = _recipe_file(work, tiny_vit_dir, {"train": str(bad_data / "train")})
    _fails_writing_nothing(capsys, work, recipe, "green", "holds no image files")


def test_missing_image_column(capsys, work, tiny_vit_dir, image_data):
    table = work / "train.csv"
    table.write_text("path,label\n" + "".join(
        f"{p},{p.parent.name}\n" for p in sorted((image_data / "train").rglob("*.png"))))
    recipe = _recipe_file(work, tiny_vit_dir, {"train": str(table)})
    _fails_writing_nothing(capsys, work, recipe, "'image'", "task.image_column", "path")


def test_missing_image_file_in_a_table(capsys, work, tiny_vit_dir):
    table = work / "train.csv"
    table.write_text("image,label\nnope.png,red\n")
    recipe = _recipe_file(work, tiny_vit_dir, {"train": str(table)})
    _fails_writing_nothing(capsys, work, recipe, "row 1", "nope.png", "does not exist")


@pytest.mark.parametrize("augment, needles", [
    ({"random_resized_crop": [1.2, 0.5]}, ["task.augment.random_resized_crop", "[1.2, 0.5]"]),
    ({"random_resized_crop": 0.8}, ["task.augment.random_resized_crop", "0.8"]),
    ({"rotate": 10}, ["task.augment.rotate", "horizontal_flip, random_resized_crop"]),
    (True, ["task.augment must be a mapping"]),
])
def test_bad_augment_option(capsys, work, tiny_vit_dir, image_data, augment, needles):
    recipe = _recipe_file(work, tiny_vit_dir, {"train": str(image_data / "train")}, augment=augment)
    _fails_writing_nothing(capsys, work, recipe, *needles)


def test_predict_names_a_missing_or_broken_file(runs, capsys, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    for path, needle in ((tmp_path / "missing.png", "does not exist"), (broken, "not a readable image")):
        rc, out, err = run_cli(capsys, "predict", runs["full"].run_dir, "--json", path)
        assert_cli_error(rc, err, path.name, needle)
        assert out == ""


def test_images_outside_label_folders(tmp_path, image_data):
    from hftransfer.recipe import load_recipe
    from hftransfer.registry import get_task

    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes((image_data / "train" / "red" / "000.png").read_bytes())
    task = get_task("image-classification")(
        load_recipe({"task": {"type": "image-classification"}, "data": {"train": "x"}}).task_options)
    user_error("a.png", "outside a label folder",
               call=lambda: task.read_split(str(tmp_path / "flat"), "data.train", None))
    (tmp_path / "empty").mkdir()
    user_error("holds no label folders",
               call=lambda: task.read_split(str(tmp_path / "empty"), "data.train", None))
