"""hftransfer compare: the grid (the same data for every arm of a budget and seed), running it,
resuming it, its results files, the scratch baseline in each cell's card, and the user errors."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import assert_cli_error, run_cli, tiny_recipe_dict, user_error

from hftransfer.comparison import runner
from hftransfer.comparison.grid import build_grid, parse_budgets, schedule
from hftransfer.resources import peak_rss_mb, reset_peak_rss


@pytest.fixture
def compare_recipe(tiny_model_dir, toy_data):
    """The tiny recipe with model selection on validation (a checkpoint per epoch)."""
    return tiny_recipe_dict(tiny_model_dir, toy_data, "full", train={
        "learning_rate": 5e-3, "eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
        "metric_for_best_model": "accuracy", "save_total_limit": 1})


def _run(recipe, out, **kw):
    args = dict(strategies="full,feature-extraction", budgets="4,all", seeds=2, min_steps=6, progress=False)
    args.update(kw)
    return runner.compare(recipe, output_dir=out, **args)


def _scores(results):
    return {r["cell"]: (r["validation"], r.get("test"), r["n_train"], r["steps"]) for r in results["cells"]}


def test_every_arm_of_a_budget_and_seed_gets_the_same_data(compare_recipe):
    grid = build_grid(compare_recipe, strategies="full,lora,feature-extraction", budgets="4,16,all", seeds=2)
    assert [a.name for a in grid.arms] == ["scratch", "full", "lora", "feature-extraction"]
    assert grid.class_counts == {"negative": 32, "positive": 32}
    for budget in grid.budgets:
        for seed in grid.seeds:
            datas = [grid.cell_recipe(c)["data"] for c in grid.cells() if (c.budget, c.seed) == (budget, seed)]
            assert len(datas) == 4 and all(d == datas[0] for d in datas)
            assert datas[0]["samples_per_label"] == budget and datas[0]["seed"] == seed
            assert datas[0]["validation"] == compare_recipe["data"]["validation"]  # never shrinks
    # Seed-major order: a comparison stopped early holds whole seeds.
    assert [c.seed for c in grid.cells()] == [0] * 12 + [1] * 12


def test_each_strategy_keeps_its_own_learning_rate_unless_told(compare_recipe):
    grid = build_grid(compare_recipe, strategies="full,lora,feature-extraction", budgets="all", seeds=1,
                      overrides=["lora:train.learning_rate=0.002"])
    assert grid.setups["full"].values["learning_rate"] == 5e-3  # the recipe's own strategy: as written
    assert grid.setups["scratch"].values["learning_rate"] == 5e-3  # same defaults as full: the recipe's
    assert grid.setups["lora"].values["learning_rate"] == 0.002
    fe = grid.setups["feature-extraction"].values
    assert fe["learning_rate"] == 5e-4 and not fe.get("load_best_model_at_end")
    assert any(n.startswith("feature-extraction:") and "train.learning_rate" in n for n in grid.notes)


def test_small_budgets_train_at_least_min_steps_and_evaluate_as_often_as_the_recipe_says():
    values = {"per_device_train_batch_size": 16, "num_train_epochs": 3, "eval_strategy": "epoch",
              "save_strategy": "epoch"}
    assert schedule(values, 32, 50) == {"max_steps": 51, "eval_strategy": "steps", "eval_steps": 17,
                                        "save_strategy": "steps", "save_steps": 17}
    assert schedule(values, 512, 50) == {}  # 96 steps already
    assert schedule(values, 32, 0) == {}
    assert schedule({**values, "max_steps": 10}, 32, 50) == {}  # the recipe chose its steps
    assert schedule({"per_device_train_batch_size": 8, "num_train_epochs": 2}, 8, 5) == {"max_steps": 6}
    assert parse_budgets("64, 16,all,16") == [16, 64, None]


def test_compare_runs_resumes_and_reports(compare_recipe, tmp_path):
    out = tmp_path / "cmp"
    first = _run(compare_recipe, out)
    assert first.trained == 12
    results = json.loads((out / "results.json").read_text())
    assert results == first.results
    assert len(results["cells"]) == 12 and results["comparison"]["baseline"] == "scratch"
    assert results["comparison"]["budgets"] == [4, "all"] and results["comparison"]["seeds"] == [0, 1]
    by_cell = {r["cell"]: r for r in results["cells"]}
    assert by_cell["cells/full/4/seed-0"]["n_train"] == 8
    assert by_cell["cells/full/all/seed-1"]["n_train"] == 64
    assert by_cell["cells/full/4/seed-0"]["steps"] >= 6  # --min-steps on 8 examples
    for row in results["cells"]:
        assert row["wall_s"] > 0 and row["peak_rss_mb"] > 0 and row["trainable_params"] > 0
    assert by_cell["cells/feature-extraction/4/seed-0"]["trainable_params"] < by_cell["cells/full/4/seed-0"]["trainable_params"]
    with open(out / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 12 and float(table[1]["test_accuracy"]) == results["cells"][1]["test"]["accuracy"]

    # Each cell's metrics and card carry the scratch run of its budget and seed.
    cell = out / "cells/full/4/seed-1"
    baseline = json.loads((cell / "metrics.json").read_text())["baseline"]
    scratch = json.loads((out / "cells/scratch/4/seed-1/metrics.json").read_text())
    assert baseline["strategy"] == "scratch" and baseline["test"] == scratch["test"]
    assert (cell / baseline["run"]).resolve() == (out / "cells/scratch/4/seed-1").resolve()
    assert "scratch" in (cell / "README.md").read_text()

    # A rerun trains nothing; a cell that was lost (or cut short) is trained again, identically.
    assert _run(compare_recipe, out).trained == 0
    shutil.rmtree(out / "cells/full/all/seed-1")
    again = _run(compare_recipe, out)
    assert again.trained == 1
    assert _scores(again.results) == _scores(results)

    # More seeds extend the same comparison.
    more = _run(compare_recipe, out, seeds=3, strategies="full", budgets="4")
    assert more.trained == 2  # seed 2 of full and of scratch
    assert [r["cell"] for r in more.results["cells"]][-2:] == ["cells/scratch/4/seed-2", "cells/full/4/seed-2"]


def test_a_cli_compare_and_report(compare_recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(compare_recipe))
    rc, out, err = run_cli(capsys, "compare", path, "--strategies", "lora", "--label-budgets", "4",
                           "--seeds", "1", "--min-steps", "2", "train.num_train_epochs=1")
    assert rc == 0, err
    assert "comparison in runs/tiny-full-compare: 2 cells (2 trained now)" in out
    results = json.loads((tmp_path / "runs/tiny-full-compare/results.json").read_text())
    assert [r["arm"] for r in results["cells"]] == ["scratch", "lora"]
    rc, out, err = run_cli(capsys, "report", "runs/tiny-full-compare")
    assert rc == 0, err


@pytest.mark.parametrize("kwargs, needles", [
    ({"strategies": "full,lorra"}, ["unknown strategy 'lorra'", "--strategies", "lora"]),
    ({"strategies": "multitask"}, ["multitask"]),
    ({"budgets": "4,40"}, ["40 examples per label", "class 'negative' has (32", "largest budget", "32"]),
    ({"budgets": "0"}, ["leaves every class with zero examples"]),
    ({"budgets": "a few"}, ["'a few' is not a number"]),
    ({"seeds": 0}, ["--seeds", "1 or more"]),
    ({"sources": "/nonexistent/model"}, ["arm /nonexistent/model", "/nonexistent/model"]),
    ({"overrides": ["lroa:train.learning_rate=1"]}, ["'lroa'", "arms: scratch, full"]),
    ({"backend": "local", "address": "127.0.0.1:1"}, ["--address", "--backend ray"]),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(compare_recipe, tmp_path, kwargs, needles):
    out = tmp_path / "cmp"
    args = dict(strategies="full", budgets="4", seeds=1, progress=False)
    args.update(kwargs)
    user_error(*needles, call=lambda: runner.compare(compare_recipe, output_dir=out, **args))
    assert not out.exists()


def test_a_directory_of_another_recipe_is_refused(compare_recipe, tmp_path):
    out = tmp_path / "cmp"
    _run(compare_recipe, out, strategies="feature-extraction", budgets="4", seeds=1, scratch=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    other = {**compare_recipe, "train": {**compare_recipe["train"], "learning_rate": 1e-3}}
    user_error("another recipe", "train.learning_rate", call=lambda: _run(other, out, strategies="feature-extraction",
                                                                           budgets="4", seeds=1, scratch=False))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    user_error("not a comparison", call=lambda: _run(compare_recipe, tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_recipes_compare_cannot_take(compare_recipe, tmp_path, tiny_model_dir, toy_data):
    staged = {"name": "s", "model": {"name_or_path": str(tiny_model_dir)},
              "stages": [{"name": "a", "task": compare_recipe["task"], "data": compare_recipe["data"]}]}
    user_error("staged", call=lambda: runner.compare(staged, output_dir=tmp_path / "x"))
    token = tiny_recipe_dict(tiny_model_dir, toy_data, "full")
    conll = tmp_path / "ner.conll"
    conll.write_text("EU B-ORG\nrejects O\n\nPeter B-PER\nsays O\n\n")
    token["task"] = {"type": "token-classification"}
    token["data"] = {"train": str(conll), "validation": str(conll)}
    user_error("examples per label", "--label-budgets all",
               call=lambda: runner.compare(token, budgets="4", output_dir=tmp_path / "y", progress=False))


def test_ray_that_is_missing_or_unreachable_is_one_clear_error(compare_recipe, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    user_error("needs Ray", "pip install 'hftransfer[ray]'",
               call=lambda: _run(compare_recipe, tmp_path / "a", backend="ray", seeds=1, budgets="4"))


def test_cli_errors_are_one_line(compare_recipe, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(compare_recipe))
    rc, out, err = run_cli(capsys, "compare", path, "--strategies", "full", "--seeds", "0",
                           "--output-dir", tmp_path / "o")
    assert_cli_error(rc, err, "--seeds")
    rc, out, err = run_cli(capsys, "report", tmp_path / "nothing-here")
    assert_cli_error(rc, err, "nothing-here")


def test_peak_memory_is_counted_per_run():
    reset_peak_rss()
    base = peak_rss_mb()
    block = bytearray(300 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    assert peak_rss_mb() > base + 250
    del block
    reset_peak_rss()
    assert peak_rss_mb() < base + 100


def test_the_shipped_compare_recipe_runs_its_own_command(tiny_model_dir, toy_data, tmp_path):
    """recipes/sst2-compare.yaml opens with its command: its arms train (tiny model and data)."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "sst2-compare.yaml"
    command = recipe.read_text().splitlines()[0].removeprefix("# ").split()
    assert command[:3] == ["hftransfer", "compare", "recipes/sst2-compare.yaml"]
    flags = dict(zip(command[3::2], command[4::2]))
    overrides = [f"model.name_or_path={tiny_model_dir}", "train.num_train_epochs=1",
                 *(f"data.{s}={toy_data / f'{s}.csv'}" for s in ("train", "validation", "test"))]
    result = runner.compare(recipe, strategies=flags["--strategies"], budgets="4", seeds=1, min_steps=2,
                            overrides=overrides, output_dir=tmp_path / "cmp", progress=False)
    assert [r["arm"] for r in result.results["cells"]] == ["scratch", *flags["--strategies"].split(",")]
    assert set(flags) == {"--strategies", "--label-budgets", "--seeds"}
