"""compare --backend ray against a local Ray instance on loopback (started here with `ray
start`): the same cells and metrics as in this process; an address nothing answers at is one
clear error, at once.

Needs Ray (the `ray` extra, which .ci/run installs): skipped without it locally, a failure on CI.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import user_error

from hftransfer.comparison import compare


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A one-node Ray cluster on 127.0.0.1 with 2 CPUs; its address."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("ray is not installed: CI installs the ray extra and must run these tests")
        pytest.skip("ray is not installed (pip install -e '.[ray]')")
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run(
        [str(ray_cli), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        capture_output=True, text=True, env=env, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_gives_the_cells_and_metrics_of_the_in_process_run(ray_cluster, tiny_model_dir, toy_data, tmp_path,
                                                                monkeypatch):
    from helpers import tiny_recipe_dict

    monkeypatch.chdir(tmp_path)  # relative data paths resolve against where compare was started
    (tmp_path / "data").mkdir()
    for name in ("train", "validation", "test"):
        shutil.copy(toy_data / f"{name}.csv", tmp_path / "data" / f"{name}.csv")
    recipe = tiny_recipe_dict(tiny_model_dir, Path("data"), "full", train={"learning_rate": 5e-3})
    grid = dict(strategies="full,feature-extraction", budgets="4,all", seeds=2, min_steps=4, progress=False)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task runs (--cpus-per-cell 1): the same arithmetic
    try:
        here = compare(recipe, output_dir="here", **grid)
    finally:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    there = compare(recipe, output_dir="there", backend="ray", address=ray_cluster, **grid)
    assert there.trained == 12 and time.perf_counter() - started < 600
    strip = lambda rows: [{k: r.get(k) for k in ("cell", "arm", "budget", "seed", "n_train", "steps",
                                                  "validation", "test", "trainable_params")} for r in rows]
    assert strip(there.results["cells"]) == strip(here.results["cells"])
    assert (tmp_path / "there/cells/full/4/seed-1/model.safetensors").is_file()
    assert (tmp_path / "there/report.html").is_file()
    # A rerun on Ray finds every cell finished.
    assert compare(recipe, output_dir="there", backend="ray", address=ray_cluster, **grid).trained == 0


def test_an_address_nothing_answers_at_fails_at_once(tiny_recipe, tmp_path):
    port = _free_port()
    started = time.perf_counter()
    user_error("no Ray cluster answers", f"127.0.0.1:{port}", "ray start --head",
               call=lambda: compare(tiny_recipe(), backend="ray", address=f"127.0.0.1:{port}", budgets="all",
                                    seeds=1, output_dir=tmp_path / "x", progress=False))
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "x").exists()
