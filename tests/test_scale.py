"""Surviving crashes: `--resume` after `kill -9` ends where an uninterrupted run ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1"}


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def whole_and_resumed(recipe: dict, tmp_path: Path, checkpoint: str = "checkpoint-20",
                      resume_flags: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Train ``recipe`` once uninterrupted and once killed with SIGKILL as soon as ``checkpoint``
    is written, then resumed with ``--resume`` (and ``resume_flags``); returns both runs'
    metrics.json. The killed run must leave nothing that looks like a finished run."""
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    command = [sys.executable, "-m", "hftransfer", "train", str(path)]

    whole = subprocess.run(command + ["--output-dir", str(tmp_path / "whole")],
                           capture_output=True, text=True, env=env(), timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    run_dir = tmp_path / "killed"
    checkpoints = tmp_path / ".killed.partial" / "checkpoints"
    process = subprocess.Popen(command + ["--output-dir", str(run_dir)], env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (checkpoints / checkpoint / "trainer_state.json").exists():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not run_dir.exists()  # nothing that looks like a finished run
    assert not (tmp_path / ".killed.partial" / "metrics.json").exists()

    resumed = subprocess.run(command + ["--output-dir", str(run_dir), "--resume", *resume_flags],
                             capture_output=True, text=True, env=env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return (json.loads((tmp_path / "whole" / "metrics.json").read_text()),
            json.loads((run_dir / "metrics.json").read_text()))


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(tiny_recipe, tmp_path):
    recipe = tiny_recipe("full", train={"max_steps": 60, "save_strategy": "steps", "save_steps": 10,
                                        "learning_rate": 3e-3, "per_device_train_batch_size": 8})
    a, b = whole_and_resumed(recipe, tmp_path)
    assert b["train"]["steps"] == a["train"]["steps"] == 60
    assert abs(a["test"]["accuracy"] - b["test"]["accuracy"]) <= 0.01
    # Optimizer, scheduler, sampler and RNG states are restored; dropout masks after a restart
    # are not bit-identical, so the losses agree within noise rather than exactly.
    assert b["validation"]["loss"] == pytest.approx(a["validation"]["loss"], abs=0.02)


def launch_two_cpu_processes(recipe: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``accelerate launch`` with the shipped 2-process CPU config (DDP over gloo)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "recipes" / "accelerate" / "cpu-2proc.yaml"), "-m", "hftransfer", "train",
               str(recipe), "--output-dir", str(output_dir), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env(), timeout=600, cwd=REPO)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full", "lora", "feature-extraction"])
def test_two_cpu_processes_train_together_and_count_every_example_once(
        strategy, tiny_recipe, toy_data, tmp_path):
    import conftest

    # Odd split sizes and a small eval batch: the processes get unequal numbers of batches and
    # the last one is padded with repeats, which evaluation must drop again.
    conftest.write_csv(tmp_path / "validation.csv", conftest.toy_rows(37, 11))
    conftest.write_csv(tmp_path / "test.csv", conftest.toy_rows(29, 12))
    recipe = tiny_recipe(strategy, data={"validation": str(tmp_path / "validation.csv"),
                                         "test": str(tmp_path / "test.csv")},
                         train={"per_device_eval_batch_size": 8, "num_train_epochs": 2,
                                "per_device_train_batch_size": 16})
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    run_dir = tmp_path / "run"

    done = launch_two_cpu_processes(path, run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run saved to") == 1  # the main process's summary, from its result
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2
    if strategy != "feature-extraction":  # its head trains on cached features, with its own batches
        # 64 rows in global batches of 2 x 16: two steps per epoch, so the processes really share
        # the work (alone, each would take four).
        assert metrics["train"]["steps"] == 2 * 2
    # The distributed scores equal a one-process re-scoring of the saved model on the full splits.
    for split in ("validation", "test"):
        alone = subprocess.run([sys.executable, "-m", "hftransfer", "evaluate", str(run_dir),
                                "--split", split], capture_output=True, text=True, env=env(),
                               timeout=600, cwd=REPO)
        assert alone.returncode == 0, alone.stderr[-3000:]
        single = json.loads(alone.stdout)
        assert metrics[split]["accuracy"] == pytest.approx(single["accuracy"], abs=1e-9)
        # The Trainer averages batch-mean losses, and the padded last batch's mean includes the
        # repeats, so the loss agrees closely rather than exactly.
        assert metrics[split]["loss"] == pytest.approx(single["loss"], rel=1e-2)
    # Only the main process wrote: one run directory, no staging leftovers.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
