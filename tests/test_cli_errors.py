"""The command line under user mistakes: one ``error:`` line on stderr, exit code 2, no traceback,
nothing written, and an existing run directory never replaced without ``--overwrite``.

Most cases call ``hftransfer.cli.main`` in-process; a few run ``python -m hftransfer`` as real
subprocesses (started together, so they cost one interpreter start-up) to prove what a user
sees in a terminal.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import assert_cli_error, mark_as_kit_made, run_cli, tree

# --------------------------------------------------------------------------- helpers


def recipe_dict(model_dir: Path, toy_data: Path, **sections) -> dict:
    recipe = {
        "name": "cli",
        "model": {"name_or_path": str(model_dir)},
        "task": {"type": "text-classification"},
        "data": {"train": str(toy_data / "train.csv"),
                 "validation": str(toy_data / "validation.csv"),
                 "test": str(toy_data / "test.csv")},
        "strategy": {"name": "full"},
        "train": {"num_train_epochs": 1, "per_device_train_batch_size": 32, "save_strategy": "no",
                  "disable_tqdm": True},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def fake_run(path: Path) -> Path:
    """A finished run of the kit (it carries the kit's marker), with contents we can recognise
    later."""
    path.mkdir(parents=True)
    mark_as_kit_made(path, "finished", ["recipe.yaml", "metrics.json", "model.safetensors", "checkpoints"])
    (path / "recipe.yaml").write_text("name: precious\n")
    (path / "metrics.json").write_text('{"precious": true}\n')
    (path / "model.safetensors").write_bytes(b"precious weights")
    (path / "checkpoints").mkdir()
    return path


@pytest.fixture
def recipe_file(tmp_path, tiny_model_dir, toy_data) -> Path:
    return write_recipe(tmp_path / "recipe.yaml", recipe_dict(tiny_model_dir, toy_data))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir, toy_data) -> Path:
    """One finished run (trained once for the module); tests copy it before damaging it."""
    from hftransfer.engine import train

    out = tmp_path_factory.mktemp("trained") / "run"
    result = train(recipe_dict(tiny_model_dir, toy_data), output_dir=out)
    assert (result.run_dir / "metrics.json").exists()
    return out


# --------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize("argv, needles", [
    ([], ["command"]),
    (["frobnicate"], ["frobnicate"]),
    (["train"], ["recipe"]),
    (["evaluate"], ["run_dir"]),
    (["train", "r.yaml", "--no-such-flag"], ["--no-such-flag"]),
])
def test_usage_errors_are_one_line(capsys, work, argv, needles):
    rc, out, err = run_cli(capsys, *argv)
    assert_cli_error(rc, err, *needles, "--help")
    assert out == ""


# --------------------------------------------------------------------------- train: bad recipes write nothing


@pytest.mark.parametrize("mutate, overrides, needles", [
    (lambda r: r.update(epochs=3), [], ["unknown key 'epochs'", "allowed keys", "train"]),
    (lambda r: r["strategy"].update(name="lorra"), [], ["'lorra'", "lora", "full", "scratch"]),
    (lambda r: r["task"].update(type="ner"), [], ["'ner'", "text-classification"]),
    (lambda r: None, ["train.learning_rate"], ["bad override", "key.path=value"]),
    (lambda r: None, ["train.learning_rate=fast"], ["train.learning_rate", "'fast'"]),
    (lambda r: None, ["train.num_epochs=3"], ["train.num_epochs", "num_train_epochs"]),
    (lambda r: None, ["train.lr_scheduler_type=wobbly"], ["train.lr_scheduler_type", "wobbly"]),
    (lambda r: r["train"].update(output_dir="x"), [], ["train.output_dir", "--output-dir"]),
])
def test_train_recipe_mistakes(tmp_path, work, capsys, tiny_model_dir, toy_data,
                               mutate, overrides, needles):
    recipe = recipe_dict(tiny_model_dir, toy_data)
    mutate(recipe)
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    before = tree(tmp_path)
    rc, out, err = run_cli(capsys, "train", path, *overrides)
    assert_cli_error(rc, err, *needles)
    assert out == ""
    assert tree(tmp_path) == before  # no runs/cli, no .cli.partial


def test_train_missing_recipe(tmp_path, work, capsys):
    rc, _, err = run_cli(capsys, "train", tmp_path / "nope.yaml")
    assert_cli_error(rc, err, "nope.yaml", "does not exist")
    assert list(work.iterdir()) == []


def test_resume_without_checkpoint(tmp_path, work, capsys, recipe_file):
    before = tree(tmp_path)
    rc, _, err = run_cli(capsys, "train", recipe_file, "--resume", "--output-dir", tmp_path / "run")
    assert_cli_error(rc, err, "--resume", "checkpoint")
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- existing output directories


def test_existing_run_is_not_overwritten(tmp_path, work, capsys, recipe_file):
    run = fake_run(tmp_path / "run")
    before = tree(tmp_path)
    rc, _, err = run_cli(capsys, "train", recipe_file, "--output-dir", run)
    assert_cli_error(rc, err, str(run), "already exists", "--overwrite", "--output-dir")
    assert tree(tmp_path) == before


def test_existing_default_output_dir_is_not_overwritten(tmp_path, work, capsys, recipe_file):
    run = fake_run(work / "runs" / "cli")  # the default: runs/<recipe name>
    before = tree(tmp_path)
    rc, _, err = run_cli(capsys, "train", recipe_file)
    assert_cli_error(rc, err, "runs/cli", "--overwrite")
    assert tree(tmp_path) == before
    assert (run / "model.safetensors").read_bytes() == b"precious weights"


def test_real_run_is_not_overwritten(tmp_path, work, capsys, recipe_file, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = tree(tmp_path)
    rc, _, err = run_cli(capsys, "train", recipe_file, "--output-dir", run)
    assert_cli_error(rc, err, "--overwrite")
    assert tree(tmp_path) == before


def test_overwrite_with_bad_data_keeps_the_existing_run(tmp_path, work, capsys, tiny_model_dir,
                                                        toy_data):
    # --overwrite only replaces a run once a new one is complete: a failure keeps the old one.
    run = fake_run(tmp_path / "run")
    (tmp_path / "bad.csv").write_text("text,label\nonly,one\n")
    recipe = write_recipe(tmp_path / "recipe.yaml",
                          recipe_dict(tiny_model_dir, toy_data, data={"train": str(tmp_path / "bad.csv")}))
    before = tree(tmp_path)
    rc, _, err = run_cli(capsys, "train", recipe, "--output-dir", run, "--overwrite")
    assert_cli_error(rc, err, "single class")
    assert tree(tmp_path) == before


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, work, capsys, recipe_file):
    home = tmp_path / "my-documents"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    before = tree(tmp_path)
    rc, _, err = run_cli(capsys, "train", recipe_file, "--output-dir", home, "--overwrite")
    assert_cli_error(rc, err, "my-documents", "not an hftransfer run")
    assert tree(tmp_path) == before


def test_output_dir_that_is_a_file(tmp_path, work, capsys, recipe_file):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    before = tree(tmp_path)
    for flags in ([], ["--overwrite"]):
        rc, _, err = run_cli(capsys, "train", recipe_file, "--output-dir", target, *flags)
        assert_cli_error(rc, err, "notes.txt")
        assert tree(tmp_path) == before


def test_user_error_keeps_a_crashed_runs_checkpoints(tmp_path, work, capsys, tiny_model_dir,
                                                     toy_data):
    # A staged run left by a crash holds the checkpoints --resume needs; a run that stops on a
    # user mistake (here: a missing data file) must not have deleted them on the way.
    stage = tmp_path / ".run.partial"
    (stage / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    mark_as_kit_made(stage, "training")
    (stage / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    recipe = write_recipe(tmp_path / "recipe.yaml", recipe_dict(
        tiny_model_dir, toy_data, data={"train": str(tmp_path / "typo.csv")}))
    before = tree(tmp_path)
    # Without a flag the interrupted run is neither resumed nor thrown away silently...
    rc, _, err = run_cli(capsys, "train", recipe, "--output-dir", tmp_path / "run")
    assert_cli_error(rc, err, "interrupted run", "checkpoint-4", "--resume", "--overwrite")
    assert tree(tmp_path) == before
    # ...and starting over (--overwrite) checks the input before anything is deleted.
    rc, _, err = run_cli(capsys, "train", recipe, "--output-dir", tmp_path / "run", "--overwrite")
    assert_cli_error(rc, err, "typo.csv", "does not exist")
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- predict / evaluate on non-runs


@pytest.mark.parametrize("command", ["predict", "evaluate", "card"])
@pytest.mark.parametrize("target", ["missing", "file", "empty-dir", "model-dir", "staging-dir"])
def test_not_a_run_directory(tmp_path, work, capsys, tiny_model_dir, command, target):
    if target == "missing":
        path = tmp_path / "no-such-run"
    elif target == "file":
        path = tmp_path / "recipe.yaml"
        path.write_text("name: x\n")
    elif target == "empty-dir":
        path = tmp_path / "empty"
        path.mkdir()
    elif target == "model-dir":  # a base model, not a run: a likely mix-up
        path = tiny_model_dir
    else:  # what a crash leaves behind: no metrics.json
        path = tmp_path / ".run.partial"
        (path / "checkpoints").mkdir(parents=True)
        (path / "recipe.yaml").write_text("name: x\n")
    extra = ["some text"] if command == "predict" else []
    before = tree(tmp_path)
    rc, out, err = run_cli(capsys, command, path, *extra)
    line = assert_cli_error(rc, err, str(path))
    assert "not a directory" in line or "not a finished hftransfer run" in line
    assert "run" in line.split(str(path), 1)[1]
    assert out == ""
    assert tree(tmp_path) == before


@pytest.mark.parametrize("damage, needles", [
    (lambda run: (run / "metrics.json").write_text("{half a json"), ["metrics.json"]),
    (lambda run: (run / "recipe.yaml").write_text("name: [unclosed\n"), ["recipe.yaml", "YAML"]),
    (lambda run: (run / "model.safetensors").unlink(), ["model.safetensors"]),
])
def test_damaged_run_directory(tmp_path, work, capsys, trained_run, damage, needles):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    damage(run)
    for argv in (["predict", run, "good film"], ["evaluate", run]):
        rc, out, err = run_cli(capsys, *argv)
        assert_cli_error(rc, err, *needles)


@pytest.mark.parametrize("case", ["no-inputs", "missing-file", "latin1-file"])
def test_predict_input_mistakes(tmp_path, work, capsys, trained_run, case):
    if case == "no-inputs":
        argv, needles = [], ["predict", "--file"]
    elif case == "missing-file":
        argv, needles = ["--file", tmp_path / "inputs.txt"], ["--file", "inputs.txt"]
    else:
        (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
        argv, needles = ["--file", tmp_path / "latin1.txt"], ["--file", "latin1.txt", "UTF-8"]
    rc, out, err = run_cli(capsys, "predict", trained_run, *argv)
    assert_cli_error(rc, err, *needles)
    assert out == ""


def test_predict_works_on_the_run(capsys, work, trained_run):
    # the positive control for the cases above
    rc, out, err = run_cli(capsys, "predict", trained_run, "--json", "good film", "awful film")
    assert rc == 0, err
    results = json.loads(out)
    assert [r["label"] in ("positive", "negative") for r in results] == [True, True]


EVALUATE_MISTAKES = {
    "bad-split": (None, ["--split", "dev"], ["--split", "'dev'", "validation"]),
    "missing-data": (None, ["--data", "{tmp}/missing.csv"], ["--data", "missing.csv", "does not exist"]),
    "missing-column": ("sentence,label\ngood,positive\n", ["--data", "{tmp}/data.csv"],
                       ["--data", "'text'", "sentence"]),
    "unseen-label": ("text,label\ngood,positive\nmeh,neutral\n", ["--data", "{tmp}/data.csv"],
                     ["'neutral'", "not seen in train"]),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_MISTAKES))
def test_evaluate_input_mistakes(tmp_path, work, capsys, trained_run, case):
    content, argv, needles = EVALUATE_MISTAKES[case]
    if content is not None:
        (tmp_path / "data.csv").write_text(content)
    rc, out, err = run_cli(capsys, "evaluate", trained_run,
                           *[a.format(tmp=tmp_path) for a in argv])
    assert_cli_error(rc, err, *needles)
    assert out == ""


def test_evaluate_on_data_file_works(tmp_path, capsys, work, trained_run, toy_data):
    rc, out, err = run_cli(capsys, "evaluate", trained_run, "--data", toy_data / "test.csv")
    assert rc == 0, err
    assert "accuracy" in json.loads(out)


# --------------------------------------------------------------------------- real subprocesses


SUBPROCESS_CASES = ("recipe", "data", "model", "predict")


@pytest.fixture(scope="module")
def subprocess_results(tmp_path_factory, tiny_model_dir, toy_data):
    """Start every case at once (interpreter start-up dominates), then collect them."""
    root = tmp_path_factory.mktemp("subprocess")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "default"}
    procs = {}
    for case in SUBPROCESS_CASES:
        base = root / case
        work = base / "work"
        work.mkdir(parents=True)
        recipe = recipe_dict(tiny_model_dir, toy_data)
        if case == "recipe":  # fails while reading the recipe
            recipe["strategy"]["lora_r"] = 8
            argv = ["train", str(write_recipe(base / "recipe.yaml", recipe))]
        elif case == "data":  # fails while reading data (datasets and pyarrow imported)
            (base / "latin1.csv").write_bytes("text,label\ncaf\xe9,pos\n".encode("latin-1"))
            recipe["data"] = {"train": str(base / "latin1.csv")}
            argv = ["train", str(write_recipe(base / "recipe.yaml", recipe))]
        elif case == "model":  # fails after the data loaded and a validation split was carved
            recipe["model"]["name_or_path"] = str(base / "no-such-model")
            recipe["data"] = {"train": str(toy_data / "train.csv")}
            argv = ["train", str(write_recipe(base / "recipe.yaml", recipe))]
        else:  # predict with a base model directory instead of a run
            argv = ["predict", str(tiny_model_dir), "good film"]
        before = tree(base)
        procs[case] = (subprocess.Popen([sys.executable, "-m", "hftransfer", *argv], cwd=work, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                       base, before)
    results = {}
    for case, (proc, base, before) in procs.items():
        out, err = proc.communicate(timeout=240)
        results[case] = (proc.returncode, out, err, tree(base) == before)
    return results


@pytest.mark.parametrize("case, needles", [
    ("recipe", ["unknown key 'strategy.lora_r'"]),
    ("data", ["data.train", "latin1.csv", "not UTF-8", "line 2"]),
    ("model", ["model.name_or_path", "no-such-model", "does not exist"]),
    ("predict", [" is not a finished hftransfer run"]),
])
def test_subprocess_prints_one_error_line(subprocess_results, case, needles):
    rc, out, err, unchanged = subprocess_results[case]
    assert "Traceback" not in err, err
    assert rc == 2, f"exit {rc}; stderr: {err}"
    assert err.endswith("\n")
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr must be exactly one line, got: {lines!r}"
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert out == ""
    assert unchanged, "the failed command wrote or removed files"


def test_a_command_leaves_the_garbage_collector_as_it_found_it(tmp_path, work, capsys, recipe_file):
    # main() pauses the collector while the libraries load and freezes them out of its passes.
    import gc

    assert gc.isenabled() and gc.get_freeze_count() == 0
    rc, _, err = run_cli(capsys, "validate", recipe_file)
    assert rc == 0, err
    assert gc.isenabled() and gc.get_freeze_count() == 0
