"""The second sweep of hostile and careless input (about 450 cases), one test or table per class
of defect it found: files written through links or into folders the kit did not make, runs that
race or lose an interrupted run, tokens reaching files, pickle reached through an old run or a
checkpoint, sources that are no source, values the libraries fail on late, damaged runs, and
the Python API's types."""
from __future__ import annotations

import json
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

TOKEN = "hf_" + "Zq9" * 12


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, toy_data) -> Path:
    out = tmp_path_factory.mktemp("hostile-run") / "run"
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, train={"num_train_epochs": 1}), output_dir=out)
    return out


def copy_run(finished: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


# --------------------------------------------------------------------------- writing into what is not the kit's


def test_card_never_writes_through_a_link_or_into_a_folder_the_kit_did_not_make(tmp_path, work, capsys, finished):
    run = copy_run(finished, tmp_path)
    precious = tmp_path / "notes.txt"
    precious.write_text("precious")
    (run / "README.md").unlink()
    (run / "README.md").symlink_to(precious)
    rc, out, err = run_cli(capsys, "card", run)
    assert rc == 0, err
    assert precious.read_text() == "precious" and not (run / "README.md").is_symlink()
    # A folder that looks like a run but carries no marker of the kit keeps its own README.
    (run / rundir.MARKER).unlink()
    (run / "README.md").write_text("my own readme")
    refused(capsys, tmp_path, ["card", run], "was not made by", "hftransfer")
    assert (run / "README.md").read_text() == "my own readme"


def test_card_with_a_directory_in_the_way_is_one_line(tmp_path, work, capsys, finished):
    run = copy_run(finished, tmp_path)
    (run / "README.md").unlink()
    (run / "README.md").mkdir()
    refused(capsys, tmp_path, ["card", run], "README.md", "is a directory")


def test_a_second_run_into_the_same_place_stops_instead_of_wrecking_the_first(tmp_path, work, capsys, recipe_of):
    held = rundir.open_stage(tmp_path / ".run.partial", {})  # a live run holds its staging folder
    try:
        refused(capsys, tmp_path, ["train", recipe_of(), "--output-dir", tmp_path / "run"], "another hftransfer run")
        refused(capsys, tmp_path, ["train", recipe_of(), "--output-dir", tmp_path / "run", "--overwrite"],
                "another hftransfer run")
    finally:
        held.release()
    hftransfer.train(recipe_of(), output_dir=tmp_path / "run")  # once it is gone, a run goes ahead


def test_overwrite_keeps_user_files_at_any_depth(tmp_path, work, recipe_of):
    run = tmp_path / "run"
    hftransfer.train(recipe_of(train={"save_strategy": "epoch"}), output_dir=run, keep_checkpoints=True)
    (run / "logs" / "mine.txt").write_text("mine")
    (run / "checkpoints" / "notes").mkdir()
    (run / "checkpoints" / "notes" / "n.md").write_text("notes")
    hftransfer.train(recipe_of("scratch"), output_dir=run, overwrite=True)
    assert (run / "logs" / "mine.txt").read_text() == "mine"
    assert (run / "checkpoints" / "notes" / "n.md").read_text() == "notes"
    assert json.loads((run / "metrics.json").read_text())["strategy"] == "scratch"


@pytest.mark.parametrize("where, needles", [
    ("long", ["File name too long"]),
    ("file-parent", ["Not a directory"]),
])
def test_output_dirs_the_file_system_refuses(tmp_path, work, capsys, recipe_of, where, needles):
    (tmp_path / "a-file").write_text("x")
    target = tmp_path / ("x" * 300) if where == "long" else tmp_path / "a-file" / "run"
    refused(capsys, tmp_path, ["train", recipe_of(), "--output-dir", target], "--output-dir", *needles)


def test_an_output_dir_that_is_not_text(tmp_path, work, recipe_of):
    from helpers import user_error

    user_error("not valid UTF-8", call=lambda: hftransfer.train(recipe_of(), output_dir=tmp_path / "\udcff"))


def _limited(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_full_while_a_checkpoint_is_saved(tmp_path, recipe_of):
    # The model file (4 MB) fits, the optimizer state (8 MB) does not: torch's writer fails. Two
    # epochs: the last step writes no checkpoint (the final model is saved instead), the first does.
    path = recipe_of(train={"save_strategy": "epoch", "num_train_epochs": 2})
    before = tree(tmp_path)
    done = subprocess.run([sys.executable, "-m", "hftransfer", "train", str(path), "--output-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, preexec_fn=_limited(6_000_000),
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("error: cannot write")
    assert tree(tmp_path) == before


def test_a_disk_full_during_a_dry_run_push(tmp_path, finished):
    done = subprocess.run([sys.executable, "-m", "hftransfer", "push", str(finished), "--repo-id", "me/x",
                           "--dry-run", str(tmp_path / "staged")], capture_output=True, text=True,
                          preexec_fn=_limited(200_000), env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip().splitlines()[-1]]
    assert "cannot write" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no half-staged folder


@pytest.mark.parametrize("target", ["file/x", "long"])
def test_dry_run_targets_the_file_system_refuses(tmp_path, work, capsys, finished, target):
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "x" if target == "file/x" else tmp_path / ("d" * 300)
    refused(capsys, tmp_path, ["push", finished, "--repo-id", "me/x", "--dry-run", path], "--dry-run")


# --------------------------------------------------------------------------- tokens and what a push reads


def test_a_token_from_the_data_never_reaches_the_run(tmp_path, work, capsys, tiny_model_dir, toy_data):
    rows = "text,label\n" + "".join(f"film {i},{TOKEN if i % 2 else 'fine'}\n" for i in range(40))
    (tmp_path / "t.csv").write_text(rows)
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, data={"train": str(tmp_path / "t.csv"),
                                                              "validation": None, "test": None},
                              train={"num_train_epochs": 1})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    line = refused(capsys, tmp_path, ["train", tmp_path / "r.yaml", "--output-dir", tmp_path / "o"],
                   "looks like a Hugging Face access token")
    assert TOKEN not in line


def test_a_token_from_the_source_model_never_reaches_the_run(tmp_path, work, capsys, tiny_model_dir, toy_data):
    source = tmp_path / "src"
    shutil.copytree(tiny_model_dir, source)
    (source / "README.md").write_text(f"---\nlicense: other\nlicense_name: {TOKEN}\n---\n")
    recipe = tiny_recipe_dict(source, toy_data, train={"num_train_epochs": 1})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    refused(capsys, tmp_path, ["train", tmp_path / "r.yaml", "--output-dir", tmp_path / "o"], "access token")


@pytest.mark.parametrize("edit, commands, needles", [
    (lambda m: m.update(note=TOKEN), ["push"], ["metrics.json", "access token"]),
    (lambda m: m["test"].update(accuracy=float("nan")), ["card", "push"], ["metrics.json", "damaged"]),
    (lambda m: m.update(params="lots"), ["card"], ["metrics.json"]),
])
def test_a_hand_edited_metrics_json_is_neither_rendered_nor_pushed(tmp_path, work, capsys, finished, edit,
                                                                   commands, needles):
    run = copy_run(finished, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    edit(metrics)
    (run / "metrics.json").write_text(json.dumps(metrics))
    argv = {"card": ["card", run], "push": ["push", run, "--repo-id", "me/x", "--dry-run", tmp_path / "staged"]}
    for command in commands:
        line = refused(capsys, tmp_path, argv[command], *needles)
        assert TOKEN not in line
    assert TOKEN not in (run / "README.md").read_text()


def test_push_refuses_a_hard_link(tmp_path, work, capsys, finished):
    run = copy_run(finished, tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("a file of the system")
    (run / "tokenizer.json").unlink()
    os.link(outside, run / "tokenizer.json")
    refused(capsys, tmp_path, ["push", run, "--repo-id", "me/x", "--dry-run", tmp_path / "staged"], "hard link")


def test_a_pushed_card_is_rendered_from_the_run_alone(tmp_path, work, capsys, finished):
    # No README.md: the card is rendered for the push from the run's files, never the source's.
    run = copy_run(finished, tmp_path)
    (run / "README.md").unlink()
    rc, out, err = run_cli(capsys, "push", run, "--repo-id", "me/x", "--dry-run", tmp_path / "staged")
    assert rc == 0, err
    assert "# tiny-full" in (tmp_path / "staged" / "README.md").read_text()


# --------------------------------------------------------------------------- pickle, through an old run or a checkpoint


def test_an_adapter_run_as_source_loads_its_base_under_the_current_recipes_rules(tmp_path, work, capsys, recipe_of,
                                                                                 tiny_model_dir):
    lora = tmp_path / "lora"
    hftransfer.train(recipe_of("lora"), output_dir=lora)
    pickled = tmp_path / "pickled-base"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    old = yaml.safe_load((lora / "recipe.yaml").read_text())
    old["model"].update(name_or_path=str(pickled), allow_pickle=True)  # the old run's own (edited) say
    (lora / "recipe.yaml").write_text(yaml.safe_dump(old))
    refused(capsys, tmp_path, ["train", recipe_of(model={"name_or_path": str(lora)}, name="next.yaml"),
                               "--output-dir", tmp_path / "next"], "pytorch_model.bin", "allow_pickle")


@pytest.fixture
def interrupted(tmp_path, recipe_of, monkeypatch):
    from hftransfer.trainer import TransferTrainer

    original = TransferTrainer._save_checkpoint

    def save_then_stop(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    path = recipe_of(train={"num_train_epochs": 2, "save_strategy": "epoch"})
    monkeypatch.setattr(TransferTrainer, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        hftransfer.train(path, output_dir=tmp_path / "run")
    monkeypatch.setattr(TransferTrainer, "_save_checkpoint", original)
    return path, rundir.last_complete_checkpoint(tmp_path / ".run.partial" / "checkpoints")


@pytest.mark.parametrize("damage, needles", [
    ("pickle", ["pytorch_model.bin", "in place of safetensors"]),
    ("link", ["symbolic link"]),
    ("state", ["trainer_state.json"]),
    ("optimizer", ["does not load", "--overwrite"]),
])
def test_resume_reads_only_a_whole_checkpoint_of_the_kit(tmp_path, work, capsys, interrupted, damage, needles):
    path, checkpoint = interrupted
    if damage == "pickle":
        (checkpoint / "model.safetensors").rename(checkpoint / "pytorch_model.bin")
    elif damage == "link":
        elsewhere = tmp_path / "elsewhere"
        shutil.move(str(checkpoint), elsewhere)
        checkpoint.symlink_to(elsewhere)
    elif damage == "state":
        (checkpoint / "trainer_state.json").write_text('{"global_step": 1e999}')
    else:
        (checkpoint / "optimizer.pt").write_bytes((checkpoint / "optimizer.pt").read_bytes()[:100])
    line = refused(capsys, tmp_path, ["train", path, "--output-dir", tmp_path / "run", "--resume"], *needles)
    assert "Traceback" not in line


# --------------------------------------------------------------------------- sources that are no source, values that fail late


def test_weights_that_do_not_fit_the_model_are_no_transfer(tmp_path, work, capsys, tiny_model_dir, toy_data):
    import torch
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_model_dir, wrong)
    save_file({"x": torch.zeros(1)}, str(wrong / "model.safetensors"))
    recipe = tiny_recipe_dict(wrong, toy_data, train={"num_train_epochs": 1})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    refused(capsys, tmp_path, ["train", tmp_path / "r.yaml", "--output-dir", tmp_path / "o"],
            "are not in its checkpoint", "scratch")
    # Another architecture's config over these weights: the same.
    shutil.copy(tiny_model_dir / "model.safetensors", wrong / "model.safetensors")
    (wrong / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2Model"],
                                                   "vocab_size": 30522, "n_embd": 32, "n_layer": 2,
                                                   "n_head": 2, "n_positions": 128}))
    refused(capsys, tmp_path, ["train", tmp_path / "r.yaml", "--output-dir", tmp_path / "o"],
            "are not in its checkpoint")


@pytest.mark.parametrize("overrides, needles", [
    (["task.text_pair_column=label"], ["task.label_column", "task.text_pair_column", "different columns"]),
    (["train.label_names=[foo]"], ["train.label_names", "the kit sets it"]),
    (["train.prediction_loss_only=true"], ["train.prediction_loss_only"]),
    (["model=null"], ["model:", "empty"]),
    (["train.adam_beta1=2"], ["adam_beta1", "Invalid beta"]),
    (["train.optim=adamw_bnb_8bit"], ["train.optim", "bitsandbytes"]),
    (["train.optim_args=garbage"], ["train.optim_args"]),
    (["train.lr_scheduler_kwargs=abc"], ["train.lr_scheduler_kwargs", "mapping"]),
    (["train.gradient_checkpointing=true", "train.gradient_checkpointing_kwargs=abc"],
     ["train.gradient_checkpointing_kwargs", "mapping"]),
    (["train.torch_compile_backend=nope"], ["train.torch_compile_backend", "'nope'"]),
    (["train.per_device_train_batch_size=99999999999999999999999"], ["per_device_train_batch_size", "beyond"]),
    (["train.neftune_noise_alpha=1e300"], ["train.neftune_noise_alpha", "beyond"]),
    (["train.num_train_epochs=1e29"], ["train.num_train_epochs", "beyond"]),
    (["strategy.layer_lr_decay=1e200"], ["strategy.layer_lr_decay", "at most 1"]),
    (["train.load_best_model_at_end=true", "train.eval_strategy=epoch", "train.save_strategy=epoch",
      "train.metric_for_best_model=nope"],
     ["train.metric_for_best_model", "'nope'", "accuracy"]),
    (["strategy.name=lora", "strategy.peft.r=abc"], ["strategy.peft.r", "'abc'"]),
    (["strategy.name=lora", "strategy.peft.lora_alpha=nan"], ["strategy.peft.lora_alpha"]),
    (["strategy.name=lora", "strategy.peft.method=prefix_tuning"], ["prefix_tuning", "learns prompts"]),
    (["data.train=/dev/zero"], ["data.train", "not a regular file"]),
])
def test_values_the_libraries_would_fail_on_late(tmp_path, work, capsys, recipe_of, overrides, needles):
    for command in ("validate", "train"):
        refused(capsys, tmp_path, [command, recipe_of(), *overrides], *needles)


@pytest.mark.parametrize("text, needles", [
    ("train: " + "[" * 5000 + "]" * 5000 + "\n", ["nested"]),
    ("? [a, b]\n: 2\n", ["mapping key", "plain value"]),
    ("name: x\nfoo: &x [*x, *x, *x]\n", ["contains itself"]),
])
def test_yaml_shapes_no_recipe_has(tmp_path, work, capsys, text, needles):
    (tmp_path / "r.yaml").write_text(text)
    refused(capsys, tmp_path, ["validate", tmp_path / "r.yaml"], *needles)


def test_a_deeply_nested_override(tmp_path, work, capsys, recipe_of):
    refused(capsys, tmp_path, ["validate", recipe_of(), "train.foo=" + "[" * 3000 + "]" * 3000], "nested")


@pytest.mark.parametrize("edit, needles", [
    (lambda c: c.update(max_position_embeddings="big"), ["config is not valid", "max_position_embeddings"]),
    (lambda c: c.update(max_position_embeddings=0), ["max_position_embeddings 0"]),
    (lambda c: c.update(hidden_size=-4), ["can be built", "negative dimension"]),
    (lambda c: c.update(num_attention_heads=3), ["can be built", "multiple"]),
    (lambda c: c.update(vocab_size=1e12), ["config is not valid", "vocab_size"]),
])
def test_model_configs_no_model_can_have(tmp_path, work, capsys, tiny_model_dir, toy_data, edit, needles):
    source = tmp_path / "src"
    shutil.copytree(tiny_model_dir, source)
    config = json.loads((source / "config.json").read_text())
    edit(config)
    (source / "config.json").write_text(json.dumps(config))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(tiny_recipe_dict(source, toy_data)))
    for command in ("validate", "train"):
        refused(capsys, tmp_path, [command, tmp_path / "r.yaml"], *needles)


def test_a_config_that_is_not_a_mapping_and_an_empty_vocabulary(tmp_path, work, capsys, tiny_model_dir, toy_data):
    source = tmp_path / "src"
    shutil.copytree(tiny_model_dir, source)
    (source / "config.json").write_text("[1, 2]")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(tiny_recipe_dict(source, toy_data)))
    refused(capsys, tmp_path, ["validate", tmp_path / "r.yaml"], "config.json", "JSON object")
    shutil.copy(tiny_model_dir / "config.json", source / "config.json")
    (source / "tokenizer.json").unlink()
    (source / "vocab.txt").write_text("")
    refused(capsys, tmp_path, ["validate", tmp_path / "r.yaml"], "tokenizer")


def test_an_inline_config_field_of_the_wrong_type(tmp_path, work, capsys, recipe_of):
    refused(capsys, tmp_path, ["validate", recipe_of(), "model.config={model_type: bert, hidden_size: abc}",
                               "model.processor=embedded"], "model.config", "hidden_size")


# --------------------------------------------------------------------------- damaged runs, environment, API


@pytest.mark.parametrize("damage", ["no-config", "config-list", "task-changed", "adapter-garbage"])
def test_a_damaged_run_is_one_line(tmp_path, work, capsys, finished, recipe_of, damage):
    if damage == "adapter-garbage":
        run = tmp_path / "lora"
        hftransfer.train(recipe_of("lora"), output_dir=run)
        (run / "adapter_config.json").write_text('{"peft_type": "NOPE"}')
    else:
        run = copy_run(finished, tmp_path)
        if damage == "no-config":
            (run / "config.json").unlink()
        elif damage == "config-list":
            (run / "config.json").write_text("[]")
        else:
            recipe = yaml.safe_load((run / "recipe.yaml").read_text())
            recipe["task"] = {"type": "image-classification"}
            (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    for argv in (["predict", run, "good film"], ["evaluate", run]):
        refused(capsys, tmp_path, argv, str(run))


def test_a_multi_task_manifest_cannot_name_a_path(tmp_path, work, capsys, finished):
    run = copy_run(finished, tmp_path)
    (run / rundir.MANIFEST).write_text(json.dumps({"tasks": {"../../../etc": {"path": "x"}}}))
    refused(capsys, tmp_path, ["push", run, "--repo-id", "me/x", "--task", "../../../etc", "--dry-run",
                               tmp_path / "staged"], "multitask.json", "damaged")


def test_token_predictions_of_a_text_longer_than_the_model(tmp_path, work, capsys, tiny_model_dir):
    from test_token import ner_recipe, toy_sentences, write_conll

    data = tmp_path / "ner"
    for split, n in (("train", 48), ("validation", 12), ("test", 12)):
        write_conll(data / f"{split}.txt", toy_sentences(n, len(split)))
    run = hftransfer.train(ner_recipe(tiny_model_dir, data), output_dir=tmp_path / "run").run_dir
    text = "john visited paris " + "and then slept " * 100 + "mary visited london"
    [entities] = hftransfer.predict(run, [text])  # 128 positions; the text is ~330 sub-words
    found = {(e["word"], e["entity_group"]) for e in entities}
    assert ("john", "PER") in found or ("mary", "PER") in found  # no index error, the text is tagged


def test_a_cache_that_is_a_file_or_a_damaged_entry(tmp_path, work, capsys, recipe_of, monkeypatch):
    (tmp_path / "cache-file").write_text("x")
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache-file"))
    refused(capsys, tmp_path, ["train", recipe_of("feature-extraction"), "--output-dir", tmp_path / "o"],
            "HFTRANSFER_CACHE")
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    hftransfer.train(recipe_of("feature-extraction"), output_dir=tmp_path / "a")
    for entry in (tmp_path / "cache" / "features").glob("*.safetensors"):
        entry.write_bytes(entry.read_bytes()[:50])  # truncated entries are computed again
    result = hftransfer.train(recipe_of("feature-extraction"), output_dir=tmp_path / "b")
    assert result.metrics["train"]["steps"] > 0


@pytest.mark.parametrize("name", ["RANK", "LOCAL_RANK", "WORLD_SIZE"])
def test_launcher_variables_that_are_not_numbers(name, tmp_path, work, capsys, recipe_of, monkeypatch):
    monkeypatch.setenv(name, "abc")
    refused(capsys, tmp_path, ["train", recipe_of(), "--output-dir", tmp_path / "o"], name, "not a number")


def test_the_trainer_says_which_process_is_the_main_one(tmp_path, work, capsys, recipe_of, monkeypatch):
    # A stray RANK without a launcher: the Trainer trains alone, as process 0, so this process
    # writes the run and prints its summary (reading RANK, it kept neither).
    monkeypatch.setenv("RANK", "1")
    rc, out, err = run_cli(capsys, "train", recipe_of(), "--output-dir", tmp_path / "o")
    assert rc == 0, err
    assert (tmp_path / "o" / "metrics.json").is_file() and f"run saved to {tmp_path / 'o'}" in out


def test_the_cli_prints_the_summary_as_the_result_says(tmp_path, work, capsys, recipe_of, monkeypatch):
    import hftransfer.api

    for main in (True, False):
        result = hftransfer.api.RunResult(tmp_path / "o", {"test": {"accuracy": 1.0}}, main_process=main)
        monkeypatch.setattr(hftransfer.api, "train", lambda *args, **kwargs: result)
        rc, out, err = run_cli(capsys, "train", recipe_of())
        assert rc == 0 and err == ""
        assert ("run saved to" in out) == main and ('"accuracy": 1.0' in out) == main


def test_ls_skips_what_is_not_a_readable_recipe(tmp_path, work, capsys):
    (work / "recipes" / "x.yaml").mkdir(parents=True)
    (work / "recipes" / "latin1.yaml").write_bytes("# caf\xe9\n".encode("latin-1"))
    rc, out, err = run_cli(capsys, "ls")
    assert rc == 0, err
    assert "latin1.yaml" in out


@pytest.mark.parametrize("call, needles", [
    (lambda r: hftransfer.train(None), ["recipe"]),
    (lambda r: hftransfer.train(5), ["recipe"]),
    (lambda r: hftransfer.train(r, [5]), ["overrides"]),
    (lambda r: hftransfer.train(r, "train.seed=1"), ["overrides"]),
    (lambda r: hftransfer.train(r, output_dir=5), ["output_dir"]),
])
def test_the_python_api_checks_its_arguments(tmp_path, work, recipe_of, call, needles):
    from helpers import user_error

    user_error(*needles, call=lambda: call(recipe_of()))


def test_predict_takes_one_text_or_a_list(finished):
    assert len(hftransfer.predict(finished, "a lovely film")) == 1
    with pytest.raises(HFTransferError, match="inputs are texts"):
        hftransfer.predict(finished, [5])
