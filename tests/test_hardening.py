"""Hostile and careless input, one test (or table) per class of defect: the kit deletes nothing it
did not make, uploads nothing from outside a run, writes no credential down, loads no pickle
unasked, never saves a diverged model as a success, and answers every mistake with one
``error:`` line (exit 2) while leaving nothing behind."""
from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import refused, run_cli, tiny_recipe_dict, tree

import hftransfer
from hftransfer import rundir
from hftransfer.errors import HFTransferError

TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"


# --------------------------------------------------------------------------- 1. data loss


def test_overwrite_never_empties_a_folder_the_kit_did_not_make(tmp_path, work, capsys, recipe_of):
    # A project folder that happens to hold a recipe.yaml and a metrics.json is not a run.
    project = tmp_path / "project"
    project.mkdir()
    for name, text in (("recipe.yaml", "name: mine\n"), ("metrics.json", "{}"), ("notes.md", "years of work")):
        (project / name).write_text(text)
    (project / "data").mkdir()
    (project / "data" / "corpus.csv").write_text("text,label\n")
    refused(capsys, tmp_path, ["train", recipe_of(), "--output-dir", project, "--overwrite"],
            "project", "not an hftransfer run", ".hftransfer-run.json")


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/hftransfer-abs-name", "a/b", "..", ".hidden",
                                  "nul\x00byte", "trailing.", "back\\slash"])
def test_a_recipe_name_is_a_name_not_a_path(tmp_path, work, capsys, recipe_of, name):
    path = recipe_of()
    data = yaml.safe_load(path.read_text())
    data["name"] = name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    line = refused(capsys, tmp_path, ["train", path], "name")
    assert "nul" in line.lower() or "not a usable run name" in line or "empty" in line
    assert not Path("/tmp/hftransfer-abs-name").exists()
    assert not (tmp_path.parent / "escaped").exists()


def test_a_recipe_file_name_becomes_a_usable_run_name(tmp_path, work, tiny_model_dir, toy_data):
    path = tmp_path / "my recipe: v2.yaml"
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data)
    del recipe["name"]
    path.write_text(yaml.safe_dump(recipe))
    assert hftransfer.load_recipe(path).name == "my recipe- v2"


@pytest.mark.parametrize("target", [".", "..", "{work}", "{tmp}"])
def test_the_current_directory_is_never_a_run_directory(tmp_path, work, capsys, recipe_of, target):
    target = target.format(work=work, tmp=tmp_path)
    refused(capsys, tmp_path, ["train", recipe_of(), "--output-dir", target, "--overwrite"],
            "current directory")


def test_overwrite_replaces_only_what_the_kit_wrote(tmp_path, work, recipe_of):
    run = tmp_path / "run"
    hftransfer.train(recipe_of(), output_dir=run)
    (run / "my-notes.txt").write_text("keep me")  # the user's, beside the run's files
    (run / "plots").mkdir()
    (run / "plots" / "curve.png").write_bytes(b"png")
    (run / "README.md").write_text("the kit's card, edited")
    hftransfer.train(recipe_of("scratch"), output_dir=run, overwrite=True)
    assert (run / "my-notes.txt").read_text() == "keep me"
    assert (run / "plots" / "curve.png").read_bytes() == b"png"
    assert "scratch" in (run / "README.md").read_text()  # the kit's own file was rewritten
    assert json.loads((run / "metrics.json").read_text())["strategy"] == "scratch"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_folders_beside_the_run_are_not_the_kits_to_delete(tmp_path, work, capsys, recipe_of):
    # A user folder where the staging folder would go is never removed, with or without --resume.
    stage = tmp_path / ".run.partial"
    stage.mkdir()
    (stage / "mine.txt").write_text("mine")
    for flags in ([], ["--resume"], ["--overwrite"]):
        refused(capsys, tmp_path, ["train", recipe_of(), "--output-dir", tmp_path / "run", *flags],
                ".run.partial", "not made by hftransfer")
    # A folder named like the old-run trash of earlier versions is left alone by an overwrite.
    shutil.rmtree(stage)
    old = tmp_path / ".run.old"
    old.mkdir()
    (old / "mine.txt").write_text("mine")
    hftransfer.train(recipe_of(), output_dir=tmp_path / "run")
    hftransfer.train(recipe_of(), output_dir=tmp_path / "run", overwrite=True)
    assert (old / "mine.txt").read_text() == "mine"


def test_a_symlinked_output_dir_is_refused(tmp_path, work, capsys, recipe_of):
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    refused(capsys, tmp_path, ["train", recipe_of(), "--output-dir", tmp_path / "link", "--overwrite"],
            "symbolic link")


# --------------------------------------------------------------------------- 2. files leave the machine


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir, toy_data) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, train={"num_train_epochs": 1})
    hftransfer.train(recipe, output_dir=out)
    return out


@pytest.mark.parametrize("name", ["recipe.yaml", "metrics.json", "README.md", "model.safetensors",
                                  "tokenizer.json"])
def test_push_never_follows_a_link_out_of_the_run(tmp_path, work, capsys, finished_run, name):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the system's own file")
    (run / name).unlink()
    (run / name).symlink_to(secret)
    line = refused(capsys, tmp_path, ["push", run, "--repo-id", "me/run", "--dry-run", tmp_path / "staged"],
                   name, "symbolic link")
    assert "root:x" not in line


def test_push_refuses_a_run_reached_through_a_linked_folder(tmp_path, work, capsys, finished_run):
    # The run's own files, but its tasks/ (or any folder) links elsewhere: nothing of it goes up.
    outside = tmp_path / "outside"
    shutil.copytree(finished_run, outside)
    run = tmp_path / "run"
    run.mkdir()
    for item in outside.iterdir():
        if item.name != "model.safetensors":
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, run / item.name)
    (run / "model.safetensors").symlink_to(outside / "model.safetensors")
    refused(capsys, tmp_path, ["push", run, "--repo-id", "me/run", "--dry-run", tmp_path / "staged"],
            "model.safetensors", "symbolic link")


# --------------------------------------------------------------------------- 3-4. secrets and uploads


@pytest.mark.parametrize("override, needles", [
    (f"train.hub_token={TOKEN}", ["train.hub_token", "hf auth login", "HF_TOKEN"]),
    ("train.hub_token=not-even-a-token", ["train.hub_token", "credentials", "HF_TOKEN"]),
    (f"data.dataset={TOKEN}", ["data.dataset", "access token"]),
    (f"model.revision={TOKEN}", ["model.revision", "access token"]),
    (f"strategy.peft.note=x{TOKEN}", ["strategy.peft.note", "access token"]),
])
def test_credentials_never_enter_a_recipe(tmp_path, work, capsys, recipe_of, override, needles):
    for command in ("validate", "train"):
        line = refused(capsys, tmp_path, [command, recipe_of(), override], *needles)
        assert TOKEN not in line
    assert not any(TOKEN.encode() in (content or b"") for content in tree(tmp_path).values())


@pytest.mark.parametrize("key, value", [("push_to_hub", "true"), ("hub_model_id", "me/model"),
                                        ("hub_strategy", "checkpoint"), ("hub_private_repo", "true"),
                                        ("hub_always_push", "true"), ("hub_revision", "main")])
def test_the_trainer_never_uploads_behind_the_kits_back(tmp_path, work, capsys, recipe_of, key, value):
    refused(capsys, tmp_path, ["train", recipe_of(), f"train.{key}={value}"],
            f"train.{key}", "hftransfer push")


# --------------------------------------------------------------------------- 5. pickle


def _model_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("shard, needles", [
    ("pytorch_model-00001-of-00001.bin", ["not a .safetensors file", "pickle"]),
    ("../elsewhere/model.safetensors", ["outside the model folder"]),
    ("/etc/model.safetensors", ["outside the model folder"]),
])
def test_a_shard_index_cannot_reach_pickle_or_other_folders(tmp_path, work, capsys, tiny_model_dir,
                                                            toy_data, shard, needles):
    model = _model_copy(tiny_model_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    from safetensors.torch import load_file

    keys = list(load_file(weights))
    target = (model / shard) if not shard.startswith("/") else None
    if target is not None and shard.endswith(".bin"):
        target.write_bytes(b"pickle would run code")
    weights.unlink()
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: shard for k in keys}}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(model, toy_data)))
    for command in ("validate", "train"):
        refused(capsys, tmp_path, [command, recipe], "model.safetensors.index.json", *needles)


def test_a_run_never_unpickles_an_adapter(tmp_path, work, capsys, recipe_of):
    run = tmp_path / "lora"
    hftransfer.train(recipe_of("lora"), output_dir=run)
    (run / "adapter_model.safetensors").unlink()
    (run / "adapter_model.bin").write_bytes(b"\x80\x04pickle would run code")
    for argv in (["predict", run, "good film"], ["evaluate", run]):
        refused(capsys, tmp_path, argv, "adapter_model.safetensors", "pickle")
    # The same run as the source of the next one.
    next_recipe = recipe_of(model={"name_or_path": str(run)}, name="next.yaml")
    refused(capsys, tmp_path, ["train", next_recipe], "adapter_model.bin", "pickle")


def test_a_full_run_with_only_pickle_weights_is_refused(tmp_path, work, capsys, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "model.safetensors").rename(run / "pytorch_model.bin")
    for argv in (["predict", run, "good film"], ["evaluate", run]):
        refused(capsys, tmp_path, argv, "pytorch_model.bin", "pickle")


def test_truncated_weights_are_one_error_line(tmp_path, work, capsys, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    for argv in (["predict", run, "good film"], ["evaluate", run]):
        refused(capsys, tmp_path, argv, "damaged", "restore")


# --------------------------------------------------------------------------- 6. NaN


@pytest.mark.parametrize("override, needles", [
    ("train.learning_rate=.inf", ["train.learning_rate", "finite"]),
    ("train.learning_rate=.nan", ["train.learning_rate", "finite"]),
    ("train.weight_decay=.nan", ["train.weight_decay", "finite"]),
    ("train.num_train_epochs=.nan", ["train.num_train_epochs", "finite"]),
    ("strategy.regularization={weight: -.inf}", ["strategy.regularization.weight", "finite"]),
    ("model.config={model_type: bert, layer_norm_eps: .nan}", ["model.config.layer_norm_eps", "finite"]),
])
def test_non_finite_numbers_are_refused(tmp_path, work, capsys, recipe_of, override, needles):
    for command in ("validate", "train"):
        refused(capsys, tmp_path, [command, recipe_of(), override], *needles)


def test_a_diverging_run_stops_and_saves_nothing(tmp_path, work, capsys, recipe_of):
    # A finite but absurd rate without gradient clipping: the loss stops being a number.
    path = recipe_of(train={"learning_rate": 1e9, "num_train_epochs": 2, "max_grad_norm": 0})
    line = refused(capsys, tmp_path, ["train", path, "--output-dir", tmp_path / "run"],
                   "training loss became", "at step", "train.learning_rate")
    assert "nan" in line or "inf" in line


def test_metrics_json_is_strict_json(tmp_path):
    rundir.write_json(tmp_path / "m.json", {"a": math.nan, "b": [math.inf, 1.0], "c": {"d": -math.inf}})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "a": None, "b": [None, 1.0], "c": {"d": None}}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary file left


# --------------------------------------------------------------------------- 7. one line, not a traceback


@pytest.mark.parametrize("override, needles", [
    ("train.per_device_train_batch_size=0", ["per_device_train_batch_size", "at least 1"]),
    ("train.per_device_eval_batch_size=0", ["per_device_eval_batch_size", "at least 1"]),
    ("train.gradient_accumulation_steps=0", ["gradient_accumulation_steps", "at least 1"]),
    ("train.seed=99999999999999999999", ["train.seed", "4294967295"]),
    ("train.seed=-1", ["train.seed", "4294967295"]),
    ("data.seed=4294967296", ["data.seed", "4294967295"]),
    ("train={1: 2}", ["train", "key 1"]),
    ("train.report_to=[wandb]", ["report_to", "wandb", "not installed"]),
    ("train.report_to=[nonsense]", ["report_to", "nonsense", "not a logging integration"]),
    ("train.deepspeed=ds.json", ["train.deepspeed", "deepspeed"]),
    ("train.fsdp=bogus", ["train.fsdp"]),
    ("train.max_steps=0", ["train.max_steps"]),
    ("train.num_train_epochs=0", ["num_train_epochs", "nothing"]),
    ("train.logging_steps=0", ["train.logging_steps"]),
    ("task.max_length=512", ["task.max_length", "128", "position embeddings"]),
])
def test_bad_training_values_are_one_line(tmp_path, work, capsys, recipe_of, override, needles):
    for command in ("validate", "train"):
        refused(capsys, tmp_path, [command, recipe_of(), override], *needles)


def test_fsdp_needs_a_multi_process_launch(tmp_path, work, capsys, recipe_of):
    path = recipe_of()
    rc, out, err = run_cli(capsys, "validate", path, "train.fsdp=full_shard")
    assert rc == 0 and "accelerate launch" in out, (out, err)  # fine under accelerate launch
    refused(capsys, tmp_path, ["train", path, "train.fsdp=full_shard"], "train.fsdp", "accelerate launch")


def test_a_nul_in_a_name_or_path(tmp_path, work, recipe_of):
    from helpers import user_error

    for override in ("name=a\x00b", "data.train=a\x00b", "model.name_or_path=x\x00y"):
        user_error("NUL", call=lambda: hftransfer.train(recipe_of(), [override]))
    user_error("NUL", call=lambda: hftransfer.train(recipe_of(), output_dir="ru\x00n"))
    assert not (work / "runs").exists()


def test_a_full_disk_stops_with_one_line_and_leaves_nothing(tmp_path, recipe_of):
    # A file-size limit makes the model's write fail as a full disk would (EFBIG / ENOSPC).
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    path = recipe_of()
    before = tree(tmp_path)
    done = subprocess.run([sys.executable, "-m", "hftransfer", "train", str(path), "--output-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, preexec_fn=limit,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write under") and "File too large" in last
    assert tree(tmp_path) == before


def test_a_read_only_place_fails_before_training(tmp_path, recipe_of):
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    mount = tmp_path / "ro"
    mount.mkdir()
    path = recipe_of()
    script = (f"mount -t tmpfs -o ro tmpfs {mount} && exec {sys.executable} -m hftransfer train "
              f"{path} --output-dir {mount}/run")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[-1]] and "not writable" in lines[-1] and "Read-only" in lines[-1], lines


# --------------------------------------------------------------------------- resume: the same run only


@pytest.fixture
def interrupted(tmp_path, tiny_model_dir, toy_data, monkeypatch):
    """A run (on copies of the tiny model and data, which the tests change) interrupted by Ctrl-C
    right after its first checkpoint: its staging folder remains for --resume."""
    from hftransfer.trainer import TransferTrainer

    model, data = tmp_path / "model", tmp_path / "data"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(toy_data, data)
    recipe = tiny_recipe_dict(model, data, train={"num_train_epochs": 2, "save_strategy": "epoch"})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    original = TransferTrainer._save_checkpoint

    def save_then_stop(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(TransferTrainer, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        hftransfer.train(path, output_dir=tmp_path / "run")
    monkeypatch.setattr(TransferTrainer, "_save_checkpoint", original)
    assert rundir.last_complete_checkpoint(tmp_path / ".run.partial" / "checkpoints") is not None
    return path


@pytest.mark.parametrize("override, needles", [
    ("strategy.name=lora", ["strategy.name", "'full' -> 'lora'"]),
    ("train.learning_rate=0.5", ["train.learning_rate"]),
    ("data.train={data}/validation.csv", ["data.train"]),
])
def test_resume_refuses_a_changed_run(tmp_path, work, capsys, interrupted, override, needles):
    override = override.format(data=tmp_path / "data")
    refused(capsys, tmp_path, ["train", interrupted, override, "--output-dir", tmp_path / "run",
                               "--resume"], "--resume", *needles, "--overwrite")


def test_resume_refuses_a_changed_label_set_or_source(tmp_path, work, capsys, interrupted):
    # Same recipe text, but the data behind it now has other labels...
    originals = {path: path.read_text() for path in (tmp_path / "data").glob("*.csv")}
    for path, text in originals.items():
        path.write_text(text.replace("negative", "bad").replace("positive", "good"))
    refused(capsys, tmp_path, ["train", interrupted, "--output-dir", tmp_path / "run", "--resume"],
            "--resume", "label set")
    for path, text in originals.items():
        path.write_text(text)
    # ...or the source model's config changed on disk.
    config = tmp_path / "model" / "config.json"
    text = config.read_text()
    config.write_text(text.replace('"hidden_dropout_prob": 0.1', '"hidden_dropout_prob": 0.3'))
    refused(capsys, tmp_path, ["train", interrupted, "--output-dir", tmp_path / "run", "--resume"],
            "--resume", "source model")
    config.write_text(text)
    # Unchanged (a setting that does not change the training aside), it resumes and finishes.
    result = hftransfer.train(interrupted, ["train.logging_steps=7"], output_dir=tmp_path / "run",
                              resume=True)
    assert result.metrics["train"]["steps"] == 8


# --------------------------------------------------------------------------- 8. bounded errors


def test_a_yaml_alias_bomb_is_one_short_line(tmp_path, work, capsys):
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\ntrain: {learning_rate: *i}\n")
    line = refused(capsys, tmp_path, ["validate", tmp_path / "bomb.yaml"], "more than 100,000 values")
    assert len(line) < 300


def test_errors_quote_a_short_part_of_a_long_value(tmp_path, work, capsys, recipe_of):
    line = refused(capsys, tmp_path, ["validate", recipe_of(), "train.learning_rate=[" + "1," * 50_000 + "1]"],
                   "train.learning_rate")
    assert len(line) < 400
    huge = "x" * 100_000
    line = refused(capsys, tmp_path, ["validate", recipe_of(), f"task.type={huge}"], "task.type")
    assert len(line) < 2100


# --------------------------------------------------------------------------- 9. misleading success


@pytest.mark.parametrize("override, needles", [
    ("data.train=", ["data.train is empty"]),
    ("data.validation=  ", ["data.validation is empty"]),
    ("model.name_or_path=", ["model.name_or_path is empty"]),
    ("model.processor=", ["model.processor is empty"]),
])
def test_an_empty_path_never_means_the_current_directory(tmp_path, work, capsys, recipe_of, override, needles):
    (work / "stray.csv").write_text("text,label\na,b\nc,d\n")
    refused(capsys, tmp_path, ["train", recipe_of(), override], *needles)


@pytest.mark.parametrize("labels, texts, needles", [
    ([1, math.nan, 0], None, ["row 2", "empty label"]),
    ([["positive"], ["negative"], ["negative"]], None, ["row 1", "list", "where a label belongs"]),
    ([{"name": "positive"}, {"name": "negative"}, {"name": "negative"}], None, ["row 1", "dict"]),
    (None, ["fine film", "", "bad film"], ["row 2", "empty text"]),
    (None, ["fine film", "   \t", "bad film"], ["row 2", "empty text"]),
    (None, ["fine film", 17, "bad film"], ["row 2", "'text'"]),
])
def test_odd_labels_and_texts_are_refused(tmp_path, work, capsys, tiny_model_dir, toy_data, labels,
                                          texts, needles):
    labels = labels or ["positive", "negative", "negative"]
    texts = texts or ["fine film", "dull film", "bad film"]
    rows = [{"text": t, "label": l} for t, l in zip(texts, labels)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, data={"train": str(tmp_path / "train.jsonl")})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    refused(capsys, tmp_path, ["validate", tmp_path / "r.yaml"], "data.train", *needles)


@pytest.mark.parametrize("section, needles", [
    ({"model": {"config": {"model_type": "no-such-architecture"}, "processor": "embedded"}},
     ["model.config.model_type", "no-such-architecture"]),
    ({"model": {"config": {"model_type": "bert", "hiden_size": 64}, "processor": "embedded"}},
     ["model.config", "hiden_size"]),
    ({"data": {"train": "/no/such/train.csv"}}, ["data.train", "does not exist"]),
    ({"task": {"text_column": "sentence"}}, ["data.train", "'sentence'"]),
])
def test_validate_checks_what_train_checks(tmp_path, work, capsys, tiny_model_dir, toy_data, section, needles):
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, **section)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    for command in ("validate", "train"):
        refused(capsys, tmp_path, [command, tmp_path / "r.yaml"], *needles)


def test_the_run_marker_is_the_kits_and_never_published(finished_run):
    marker = json.loads((finished_run / rundir.MARKER).read_text())
    assert marker["made_by"] == "hftransfer" and marker["state"] == "finished"
    assert {"recipe.yaml", "metrics.json", "model.safetensors"} <= set(marker["files"])
    from hftransfer.hub import publishable_files

    assert rundir.MARKER not in publishable_files(finished_run)


def test_user_error_inside_training_leaves_no_staging_folder(tmp_path, work, recipe_of, monkeypatch):
    # A mistake found only once training runs (here: divergence) removes the fresh staging folder.
    with pytest.raises(HFTransferError, match="training loss became"):
        hftransfer.train(recipe_of(train={"learning_rate": 1e9, "max_grad_norm": 0}),
                         output_dir=tmp_path / "a" / "b" / "run")
    assert not (tmp_path / "a").exists()  # nor the parent folders made for it
