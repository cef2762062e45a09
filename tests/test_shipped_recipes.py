"""The recipes travel in the package: `hftransfer ls` lists them and `hftransfer recipe` writes one
out, from any directory and from an installed wheel (not only a checkout)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from hftransfer.recipe import load_recipe
from hftransfer.recipe.shipped import RECIPES, find, recipe_text, shipped_recipes

REPO = Path(__file__).resolve().parents[1]


def test_the_checkouts_recipes_folder_is_the_packaged_one():
    # One set of files: what a checkout trains is what a wheel ships.
    assert (REPO / "recipes").resolve() == RECIPES == REPO / "hftransfer" / "recipes"
    names = {r.name for r in shipped_recipes()}
    assert {"quickstart", "sst2-full", "sst2-compare", "sources/minilm-family", "accelerate/cpu-2proc"} <= names


def test_ls_lists_the_shipped_recipes_from_any_directory(work, capsys):
    rc, out, err = run_cli(capsys, "ls")
    assert rc == 0, err
    recipes = out[out.index("recipes ("):]
    for recipe in shipped_recipes():
        line = next(line for line in recipes.splitlines() if line.split()[:1] == [recipe.name])
        assert recipe.summary in line and recipe.summary
    assert "recipes in ./recipes" not in out  # the user has none here


def test_every_summary_is_a_sentence_of_its_opening_comment():
    for recipe in shipped_recipes():
        assert not recipe.summary.startswith(("hftransfer ", "accelerate launch")), recipe.name
        assert len(recipe.summary) <= 100, recipe.name
    assert find("quickstart").summary.startswith("Fine-tunes the embedded MiniLM")
    assert find("sst2-full-l2sp").summary.endswith("(L2-SP, Li et al. 2018).")


def test_recipe_writes_one_out_that_validates_from_elsewhere(work, capsys):
    rc, out, err = run_cli(capsys, "recipe", "quickstart", "--to", "mine.yaml")
    assert rc == 0, err
    assert "hftransfer train mine.yaml" in out
    text = (work / "mine.yaml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# hftransfer train mine.yaml"
    recipe = load_recipe(work / "mine.yaml")
    # The sample data is named where it is installed, so the recipe trains from this directory.
    assert all(Path(path).is_file() for path in (recipe.data.train, recipe.data.validation, recipe.data.test))
    rc, out, err = run_cli(capsys, "validate", "mine.yaml")
    assert rc == 0, err


def test_recipe_prints_without_to_and_accepts_file_names(work, capsys):
    rc, out, _ = run_cli(capsys, "recipe", "recipes/sst2-lora.yaml")
    assert rc == 0
    assert yaml.safe_load(out)["strategy"]["name"] == "lora"
    assert out == recipe_text(find("sst2-lora"))
    rc, out, _ = run_cli(capsys, "recipe", "accelerate/cpu-2proc", "--to", ".")
    assert rc == 0 and (work / "cpu-2proc.yaml").is_file()
    assert "accelerate launch --config_file cpu-2proc.yaml" in out


def test_recipe_refuses_to_replace_a_file_and_names_unknown_recipes(work, capsys):
    (work / "mine.yaml").write_text("mine\n")
    rc, _, err = run_cli(capsys, "recipe", "quickstart", "--to", "mine.yaml")
    assert rc == 2 and err.startswith("error:") and "--overwrite" in err and len(err.splitlines()) == 1
    assert (work / "mine.yaml").read_text() == "mine\n"
    rc, _, err = run_cli(capsys, "recipe", "quickstart", "--to", "mine.yaml", "--overwrite")
    assert rc == 0 and "name: quickstart" in (work / "mine.yaml").read_text()
    rc, _, err = run_cli(capsys, "recipe", "nope")
    assert rc == 2 and "quickstart" in err and len(err.splitlines()) == 1
    rc, _, err = run_cli(capsys, "recipe", "quickstart", "--to", "missing/dir/x.yaml")
    assert rc == 2 and "does not exist" in err
    assert sorted(p.name for p in work.iterdir()) == ["mine.yaml"]  # nothing half-written


def test_ls_also_lists_the_users_own_recipes_folder(work, capsys):
    (work / "recipes").mkdir()
    (work / "recipes" / "own.yaml").write_text("# my own experiment\nname: own\n")
    rc, out, _ = run_cli(capsys, "ls")
    assert rc == 0
    assert "recipes in ./recipes" in out and "own.yaml" in out and "my own experiment" in out


@pytest.mark.slow
def test_from_an_installed_wheel_ls_lists_recipes_and_one_trains(tmp_path):
    """A wheel installed outside the repository: `ls` lists the recipes, `recipe` writes the
    quickstart out, and it trains (a few steps) from a directory that has no checkout."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "hftransfer", source / "hftransfer",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(source)], check=True, capture_output=True)
    wheel = next(dist.glob("hftransfer-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies come from this environment (a path entry, so its editable hftransfer is
    # not seen); hftransfer itself only from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-m", "hftransfer", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=600)

    where = subprocess.run([str(python), "-c", "import hftransfer; print(hftransfer.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout
    listed = cli("ls")
    assert listed.returncode == 0, listed.stderr
    for name in ("quickstart", "sst2-full", "accelerate/cpu-2proc"):
        assert f"  {name} " in listed.stdout
    written = cli("recipe", "quickstart", "--to", "quickstart.yaml")
    assert written.returncode == 0, written.stderr
    assert str(site) in (elsewhere / "quickstart.yaml").read_text()  # the installed sample data
    trained = cli("train", "quickstart.yaml", "train.max_steps=4", "--output-dir", "run")
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"accuracy"}
