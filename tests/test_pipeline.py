"""Staged recipes (``stages:``): stages trained in order, each from the model of the one before;
finished stages kept on a rerun, ``--resume`` after ``kill -9``; forgetting; bad input."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import conftest
import pytest
import torch
import yaml
from helpers import refused, run_cli
from test_scale import launch_two_cpu_processes
from safetensors.torch import load_file

from hftransfer import api
from hftransfer.errors import HFTransferError


@pytest.fixture(scope="module")
def topic_data(tmp_path_factory) -> Path:
    """A second toy task on the same kind of input with other labels (the sentiment word's
    position: first half or second half of the word lists)."""
    out = tmp_path_factory.mktemp("topic")
    for split, n, seed in (("train", 48, 3), ("validation", 16, 4), ("test", 16, 5)):
        rows = [(text, "warmish" if any(w in text.split() for w in ("good", "great", "lovely", "fine",
                                                                     "bad", "awful", "poor", "sad"))
                 else "coldish") for text, _ in conftest.toy_rows(n, seed)]
        conftest.write_csv(out / f"{split}.csv", rows)
    return out


def staged(model_dir: Path, first: Path, second: Path, **second_stage) -> dict:
    def data(folder: Path) -> dict:
        return {s: str(folder / f"{s}.csv") for s in ("train", "validation", "test")}

    return {
        "name": "two-stages",
        "model": {"name_or_path": str(model_dir)},
        "train": {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-3,
                  "save_strategy": "no", "disable_tqdm": True, "seed": 0},
        "stages": [
            {"name": "sentiment", "task": {"type": "text-classification"}, "data": data(first)},
            {"name": "topic", "task": {"type": "text-classification"}, "data": data(second), **second_stage},
        ],
    }


def test_stages_train_in_order_and_the_last_stage_is_the_pipelines_model(
        tiny_model_dir, toy_data, topic_data, tmp_path, capsys):
    recipe = staged(tiny_model_dir, toy_data, topic_data)
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "pipe"
    rc, stdout, err = run_cli(capsys, "train", path, "--output-dir", out)
    assert rc == 0, err
    assert "forgetting" in stdout
    first, second = out / "stages" / "1-sentiment", out / "stages" / "2-topic"
    for run in (first, second, out):
        assert (run / "metrics.json").is_file() and (run / "recipe.yaml").is_file()
    # The second stage started from the first's model; its head is new (other labels).
    second_recipe = yaml.safe_load((second / "recipe.yaml").read_text())
    assert second_recipe["model"]["name_or_path"] == str(first)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in metrics["stages"]] == ["sentiment", "topic"]
    assert [s["head"] for s in metrics["stages"]] == ["new", "new"]
    assert metrics["labels"] == ["coldish", "warmish"]
    assert metrics["base_model"] == str(tiny_model_dir)
    # The pipeline's model is the last stage's, byte for byte, and it predicts like any run.
    assert load_file(out / "model.safetensors").keys() == load_file(second / "model.safetensors").keys()
    assert (out / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert api.predict(out, ["the film was good"])[0]["label"] in ("coldish", "warmish")
    assert api.evaluate(out, split="test")["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    # Forgetting: the sentiment task measured again with its own head on the final encoder.
    forgot = metrics["forgetting"]["sentiment"]
    assert forgot["metric"] == "accuracy"
    stage1 = json.loads((first / "metrics.json").read_text())
    assert forgot["before"] == stage1["validation"]["accuracy"]
    assert forgot["drop"] == pytest.approx(forgot["before"] - forgot["after"])
    assert forgot["tensors_from_final"] > 0
    card = (out / "README.md").read_text()
    assert "## Stages" in card and "## Forgetting" in card and "`sentiment`" in card
    assert "hftransfer train pipeline.yaml" in card
    assert yaml.safe_load((out / "pipeline.yaml").read_text())["stages"][1]["name"] == "topic"
    # A finished pipeline is not replaced without --overwrite.
    refused(capsys, tmp_path, ["train", path, "--output-dir", out], "already exists", "--overwrite")


@pytest.mark.slow
def test_a_pipeline_trains_under_accelerate_launch_and_only_the_main_process_writes(
        tiny_model_dir, toy_data, topic_data, tmp_path):
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(staged(tiny_model_dir, toy_data, topic_data)))
    out = tmp_path / "pipe"
    done = launch_two_cpu_processes(path, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run saved to") == 1  # the main process's summary
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in metrics["stages"]] == ["sentiment", "topic"]
    assert metrics["stages"][1]["from"] == "stage sentiment"
    assert "sentiment" in metrics["forgetting"]
    for stage in ("1-sentiment", "2-topic"):
        assert json.loads((out / "stages" / stage / "metrics.json").read_text())["train"]["world_size"] == 2
    # The second stage started from the model the first one saved, and nothing half-written is left.
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["1-sentiment", "2-topic"]
    assert not (out / ".hftransfer-lock").exists()  # released: a rerun is not refused as busy


def test_forgetting_is_zero_when_the_later_stage_leaves_the_encoder_as_it_was(
        tiny_model_dir, toy_data, tmp_path):
    """Same labels (the head is kept) and a learning rate of ~0 in stage 2: the final encoder is
    stage 1's, so re-attaching stage 1's head must give stage 1's validation accuracy again."""
    recipe = staged(tiny_model_dir, toy_data, toy_data, train={"learning_rate": 1e-12, "max_steps": 1})
    result = api.train(recipe, output_dir=tmp_path / "pipe")
    first = tmp_path / "pipe" / "stages" / "1-sentiment"
    assert [s["head"] for s in result.metrics["stages"]] == ["new", "kept"]
    before, after = (load_file(p / "model.safetensors") for p in (first, tmp_path / "pipe"))
    for key in before:  # the head was kept, not re-initialised
        assert torch.allclose(before[key], after[key], atol=1e-6), key
    forgot = result.metrics["forgetting"]["sentiment"]
    assert forgot["after"] == pytest.approx(forgot["before"], abs=1e-9)
    assert forgot["drop"] == pytest.approx(0.0, abs=1e-9)


def test_a_rerun_keeps_finished_stages_and_refuses_a_changed_one(tiny_model_dir, toy_data, topic_data,
                                                                 tmp_path, monkeypatch):
    recipe = staged(tiny_model_dir, toy_data, topic_data)
    out = tmp_path / "pipe"
    from hftransfer import engine

    real_train, calls = engine.train, []

    def failing_second(recipe, *args, **kwargs):  # stage 2 dies after stage 1 finished
        calls.append(kwargs["output_dir"].name)
        if kwargs["output_dir"].name == "2-topic":
            raise HFTransferError("stage 2 stopped")
        return real_train(recipe, *args, **kwargs)

    monkeypatch.setattr(engine, "train", failing_second)
    with pytest.raises(HFTransferError, match="stage 2 stopped"):
        api.train(recipe, output_dir=out)
    assert not (out / "metrics.json").exists()  # not a finished run
    stage1 = (out / "stages" / "1-sentiment" / "model.safetensors").read_bytes()

    monkeypatch.setattr(engine, "train", real_train)
    calls.clear()
    monkeypatch.setattr(engine, "train", lambda recipe, *a, **k: calls.append(k["output_dir"].name)
                        or real_train(recipe, *a, **k))
    api.train(recipe, output_dir=out)  # a plain rerun: stage 1 is kept, stage 2 trains
    assert calls == ["2-topic"]
    assert (out / "stages" / "1-sentiment" / "model.safetensors").read_bytes() == stage1
    assert (out / "metrics.json").is_file()

    # A changed first stage is not silently mixed with the old one.
    (out / "metrics.json").unlink()
    from hftransfer import rundir

    rundir.write_json(out / rundir.MARKER, {"made_by": "hftransfer", "state": "training",
                                            "record": {"pipeline": "two-stages", "stages": ["sentiment", "topic"]}})
    with pytest.raises(HFTransferError, match="stage sentiment .* another recipe .*--overwrite"):
        api.train(recipe, ["stages.sentiment.train.learning_rate=2e-3"], output_dir=out)
    # Nor is an interrupted pipeline of other stages continued with this one's.
    with pytest.raises(HFTransferError, match="interrupted pipeline of other stages .*--overwrite"):
        api.train(recipe, ["stages.topic.name=other"], output_dir=out)


def test_overrides_address_one_stage_by_name_or_number(tiny_model_dir, toy_data, topic_data):
    recipe = staged(tiny_model_dir, toy_data, topic_data)
    _, setups = api.check(recipe, ["train.seed=7", "stages.topic.data.samples_per_label=4",
                                          "stages.1.train.learning_rate=5e-4"])
    assert [s.recipe.train["seed"] for s in setups] == [7, 7]
    assert setups[1].recipe.data.samples_per_label == 4 and setups[0].recipe.data.samples_per_label is None
    assert setups[0].recipe.train["learning_rate"] == 5e-4 and setups[1].recipe.train["learning_rate"] == 1e-3
    with pytest.raises(HFTransferError, match="stages.NAME.key=value"):
        api.check(recipe, ["stages.nosuch.train.seed=1"])


def test_validate_checks_every_stage(tiny_model_dir, toy_data, topic_data, tmp_path, capsys):
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(staged(tiny_model_dir, toy_data, topic_data)))
    rc, out, err = run_cli(capsys, "validate", path)
    assert rc == 0, err
    assert "pipeline of 2 stages" in out and "topic (text-classification, strategy full)" in out
    # A data error of the last stage is found before the first stage trains.
    bad = staged(tiny_model_dir, toy_data, topic_data, task={"type": "text-classification", "text_column": "nope"})
    path.write_text(yaml.safe_dump(bad))
    refused(capsys, tmp_path, ["train", path, "--output-dir", tmp_path / "never"], "nope")


@pytest.mark.parametrize("change, needles", [
    (lambda r: r.update(stages=[]), ["stages is empty"]),
    (lambda r: r.update(stages=None), ["stages is empty"]),
    (lambda r: r.update(task={"type": "text-classification"}), ["task", "belongs inside a stage"]),
    (lambda r: r["stages"][1].update(model={"name_or_path": "embedded"}),
     ["stages[2] (topic)", "remove its model"]),
    (lambda r: r["stages"][1].update(name="sentiment"), ["two stages are named 'sentiment'"]),
    (lambda r: r["stages"][1].update(name="a/b"), ["stage name 'a/b'"]),
    (lambda r: r["stages"][1].update(tasks={"a": {}}), ["tasks", "multitask recipe"]),
    (lambda r: r["stages"][1].update(task={"type": "image-classification"}),
     ["same kind of input", "topic (image-classification) reads image files"]),
    (lambda r: r["stages"][1].update(strategy={"name": "nosuch"}), ["stages[2] (topic)", "nosuch"]),
])
def test_bad_staged_recipes_fail_before_anything_is_written(change, needles, tiny_model_dir, toy_data,
                                                            topic_data, tmp_path, capsys):
    recipe = staged(tiny_model_dir, toy_data, topic_data)
    change(recipe)
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(recipe))
    refused(capsys, tmp_path, ["train", path, "--output-dir", tmp_path / "out"], *needles)


def test_a_masked_lm_stage_needs_a_vocabulary(toy_data, tmp_path, capsys):
    recipe = staged(tmp_path, toy_data, toy_data)
    recipe["model"] = {"config": {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "intermediate_size": 64, "image_size": 16,
                                  "patch_size": 8}}
    recipe["stages"] = [{"name": "adapt", "task": {"type": "masked-lm"}, "data": {"train": str(toy_data / "train.csv")}},
                        {"name": "pictures", "task": {"type": "masked-lm"}, "data": {"train": str(toy_data / "train.csv")}}]
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(recipe))
    refused(capsys, tmp_path, ["train", path, "--output-dir", tmp_path / "out"], "stages[1] (adapt)", "vit")


def test_a_pipeline_cannot_start_from_its_own_output(tiny_model_dir, toy_data, topic_data, tmp_path, capsys):
    recipe = staged(tmp_path / "out" / "stages" / "1-sentiment", toy_data, topic_data)
    (tmp_path / "out" / "stages" / "1-sentiment").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        if (tiny_model_dir / name).exists():
            (tmp_path / "out" / "stages" / "1-sentiment" / name).write_bytes((tiny_model_dir / name).read_bytes())
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(recipe))
    refused(capsys, tmp_path, ["train", path, "--output-dir", tmp_path / "out"],
            "inside the pipeline's own output directory")


def test_resume_after_kill_in_the_second_stage(tiny_model_dir, toy_data, topic_data, tmp_path):
    """``kill -9`` while stage 2 trains, then ``--resume``: stage 1 is not trained again, and
    the pipeline ends where an uninterrupted one ends."""
    recipe = staged(tiny_model_dir, toy_data, topic_data,
                    train={"max_steps": 40, "save_strategy": "steps", "save_steps": 10,
                           "per_device_train_batch_size": 8})
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(recipe))
    command = [sys.executable, "-m", "hftransfer", "train", str(path)]
    from test_scale import env

    whole = subprocess.run(command + ["--output-dir", str(tmp_path / "whole")], capture_output=True,
                           text=True, env=env(), timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    out = tmp_path / "killed"
    checkpoint = out / "stages" / ".2-topic.partial" / "checkpoints" / "checkpoint-20" / "trainer_state.json"
    process = subprocess.Popen(command + ["--output-dir", str(out)], env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not checkpoint.exists():
        assert process.poll() is None, "the pipeline ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "metrics.json").exists()
    stage1 = out / "stages" / "1-sentiment" / "model.safetensors"
    written = stage1.stat().st_mtime_ns

    plain = subprocess.run(command + ["--output-dir", str(out)], capture_output=True, text=True, env=env(),
                           timeout=600)
    assert plain.returncode == 2 and "--resume" in plain.stderr.strip().splitlines()[-1]
    resumed = subprocess.run(command + ["--output-dir", str(out), "--resume"], capture_output=True,
                             text=True, env=env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert stage1.stat().st_mtime_ns == written  # stage 1 was not trained again
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert b["train"]["steps"] == a["train"]["steps"] == 40
    assert abs(a["test"]["accuracy"] - b["test"]["accuracy"]) <= 0.01
    assert b["forgetting"]["sentiment"]["after"] == pytest.approx(a["forgetting"]["sentiment"]["after"], abs=0.07)


def test_masked_lm_stage_then_classification(tiny_model_dir, toy_data, tmp_path):
    """Domain-adaptive pretraining as a first stage: the classifier starts from the adapted
    encoder; the unsupervised stage has no forgetting entry (it has no task head to re-attach)."""
    recipe = staged(tiny_model_dir, toy_data, toy_data)
    recipe["stages"][0] = {"name": "adapt", "task": {"type": "masked-lm", "text_column": "text"},
                           "data": {"train": str(toy_data / "train.csv"),
                                    "validation": str(toy_data / "validation.csv")},
                           "train": {"learning_rate": 1e-3, "eval_strategy": "no"}}
    result = api.train(recipe, output_dir=tmp_path / "pipe")
    adapt = tmp_path / "pipe" / "stages" / "1-adapt"
    rows = result.metrics["stages"]
    assert [r["task"] for r in rows] == ["masked-lm", "text-classification"]
    assert rows[0]["metric"] == "perplexity" and rows[1]["head"] == "new"
    assert result.metrics["forgetting"] == {}
    adapted = load_file(adapt / "model.safetensors")
    start = load_file(tmp_path / "pipe" / "stages" / "2-topic" / "model.safetensors")
    assert yaml.safe_load((tmp_path / "pipe" / "stages" / "2-topic" / "recipe.yaml").read_text())[
        "model"]["name_or_path"] == str(adapt)
    # The classifier's encoder moved away from the adapted one (it trained), but it started there:
    # the tensors that the classification stage does not train from scratch exist in both.
    assert {k for k in adapted if k.startswith("bert.encoder")} <= set(start)
    assert api.predict(tmp_path / "pipe", ["the film was good"])[0]["label"] in ("negative", "positive")


def test_a_pipeline_whose_first_stage_fails_leaves_nothing(tiny_model_dir, toy_data, topic_data, tmp_path,
                                                          monkeypatch):
    from hftransfer import engine

    def failing(recipe, *args, **kwargs):
        raise HFTransferError("training left non-finite weights")

    monkeypatch.setattr(engine, "train", failing)
    with pytest.raises(HFTransferError, match="non-finite"):
        api.train(staged(tiny_model_dir, toy_data, topic_data), output_dir=tmp_path / "runs" / "pipe")
    assert not (tmp_path / "runs").exists()
