"""hftransfer calibrate: a temperature fitted on validation NLL, folded into the classifier's final
layer of a new run (plain transformers / peft load it and give the calibrated scores), with
metrics before/after, a card section and a reliability diagram; bad inputs leave nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import toy_rows, write_csv
from helpers import refused, run_cli, tiny_recipe_dict, tree
from safetensors.torch import load_file
from test_image import image_data, image_recipe, tiny_vit_dir  # noqa: F401  (fixtures)
from test_multitask import mt_data, mt_recipe  # noqa: F401  (fixtures)
from test_token import ner_data, ner_recipe  # noqa: F401  (fixtures)

import hftransfer
from hftransfer import engine
from hftransfer.cards import write_cards
from hftransfer.fusion import scores

TEXTS = ["a very good film", "it was awful and cold", "the story was quite dull", "happy warm day",
         "the film was fine"]


@pytest.fixture(scope="module")
def text_runs(tiny_model_dir, toy_data, tmp_path_factory):
    """A trained text classifier, its calibrated twin (through the CLI), and the input's bytes
    before calibration."""
    base = tmp_path_factory.mktemp("calibrate-text")
    run = base / "run"
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, "full",
                                      train={"num_train_epochs": 3, "learning_rate": 3e-3}), output_dir=run)
    before = tree(run)
    out = base / "calibrated"
    from hftransfer.cli import main

    assert main(["calibrate", str(run), "--output-dir", str(out)]) == 0
    return run, out, before


@pytest.fixture(scope="module")
def lora_runs(tiny_model_dir, toy_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("calibrate-lora")
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, "lora",
                                      train={"num_train_epochs": 3, "learning_rate": 5e-3}), output_dir=base / "run")
    result = hftransfer.calibrate(base / "run", base / "calibrated")
    return base / "run", result


def _outputs(run_dir: Path, split: str) -> engine.SplitOutputs:
    return engine.split_outputs(engine.load_run(run_dir), split)


def test_labels_never_change_and_validation_nll_does_not_grow(text_runs):
    run, out, _ = text_runs
    calibration = json.loads((out / "metrics.json").read_text())["calibration"]
    t = calibration["temperature"]
    assert calibration["layer"] == "classifier" and t > 0 and abs(t - 1) > 1e-3
    for split in ("validation", "test"):
        a, b = _outputs(run, split), _outputs(out, split)
        assert np.array_equal(a.logits.argmax(-1), b.logits.argmax(-1)), split
        np.testing.assert_allclose(b.logits, a.logits / t, rtol=1e-4, atol=1e-5)
        assert calibration[split]["before"] == pytest.approx(scores.summary(a.logits, a.labels), abs=1e-6)
        assert calibration[split]["after"] == pytest.approx(scores.summary(b.logits, b.labels), abs=1e-6)
        assert calibration[split]["after"]["accuracy"] == calibration[split]["before"]["accuracy"]
    val = calibration["validation"]
    assert val["after"]["nll"] <= val["before"]["nll"] + 1e-12


def test_metrics_card_and_diagram_of_the_calibrated_run(text_runs):
    run, out, _ = text_runs
    original = json.loads((run / "metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("strategy", "task", "labels", "base_model", "params", "data"):
        assert metrics[key] == original[key], key
    calibration = metrics["calibration"]
    for split in ("validation", "test"):  # re-measured on the calibrated model
        assert metrics[split]["accuracy"] == pytest.approx(calibration[split]["after"]["accuracy"])
        assert metrics[split]["loss"] == pytest.approx(calibration[split]["after"]["nll"], abs=1e-5)
        assert metrics[split]["f1"] == pytest.approx(original[split]["f1"])
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    assert "## Calibration" in card and f"{calibration['temperature']:.4f}" in card
    assert f"| validation | after | {calibration['temperature']:.4f} |" in card
    assert "checkpoints" not in {p.name for p in out.iterdir()}
    # `hftransfer card` renders the same card from the run's files
    assert write_cards(out) and (out / "README.md").read_text() == card


def test_only_the_final_layer_changes(text_runs):
    run, out, _ = text_runs
    t = json.loads((out / "metrics.json").read_text())["calibration"]["temperature"]
    a, b = load_file(run / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        if name in ("classifier.weight", "classifier.bias"):
            torch.testing.assert_close(b[name], (a[name].double() / t).float(), rtol=0, atol=0)
        else:
            assert torch.equal(a[name], b[name]), name


def test_the_input_run_is_untouched(text_runs):
    run, _, before = text_runs
    assert tree(run) == before


def test_pipeline_scores_are_the_calibrated_ones_and_match_predict(text_runs, capsys):
    from transformers import pipeline

    run, out, _ = text_runs
    kit = {}
    for name, path in (("run", run), ("calibrated", out)):
        rc, stdout, _ = run_cli(capsys, "predict", path, "--json", *TEXTS)
        assert rc == 0
        kit[name] = json.loads(stdout)
    plain = [r for r in pipeline("text-classification", model=str(out))(TEXTS)]
    assert [r["label"] for r in plain] == [r["label"] for r in kit["calibrated"]]
    for p, k in zip(plain, kit["calibrated"]):
        assert abs(p["score"] - k["score"]) < 1e-5
    # same labels as the uncalibrated run, other (calibrated) probabilities
    assert [r["label"] for r in kit["run"]] == [r["label"] for r in kit["calibrated"]]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(kit["run"], kit["calibrated"])) > 1e-4
    t = json.loads((out / "metrics.json").read_text())["calibration"]["temperature"]
    model = engine.load_run(run).model
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(run)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = (model(**enc).logits.double() / t).softmax(-1).max(-1).values
    for p, e in zip(plain, expected.tolist()):
        assert abs(p["score"] - e) < 1e-5


def test_an_adapter_run_scales_the_head_saved_beside_the_adapter(lora_runs, capsys):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    run, result = lora_runs
    out = result.run_dir
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    t = result.temperature
    a, b = load_file(run / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    changed = {n for n in a if not torch.equal(a[n], b[n])}
    assert changed == {"base_model.model.classifier.weight", "base_model.model.classifier.bias"}
    for name in changed:
        torch.testing.assert_close(b[name], (a[name].double() / t).float(), rtol=0, atol=0)
    # loads the way the card says, and gives hftransfer predict's (calibrated) scores
    base_path = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForSequenceClassification.from_pretrained(base_path, config=AutoConfig.from_pretrained(out))
    pipe = pipeline("text-classification", model=PeftModel.from_pretrained(base, str(out)),
                    tokenizer=AutoTokenizer.from_pretrained(out))
    rc, stdout, _ = run_cli(capsys, "predict", out, "--json", *TEXTS)
    assert rc == 0
    for p, k in zip(pipe(TEXTS), json.loads(stdout)):
        assert p["label"] == k["label"] and abs(p["score"] - k["score"]) < 1e-5
    v = result.metrics["calibration"]["validation"]
    assert v["after"]["nll"] <= v["before"]["nll"] + 1e-12 and v["after"]["accuracy"] == v["before"]["accuracy"]
    for split in ("validation", "test"):
        x, y = _outputs(run, split), _outputs(out, split)
        assert np.array_equal(x.logits.argmax(-1), y.logits.argmax(-1))


def test_a_token_classification_run_calibrates_per_word(tiny_model_dir, ner_data, tmp_path):  # noqa: F811
    recipe = ner_recipe(tiny_model_dir, ner_data, "full")
    recipe["train"]["num_train_epochs"] = 1
    hftransfer.train(recipe, output_dir=tmp_path / "run")
    result = hftransfer.calibrate(tmp_path / "run", tmp_path / "calibrated")
    original = json.loads((tmp_path / "run" / "metrics.json").read_text())
    calibration = result.metrics["calibration"]
    val = calibration["validation"]
    assert val["after"]["nll"] <= val["before"]["nll"] + 1e-12
    for split in ("validation", "test"):
        x, y = _outputs(tmp_path / "run", split), _outputs(tmp_path / "calibrated", split)
        assert len(x.labels) == sum(x.words) > 24  # one row per labelled word
        assert np.array_equal(x.logits.argmax(-1), y.logits.argmax(-1))
        assert calibration[split]["after"]["accuracy"] == calibration[split]["before"]["accuracy"]
        for key in ("f1", "precision", "recall"):  # entity metrics: the same labels, the same scores
            assert result.metrics[split][key] == pytest.approx(original[split][key])


def test_an_image_run_calibrates(tiny_vit_dir, image_data, tmp_path):  # noqa: F811
    hftransfer.train(image_recipe(tiny_vit_dir, image_data, "full"), output_dir=tmp_path / "run")
    result = hftransfer.calibrate(tmp_path / "run", tmp_path / "calibrated")
    assert result.layer == "classifier"
    val = result.metrics["calibration"]["validation"]
    assert val["after"]["nll"] <= val["before"]["nll"] + 1e-12
    x, y = _outputs(tmp_path / "run", "test"), _outputs(tmp_path / "calibrated", "test")
    assert np.array_equal(x.logits.argmax(-1), y.logits.argmax(-1))
    assert (tmp_path / "calibrated" / "reliability.png").is_file()


def _copy_with_validation(run: Path, dest: Path, rows: list[tuple[str, str]]) -> Path:
    """A copy of ``run`` whose recipe reads another validation file."""
    shutil.copytree(run, dest)
    data = write_csv(dest.parent / f"{dest.name}-validation.csv", rows)
    recipe = yaml.safe_load((dest / "recipe.yaml").read_text())
    recipe["data"]["validation"] = str(data)
    (dest / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return dest


@pytest.mark.parametrize("rows", [toy_rows(1, 5), [(t, "positive") for t, _ in toy_rows(6, 7)]],
                         ids=["one-example", "one-class"])
def test_a_tiny_or_one_class_validation_split_still_fits(text_runs, tmp_path, rows):
    run = _copy_with_validation(text_runs[0], tmp_path / "run", rows)
    result = hftransfer.calibrate(run, tmp_path / "calibrated")
    val = result.metrics["calibration"]["validation"]
    assert np.isfinite(result.temperature) and result.temperature > 0
    assert val["after"]["nll"] <= val["before"]["nll"] + 1e-12
    b = load_file(tmp_path / "calibrated" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in b.values())


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_are_one_line_and_leave_nothing(text_runs, tmp_path, capsys, tiny_model_dir):
    run, out, _ = text_runs
    root = tmp_path
    refused(capsys, root, ["calibrate", tiny_model_dir, "--output-dir", root / "x"], "not a finished hftransfer run")
    refused(capsys, root, ["calibrate", root / "missing", "--output-dir", root / "x"], "not a directory")
    # the output exists: refused without --overwrite, and the input run itself is never a target
    before = tree(out)
    rc, _, err = run_cli(capsys, "calibrate", run, "--output-dir", out)
    assert rc == 2 and "already exists" in err and "--overwrite" in err and tree(out) == before
    rc, _, err = run_cli(capsys, "calibrate", run, "--output-dir", run, "--overwrite")
    assert rc == 2 and "never modified" in err
    rc, _, err = run_cli(capsys, "calibrate", run, "--output-dir", run / "inside")
    assert rc == 2 and "never modified" in err and not (run / "inside").exists()
    assert not list(tmp_path.glob(".*partial"))
    rc, _, err = run_cli(capsys, "calibrate", run)
    assert rc == 2 and "--output-dir" in err


def test_overwrite_replaces_a_calibrated_run(text_runs, tmp_path, capsys):
    run = text_runs[0]
    shutil.copytree(text_runs[1], tmp_path / "again")
    rc, out, _ = run_cli(capsys, "calibrate", run, "--output-dir", tmp_path / "again", "--overwrite")
    assert rc == 0 and f"calibrated run saved to {tmp_path / 'again'}" in out
    summary = json.loads(out[out.index("{"):])
    assert set(summary) == {"temperature", "layer", "validation", "test"}
    assert set(summary["validation"]) == {"before", "after"}


def test_non_finite_logits_are_refused(text_runs, tmp_path, capsys):
    from safetensors.torch import save_file

    run = tmp_path / "broken"
    shutil.copytree(text_runs[0], run)
    weights = load_file(run / "model.safetensors")
    weights["classifier.bias"] = torch.full_like(weights["classifier.bias"], float("nan"))
    save_file(weights, run / "model.safetensors", metadata={"format": "pt"})
    refused(capsys, tmp_path, ["calibrate", run, "--output-dir", tmp_path / "out"], "non-finite logits")


def test_a_token_run_without_validation_data_is_refused(tiny_model_dir, ner_data, tmp_path, capsys):  # noqa: F811
    recipe = ner_recipe(tiny_model_dir, ner_data, "full")
    del recipe["data"]["validation"]
    recipe["data"]["validation_fraction"] = 0
    recipe["train"].update(max_steps=2)
    hftransfer.train(recipe, output_dir=tmp_path / "run")
    refused(capsys, tmp_path, ["calibrate", tmp_path / "run", "--output-dir", tmp_path / "out"],
            "no validation split", "data.validation", "retrain")


def test_a_multi_task_run_is_refused(tiny_model_dir, mt_data, tmp_path, capsys):  # noqa: F811
    recipe = mt_recipe(tiny_model_dir, mt_data)
    recipe["train"]["max_steps"] = 2
    hftransfer.train(recipe, output_dir=tmp_path / "run")
    refused(capsys, tmp_path, ["calibrate", tmp_path / "run", "--output-dir", tmp_path / "out"],
            "multi-task run", "single-task runs")


def test_help_lists_calibrate(capsys):
    rc, out, _ = run_cli(capsys, "calibrate", "--help")
    assert rc == 0 and "--output-dir" in out and "temperature" in out
