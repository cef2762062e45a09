"""Integration tests on the real embedded MiniLM: the quickstart as a user runs it, and the
shipped recipes on ../shared/data. Marked slow; together about two minutes on 2 cores."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hftransfer.cli import main
from hftransfer.recipe import load_recipe, model_set
from hftransfer.recipe.stages import is_staged, load_staged

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (REPO / "recipes").glob("**/*.yaml") if not {"accelerate", "sources"} & set(p.parts))
SOURCES = sorted((REPO / "recipes" / "sources").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_validates_and_names_its_command(path):
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.split()[:2] == ["#", "hftransfer"] and first_line.split()[2] in ("train", "compare", "rank")
    assert f"recipes/{path.name}" in first_line
    load_staged(path) if is_staged(path) else load_recipe(path)


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_every_shipped_model_set_loads_and_names_its_use(path):
    assert f"recipes/sources/{path.name}" in path.read_text(encoding="utf-8")
    assert len(model_set(str(path), "--candidates")) >= 2


@pytest.mark.slow
def test_quickstart_transfers_and_scratch_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe's data paths are relative to the repository root
    full = tmp_path / "full"
    done = subprocess.run([sys.executable, "-m", "hftransfer", "train", "recipes/quickstart.yaml",
                           "--output-dir", str(full)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run saved to" in done.stdout
    assert main(["train", "recipes/quickstart.yaml", "strategy.name=scratch",
                 "--output-dir", str(tmp_path / "scratch")]) == 0
    full_acc = json.loads((full / "metrics.json").read_text())["test"]["accuracy"]
    scratch_acc = json.loads((tmp_path / "scratch" / "metrics.json").read_text())["test"]["accuracy"]
    assert full_acc >= 0.85
    assert scratch_acc <= full_acc - 0.15
    # The saved model predicts the sample's own label names, not LABEL_0.
    from transformers import pipeline

    out = pipeline("text-classification", model=str(full))(["the goalkeeper saved a penalty"])
    assert out[0]["label"] in {"sports", "food", "weather", "technology"}


@pytest.mark.slow
def test_quickstart_on_two_cpu_processes(tmp_path):
    """The scaling-out path a user takes first: the shipped CPU config, 2 processes over gloo."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               "recipes/accelerate/cpu-2proc.yaml", "-m", "hftransfer", "train",
               "recipes/quickstart.yaml", "--output-dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2
    assert metrics["data"]["test"] == 100
    assert metrics["test"]["accuracy"] >= 0.80


@pytest.mark.slow
@pytest.mark.shared_data
def test_sst2_label_budget_on_shared_data(shared_data, tmp_path):
    recipe = REPO / "recipes" / "sst2-full.yaml"
    assert main(["train", str(recipe), f"data.train={shared_data}/sst2/train.csv",
                 f"data.validation={shared_data}/sst2/validation.csv", "data.test=null",
                 "data.samples_per_label=150", "train.num_train_epochs=2",
                 "train.per_device_train_batch_size=16", "train.learning_rate=1e-4",
                 "train.eval_strategy=no", "train.load_best_model_at_end=false",
                 "train.save_strategy=no",
                 "train.disable_tqdm=true", "--output-dir", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["labels"] == ["negative", "positive"]
    assert metrics["data"] == {"train": 300, "validation": 872, "test": 0}
    assert "test" not in metrics
    # 300 labelled sentences fine-tuning MiniLM: well above chance (0.5); 0.78 measured.
    assert metrics["validation"]["accuracy"] >= 0.70
