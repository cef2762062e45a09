"""Weight-space fusion (``interpolate``, ``soup``) on tiny runs: the ends of the interpolation
are the runs themselves, α and soups are chosen on validation, results are plain models that
``transformers.pipeline`` loads, and bad inputs fail with one line and write nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_rows, write_csv
from helpers import assert_same_predictions, refused, run_cli, run_without_the_kit, tiny_recipe_dict, tree
from safetensors.torch import load_file

import hftransfer
from hftransfer import engine

TEXTS = ["a superb warm story", "the film was grim and cold", "it was fine", "a dull day"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, toy_data) -> dict[str, Path]:
    """Finished runs of one source (two fine-tuned seeds, a linear probe, a LoRA adapter) and the
    misfits the errors are about (another source, other labels, a mean-pooled probe, other data)."""
    root = tmp_path_factory.mktemp("weights")
    out = {}

    def train(name, kind, model_dir=tiny_model_dir, data=toy_data, **sections):
        recipe = tiny_recipe_dict(model_dir, data, kind, **sections)
        out[name] = hftransfer.train(recipe, output_dir=root / "runs" / name).run_dir

    fast = {"num_train_epochs": 6, "learning_rate": 3e-3}
    train("full", "full", train=fast)
    train("full-seed1", "full", train={**fast, "seed": 1})
    train("probe", "feature-extraction", strategy={"pooling": "cls"},
          train={"num_train_epochs": 30, "learning_rate": 1e-2})
    train("lora", "lora", train={"num_train_epochs": 6, "learning_rate": 5e-3})
    # Misfits: the same network from another folder, another label set, a probe with mean pooling
    # (an extra averaging layer: another shape).
    other_model = root / "other-source"
    shutil.copytree(tiny_model_dir, other_model)
    train("other-source", "full", model_dir=other_model, train={"num_train_epochs": 1})
    relabelled = root / "relabelled"
    for split, n, seed in (("train", 64, 0), ("validation", 16, 1), ("test", 16, 2)):
        write_csv(relabelled / f"{split}.csv", [(t, "up" if label == "positive" else "down")
                                                for t, label in toy_rows(n, seed)])
    train("other-labels", "full", data=relabelled, train={"num_train_epochs": 1})
    train("mean-probe", "feature-extraction", strategy={"pooling": "mean"}, train={"num_train_epochs": 1})
    other_data = root / "other-data"
    shutil.copytree(toy_data, other_data)
    train("other-data", "full", data=other_data, train={"num_train_epochs": 1})
    return out


def logits(run_dir: Path, split: str = "validation") -> np.ndarray:
    return engine.split_outputs(engine.load_run(run_dir), split).logits


# --------------------------------------------------------------------------- interpolate


def test_the_ends_of_the_interpolation_are_the_runs(runs, tmp_path):
    one = hftransfer.interpolate(runs["full"], runs["probe"], output_dir=tmp_path / "a1", alpha=1)
    zero = hftransfer.interpolate(runs["full"], runs["probe"], output_dir=tmp_path / "a0", alpha=0)
    assert one.metrics["interpolation"]["chosen_alpha"] == 1.0
    assert zero.metrics["interpolation"]["chosen_alpha"] == 0.0
    np.testing.assert_allclose(logits(one.run_dir), logits(runs["full"]), atol=1e-5)
    np.testing.assert_allclose(logits(zero.run_dir), logits(runs["probe"]), atol=1e-5)
    # The α = 1 model is the fine-tuned run's weights, bit for bit.
    saved, source = load_file(str(one.run_dir / "model.safetensors")), load_file(str(runs["full"] / "model.safetensors"))
    assert saved.keys() == source.keys() and all(torch.equal(saved[k], source[k]) for k in saved)


def test_alpha_is_the_validation_argmax_and_the_model_is_a_plain_one(runs, work, capsys):
    before = tree(runs["full"].parent)
    rc, out, err = run_cli(capsys, "interpolate", runs["full"], "--start", runs["probe"],
                           "--output-dir", "wise")
    assert rc == 0, err
    assert "<- chosen" in out
    run = work / "wise"
    metrics = json.loads((run / "metrics.json").read_text())
    wise = metrics["interpolation"]
    assert [row["alpha"] for row in wise["alphas"]] == pytest.approx([i / 10 for i in range(11)])
    accuracies = [row["validation"]["accuracy"] for row in wise["alphas"]]
    best = max(accuracies)
    assert wise["chosen_alpha"] == max(row["alpha"] for row in wise["alphas"]
                                       if row["validation"]["accuracy"] == best)  # ties: larger α
    assert metrics["validation"]["accuracy"] == pytest.approx(best)
    assert set(metrics["test"]) >= {"accuracy", "f1"}
    assert metrics["labels"] == ["negative", "positive"] and metrics["strategy"] == "full"
    assert (wise["start"], wise["end"]) == (str(runs["probe"]), str(runs["full"]))
    assert tree(runs["full"].parent) == before  # the inputs are untouched
    # A plain model: its own files, a card saying what it is, loads with transformers.pipeline
    # in a process without the kit, and predicts what `hftransfer predict` predicts.
    assert not (run / "adapter_config.json").exists() and (run / "model.safetensors").is_file()
    card = (run / "README.md").read_text()
    assert "WiSE-FT interpolation" in card and f"α = {wise['chosen_alpha']:g}" in card
    rc, out, err = run_cli(capsys, "predict", run, "--json", *TEXTS)
    assert rc == 0, err
    plain = run_without_the_kit(
        "import json\nfrom transformers import pipeline\n"
        f"clf = pipeline('text-classification', model={str(run)!r}, device='cpu')\n"
        f"print(json.dumps([clf(t)[0] for t in {TEXTS!r}]))\n", cwd=work)
    assert_same_predictions(plain, json.loads(out))
    rc, out, err = run_cli(capsys, "evaluate", run, "--split", "test")
    assert rc == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_adapter_runs_interpolate_by_the_adapter_scale(runs, tmp_path):
    one = hftransfer.interpolate(runs["lora"], output_dir=tmp_path / "a1", alpha=1)
    zero = hftransfer.interpolate(runs["lora"], output_dir=tmp_path / "a0", alpha=0)
    np.testing.assert_allclose(logits(one.run_dir), logits(runs["lora"]), atol=1e-5)
    # α = 0: the base model with the run's own head (the adapter at scale 0).
    base = engine.load_run(runs["lora"])
    with torch.no_grad():
        for name, param in base.model.named_parameters():
            if "lora_B" in name:  # ΔW = B·A = 0; the trained head stays
                param.zero_()
    np.testing.assert_allclose(logits(zero.run_dir), engine.split_outputs(base).logits, atol=1e-5)
    for result in (one, zero):
        recipe = hftransfer.load_recipe(result.run_dir / "recipe.yaml")
        assert recipe.strategy_name == "full"  # a plain model now
        assert result.metrics["interpolation"]["end_strategy"] == "lora"
        assert result.metrics["interpolation"]["adapter_merged"] is True
    # With a probe as the start, α = 0 is the probe.
    probe = hftransfer.interpolate(runs["lora"], runs["probe"], output_dir=tmp_path / "p0", alpha=0)
    np.testing.assert_allclose(logits(probe.run_dir), logits(runs["probe"]), atol=1e-5)


# --------------------------------------------------------------------------- soup


def test_a_uniform_soup_of_one_run_twice_is_the_run(runs, tmp_path):
    result = hftransfer.soup([runs["full"], runs["full"]], output_dir=tmp_path / "soup", kind="uniform")
    saved, source = load_file(str(result.run_dir / "model.safetensors")), load_file(str(runs["full"] / "model.safetensors"))
    assert saved.keys() == source.keys() and all(torch.equal(saved[k], source[k]) for k in saved)
    np.testing.assert_allclose(logits(result.run_dir), logits(runs["full"]), atol=1e-6)
    assert result.metrics["soup"]["kind"] == "uniform" and len(result.metrics["soup"]["used"]) == 2


def test_the_greedy_soup_is_at_least_as_good_as_its_best_member(runs, work, capsys):
    before = tree(runs["full"].parent)
    members = [runs["full"], runs["full-seed1"], runs["lora"]]
    rc, out, err = run_cli(capsys, "soup", *members, "--output-dir", "soup")
    assert rc == 0, err
    assert "greedy soup" in out and "uniform soup" in out
    metrics = json.loads((work / "soup" / "metrics.json").read_text())
    soup = metrics["soup"]
    best = max(m["validation_accuracy"] for m in soup["members"])
    assert soup["kind"] == "greedy"
    assert soup["greedy"]["validation"]["accuracy"] >= best  # by construction
    assert 0 <= soup["uniform"]["validation"]["accuracy"] <= 1 and len(soup["uniform"]["used"]) == 3
    assert soup["used"] == soup["greedy"]["used"]
    first = max(soup["members"], key=lambda m: m["validation_accuracy"])["run"]
    assert soup["used"][0] == first  # the greedy soup starts from the best run
    assert metrics["validation"]["accuracy"] == pytest.approx(soup["greedy"]["validation"]["accuracy"])
    assert soup["adapters_merged"] is True and "test" in metrics
    assert tree(runs["full"].parent) == before
    assert "greedy model soup" in (work / "soup" / "README.md").read_text()
    assert_same_predictions(hftransfer.predict(work / "soup", TEXTS),
                            run_without_the_kit(
                                "import json\nfrom transformers import pipeline\n"
                                f"clf = pipeline('text-classification', model={str(work / 'soup')!r}, device='cpu')\n"
                                f"print(json.dumps([clf(t)[0] for t in {TEXTS!r}]))\n", cwd=work))


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("argv, needles", [
    (["interpolate", "{full}", "--start", "{probe}", "--alpha", "1.5"], ["--alpha", "outside [0, 1]"]),
    (["interpolate", "{full}", "--start", "{probe}", "--alpha", "nan"], ["--alpha", "outside [0, 1]"]),
    (["interpolate", "{full}", "--start", "{probe}", "--alphas", "0,x,1"], ["--alphas", "'x' is not a number"]),
    (["interpolate", "{full}", "--start", "{probe}", "--alphas", "0,0.5,2"], ["--alphas", "outside [0, 1]"]),
    (["interpolate", "{full}", "--start", "{probe}", "--alphas", "0,0.5,0.5"], ["repeats"]),
    (["interpolate", "{full}"], ["probe of the same source", "partial-freeze", "strategy.name=feature-extraction"]),
    (["interpolate", "{full}", "--start", "{mean-probe}"],
     ["different shapes", "encoder.layer.2", "strategy.pooling=cls"]),
    (["interpolate", "{full}", "--start", "{other-labels}"], ["labels", "'up'"]),
    (["interpolate", "{full}", "--start", "{probe}", "--output-dir", "{full}", "--overwrite"],
     ["overlaps the input run"]),
    (["soup", "{full}"], ["at least 2 runs"]),
    (["soup", "{full}", "{other-source}"], ["trained from", "one source model"]),
    (["soup", "{full}", "{other-labels}"], ["labels", "same label set"]),
    (["soup", "{full}", "{mean-probe}"], ["different shapes"]),
    (["soup", "{full}", "{other-data}"], ["scored on different examples", "data.validation"]),
    (["soup", "{full}", "{full-seed1}", "--output-dir", "{full}/soup"], ["overlaps the input run"]),
])
def test_bad_inputs_fail_with_one_line_and_write_nothing(runs, work, capsys, argv, needles):
    argv = [a.format(**runs) for a in argv]
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(work / "out")]
    inputs = runs["full"].parent.parent
    before = tree(inputs)
    refused(capsys, work.parent, argv, *needles)
    assert tree(inputs) == before  # nothing written into (or next to) the inputs either
    assert not (work / "out").exists()
