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


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(tiny_recipe, tmp_path):
    recipe = tiny_recipe("full", train={"max_steps": 60, "save_strategy": "steps", "save_steps": 10,
                                        "learning_rate": 3e-3, "per_device_train_batch_size": 8})
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
    while not (checkpoints / "checkpoint-20" / "trainer_state.json").exists():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not run_dir.exists()  # nothing that looks like a finished run
    assert not (tmp_path / ".killed.partial" / "metrics.json").exists()

    resumed = subprocess.run(command + ["--output-dir", str(run_dir), "--resume"],
                             capture_output=True, text=True, env=env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((run_dir / "metrics.json").read_text())
    assert b["train"]["steps"] == a["train"]["steps"] == 60
    assert abs(a["test"]["accuracy"] - b["test"]["accuracy"]) <= 0.01
    # Optimizer, scheduler, sampler and RNG states are restored; dropout masks after a restart
    # are not bit-identical, so the losses agree within noise rather than exactly.
    assert b["validation"]["loss"] == pytest.approx(a["validation"]["loss"], abs=0.02)
