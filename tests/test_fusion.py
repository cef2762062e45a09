"""Strategy fusion: a frozen source model's logits or features joined with a trained target's in
a trained fusion layer; the source's outputs cached; the run directory that evaluate, predict
and push take (with the kit, which runs the source beside the target)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import NEGATIVE, POSITIVE
from helpers import refused, tiny_recipe_dict
from safetensors.torch import load_file
from test_distill import word_model_dir  # noqa: F401  (fixture: another tokenizer)
from test_image import image_data, image_recipe, tiny_vit_dir  # noqa: F401  (fixtures)
from test_token import ner_data, ner_recipe  # noqa: F401  (fixture, recipe)

import hftransfer
from hftransfer import engine
from hftransfer.strategies.fusion import FusedModel


@pytest.fixture(scope="module")
def source_run(tiny_model_dir, toy_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("source") / "run"
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, "full", train={"num_train_epochs": 3,
                                                                                "learning_rate": 1e-3}),
                     output_dir=run)
    return run


def fusion(tiny_model_dir, toy_data, source, **strategy) -> dict:
    return tiny_recipe_dict(tiny_model_dir, toy_data, "fusion", strategy={"source": str(source), **strategy})


def prepared(recipe: dict) -> tuple[FusedModel, engine.Setup]:
    """The fused model as training starts (built, the source loaded, prepared)."""
    setup = engine.check(recipe)
    model = setup.strategy.build_model(setup.recipe.model, setup.splits.labels)
    engine._load_extras(setup.strategy)
    return setup.strategy.prepare(model), setup


def batch(setup, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(setup.processor(texts, padding=True, return_tensors="pt"))


def test_logits_start_as_the_sum_of_both_models(tiny_model_dir, toy_data, source_run):
    model, setup = prepared(fusion(tiny_model_dir, toy_data, source_run))
    model.eval()
    inputs = batch(setup, ["good great film", "awful dull"])
    with torch.no_grad():
        fused = model(**inputs).logits
        target = model.target(**inputs).logits
        source = model.source(**inputs).logits
    torch.testing.assert_close(fused, target + source)  # same labels: the map starts as the identity
    # the source is frozen and kept out of what trains and what is saved
    assert not any(p.requires_grad for p in model.source.parameters())
    assert not any(k.startswith("source") for k in model.state_dict())


def test_features_start_as_the_target_alone(tiny_model_dir, toy_data, source_run):
    model, setup = prepared(fusion(tiny_model_dir, toy_data, source_run, combine="features"))
    model.eval()
    inputs = batch(setup, ["good great film", "awful dull"])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, model.target(**inputs).logits)
    assert model.fusion.in_features == 2 * 32  # target's and source's pooled features


def test_other_label_set_starts_from_zero(tiny_model_dir, toy_data, source_run, tmp_path):
    relabelled = tmp_path / "relabelled"
    relabelled.mkdir()
    for split in ("train", "validation", "test"):
        text = (toy_data / f"{split}.csv").read_text().replace(",positive", ",good").replace(",negative", ",bad")
        (relabelled / f"{split}.csv").write_text(text)
    model, setup = prepared(fusion(tiny_model_dir, relabelled, source_run))
    assert torch.count_nonzero(model.fusion.weight) == 0  # the source's labels mean nothing here yet
    model.eval()
    inputs = batch(setup, ["good great film"])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, model.target(**inputs).logits)


@pytest.mark.parametrize("combine,target", [("logits", "full"), ("features", "full"),
                                            ("logits", {"name": "lora"})])
def test_trains_saves_and_predicts(tiny_model_dir, toy_data, source_run, tmp_path, caplog, combine, target):
    run = tmp_path / "run"
    recipe = fusion(tiny_model_dir, toy_data, source_run, combine=combine, target=target)
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        result = hftransfer.train(recipe, output_dir=run)
    assert result.metrics["transfer"]["source_outputs"] == "computed once and cached"
    assert result.metrics["transfer"]["target_strategy"] == (target if isinstance(target, str) else "lora")
    assert (run / "fusion.safetensors").is_file()
    manifest = json.loads((run / "fusion.json").read_text())
    assert manifest["combine"] == combine and Path(manifest["source"]) == source_run.resolve()
    # The source is not saved with the target: the saved weights are the target's alone.
    if isinstance(target, str):  # a plain model of the target's (= the source's) architecture
        assert set(load_file(str(run / "model.safetensors"))) == set(load_file(str(source_run / "model.safetensors")))
    else:
        assert not any("source" in k for k in load_file(str(run / "adapter_model.safetensors")))
    # Evaluating the finished run (the source runs online) reproduces the run's own metrics.
    again = hftransfer.evaluate(run, split="validation")
    assert again["accuracy"] == pytest.approx(result.metrics["validation"]["accuracy"])
    assert again["loss"] == pytest.approx(result.metrics["validation"]["loss"], abs=1e-5)
    texts = [f"{POSITIVE[0]} {POSITIVE[1]}", f"{NEGATIVE[0]} {NEGATIVE[1]}"]
    loaded = engine.load_run(run)
    assert isinstance(loaded.model, FusedModel)
    with torch.no_grad():
        logits = loaded.model(**dict(loaded.processor(texts, padding=True, return_tensors="pt"))).logits
    predicted = hftransfer.predict(run, texts)
    probs = logits.softmax(-1)
    assert [p["label"] for p in predicted] == [result.metrics["labels"][i] for i in probs.argmax(-1)]
    assert [p["score"] for p in predicted] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)
    card = (run / "README.md").read_text()
    assert "fusion** model" in card and "hftransfer predict" in card
    # push publishes the fusion layer and says what the repo needs
    pushed = hftransfer.push(run, "me/fused", dry_run=tmp_path / "dry")
    assert {"fusion.json", "fusion.safetensors"} <= set(pushed.files)
    assert any("beside its source" in note for note in pushed.notes)

    # A rerun reads the source's outputs from the cache.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        hftransfer.train(recipe, output_dir=tmp_path / "again")
    assert "from the cache" in caplog.text


def test_image_source_runs_online(tiny_vit_dir, image_data, tmp_path):
    source = tmp_path / "source"
    hftransfer.train(image_recipe(tiny_vit_dir, image_data, train={"num_train_epochs": 2}), output_dir=source)
    result = hftransfer.train(image_recipe(tiny_vit_dir, image_data, "fusion", strategy={"source": str(source)},
                                           train={"num_train_epochs": 1}), output_dir=tmp_path / "fused")
    assert result.metrics["transfer"]["source_outputs"].startswith("computed on every batch")
    files = sorted(str(p) for p in (image_data / "test").glob("*/*.png"))[:2]
    assert len(hftransfer.predict(tmp_path / "fused", files)) == 2


def test_token_fusion(tiny_model_dir, ner_data, tmp_path):
    source = tmp_path / "source"
    hftransfer.train(ner_recipe(tiny_model_dir, ner_data, "full"), output_dir=source)
    recipe = ner_recipe(tiny_model_dir, ner_data, "fusion")
    recipe["strategy"] = {"name": "fusion", "source": str(source), "combine": "features"}
    result = hftransfer.train(recipe, output_dir=tmp_path / "fused")
    assert "per token" in result.metrics["transfer"]["source_outputs"]
    again = hftransfer.evaluate(tmp_path / "fused", split="validation")
    assert again["f1"] == pytest.approx(result.metrics["validation"]["f1"])


def test_bad_sources_are_refused(tiny_model_dir, toy_data, source_run, word_model_dir, tiny_vit_dir, image_data,
                                 tmp_path, capsys):
    import yaml

    def recipe(**strategy):
        path = tmp_path / "f.yaml"
        path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_model_dir, toy_data, "fusion", strategy=strategy)))
        return path

    out = ["--output-dir", str(tmp_path / "out")]
    refused(capsys, tmp_path, ["train", str(recipe())] + out, "strategy.source is missing")
    refused(capsys, tmp_path, ["train", str(recipe(source=str(source_run), combine="both"))] + out, "strategy.combine")
    refused(capsys, tmp_path, ["train", str(recipe(source=str(source_run), target="distill"))] + out,
            "cannot train a fusion target")
    refused(capsys, tmp_path, ["train", str(recipe(source=str(source_run), target={"name": "lora", "rank": 3}))] + out,
            "strategy.target.rank")
    refused(capsys, tmp_path, ["train", str(recipe(source=str(tiny_model_dir)))] + out, "is not a text-classification model")
    # another input kind
    image_run = tmp_path / "img"
    hftransfer.train(image_recipe(tiny_vit_dir, image_data, train={"num_train_epochs": 1}), output_dir=image_run)
    refused(capsys, tmp_path, ["train", str(recipe(source=str(image_run)))] + out, "is not a text-classification model")
    # another tokenizer
    words = tmp_path / "words"
    hftransfer.train(tiny_recipe_dict(word_model_dir, toy_data, "full"), output_dir=words)
    refused(capsys, tmp_path, ["train", str(recipe(source=str(words)))] + out, "another processor")
    assert not (tmp_path / "out").exists()


def test_moved_or_changed_source_is_an_error(tiny_model_dir, toy_data, source_run, tmp_path, capsys):
    source = tmp_path / "src"
    shutil.copytree(source_run, source)
    hftransfer.train(fusion(tiny_model_dir, toy_data, source), output_dir=tmp_path / "fused")
    with open(source / "config.json", "a") as f:
        f.write(" ")
    refused(capsys, tmp_path, ["predict", str(tmp_path / "fused"), "good"], "changed after")
    shutil.rmtree(source)
    refused(capsys, tmp_path, ["evaluate", str(tmp_path / "fused")], "is not there any more")


@pytest.mark.parametrize("combine", ["logits", "features"])
def test_a_fusion_run_calibrates(tiny_model_dir, toy_data, source_run, tmp_path, combine):
    import numpy as np

    hftransfer.train(fusion(tiny_model_dir, toy_data, source_run, combine=combine), output_dir=tmp_path / "fused")
    result = hftransfer.calibrate(tmp_path / "fused", tmp_path / "calibrated")
    assert result.layer.endswith("fusion")
    before = engine.split_outputs(engine.load_run(tmp_path / "fused"), "validation")
    after = engine.split_outputs(engine.load_run(tmp_path / "calibrated"), "validation")
    np.testing.assert_allclose(after.logits, before.logits / result.temperature, rtol=1e-4, atol=1e-5)
    section = result.metrics["calibration"]["validation"]
    assert section["after"]["nll"] <= section["before"]["nll"] + 1e-9
