"""Source models: paths that do not exist or hold no weights, pickle-only weights, remote code and
LoRA targets that the model lacks all fail with one clear line; the opt-ins work.

``models.resolve`` is checked directly (no weights are loaded); the CLI cases use the tiny BERT.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import assert_cli_error, run_cli, tree, user_error

from hftransfer.models import load_config, resolve
from hftransfer.recipe import ModelSpec

# --------------------------------------------------------------------------- helpers


def copy_model(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


@pytest.fixture(scope="module")
def pickle_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT with its weights as pytorch_model.bin only (a pickle)."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("pickle-bert") / "model"
    shutil.copytree(tiny_model_dir, out)
    state = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    torch.save(state, out / "pytorch_model.bin")
    return out


def write_recipe(tmp_path: Path, model: dict, toy_data: Path, strategy: dict | None = None) -> Path:
    recipe = {
        "name": "models",
        "model": model,
        "data": {"train": str(toy_data / "train.csv"), "validation": str(toy_data / "validation.csv")},
        "strategy": strategy or {"name": "full"},
        "train": {"num_train_epochs": 1, "per_device_train_batch_size": 32, "save_strategy": "no",
                  "disable_tqdm": True},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- resolve (no weights loaded)


def test_local_model_ok(tiny_model_dir):
    assert resolve(ModelSpec(name_or_path=str(tiny_model_dir))) == str(tiny_model_dir)


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no-such-model-dir-hft",
                                  "a/b/c"])
def test_path_that_does_not_exist(name):
    user_error("model.name_or_path", repr(name), "does not exist",
               call=lambda: resolve(ModelSpec(name_or_path=name)))


@pytest.mark.parametrize("name", ["not a hub id!", "bad//id", "-leading-dash"])
def test_neither_path_nor_hub_id(name):
    msg = user_error("model.name_or_path", call=lambda: resolve(ModelSpec(name_or_path=name)))
    assert "does not exist" in msg or "Hub id" in msg


def test_model_path_is_a_file(tiny_model_dir):
    path = tiny_model_dir / "config.json"
    user_error("model.name_or_path", "config.json", "is a file", "directory",
               call=lambda: resolve(ModelSpec(name_or_path=str(path))))


def test_directory_without_config(tmp_path):
    (tmp_path / "empty-model").mkdir()
    user_error("model.name_or_path", "empty-model", "config.json",
               call=lambda: resolve(ModelSpec(name_or_path=str(tmp_path / "empty-model"))))


def test_directory_without_weights(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "no-weights", drop=("model.safetensors",))
    user_error("model.name_or_path", "no-weights", "no model weights", "safetensors",
               call=lambda: resolve(ModelSpec(name_or_path=str(path))))


def test_unreadable_config(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "bad-config")
    (path / "config.json").write_text("{not json", encoding="utf-8")
    user_error("config.json", "JSON", call=lambda: resolve(ModelSpec(name_or_path=str(path))))


def test_pickle_only_is_refused_with_the_opt_in_named(pickle_model_dir):
    user_error("model.name_or_path", "pytorch_model.bin", "pickle", "safetensors",
               "model.allow_pickle=true",
               call=lambda: resolve(ModelSpec(name_or_path=str(pickle_model_dir))))


def test_pickle_only_passes_with_the_opt_in(pickle_model_dir):
    spec = ModelSpec(name_or_path=str(pickle_model_dir), allow_pickle=True)
    assert resolve(spec) == str(pickle_model_dir)


def test_pickle_opt_in_loads_the_same_weights(pickle_model_dir, tiny_model_dir):
    """With the opt-in, the strategy really loads the pickled encoder (not a random one)."""
    import torch
    from safetensors.torch import load_file

    from hftransfer.registry import get_strategy, get_task

    task_cls = get_task("text-classification")
    strategy_cls = get_strategy("full")
    strategy = strategy_cls(strategy_cls.Options(), task_cls(task_cls.Options()))
    spec = ModelSpec(name_or_path=str(pickle_model_dir), allow_pickle=True)
    model = strategy.build_model(spec, ["neg", "pos"])
    source = load_file(tiny_model_dir / "model.safetensors")
    loaded = model.state_dict()
    key = next(k for k in source if k.endswith("word_embeddings.weight"))
    target = next(k for k in loaded if k.endswith("word_embeddings.weight"))
    assert torch.equal(source[key], loaded[target])
    assert model.config.num_labels == 2


def test_pickle_alongside_safetensors_needs_no_opt_in(tiny_model_dir, pickle_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "both")
    shutil.copy(pickle_model_dir / "pytorch_model.bin", path / "pytorch_model.bin")
    assert resolve(ModelSpec(name_or_path=str(path))) == str(path)


def test_remote_code_is_refused_with_the_opt_in_named(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "remote")
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (path / "config.json").write_text(json.dumps(config))
    user_error("model.name_or_path", "remote", "remote code", "auto_map",
               "model.trust_remote_code=true",
               call=lambda: resolve(ModelSpec(name_or_path=str(path))))
    assert resolve(ModelSpec(name_or_path=str(path), trust_remote_code=True)) == str(path)


def test_lora_target_check_accepts_real_modules_and_rejects_absent_ones(tiny_model_dir):
    from hftransfer.registry import get_task
    from hftransfer.strategies.peft import check_targets

    task = get_task("text-classification")(get_task("text-classification").Options())
    config = load_config(str(tiny_model_dir), ModelSpec(name_or_path=str(tiny_model_dir)))
    check = lambda targets: check_targets({"target_modules": targets}, task, config)  # noqa: E731
    check(["query", "value"])
    check("all-linear")
    check(r".*\.attention\.self\.query")
    msg = user_error("strategy.peft.target_modules", "'q_proj'", "not found", "query",
                     call=lambda: check(["query", "q_proj"]))
    assert "'query'" not in msg.split("not found")[0]  # only the absent one is blamed


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("case", ["missing", "file", "no-config", "no-weights"])
def test_cli_bad_model_path(case, tmp_path, work, capsys, tiny_model_dir, toy_data):
    if case == "missing":
        path, needles = tmp_path / "nowhere", ["model.name_or_path", "nowhere", "does not exist"]
    elif case == "file":
        path, needles = tiny_model_dir / "config.json", ["config.json", "is a file"]
    elif case == "no-config":
        path = copy_model(tiny_model_dir, tmp_path / "m", drop=("config.json",))
        needles = ["model.name_or_path", "config.json"]
    else:
        path = copy_model(tiny_model_dir, tmp_path / "m", drop=("model.safetensors",))
        needles = ["model.name_or_path", "no model weights"]
    recipe = write_recipe(tmp_path, {"name_or_path": str(path)}, toy_data)
    before = tree(tmp_path)
    rc, out, err = run_cli(capsys, "train", recipe)
    assert_cli_error(rc, err, *needles)
    assert tree(tmp_path) == before
    assert not (work / "runs").exists()


def test_cli_model_without_tokenizer(tmp_path, work, capsys, tiny_model_dir, toy_data):
    # Without tokenizer files transformers builds an empty tokenizer that maps every word to
    # [UNK]; training on that "succeeds" and learns nothing. It must be refused up front.
    path = copy_model(tiny_model_dir, tmp_path / "m",
                      drop=("tokenizer.json", "tokenizer_config.json"))
    recipe = write_recipe(tmp_path, {"name_or_path": str(path)}, toy_data)
    rc, out, err = run_cli(capsys, "train", recipe, "--output-dir", tmp_path / "run")
    assert_cli_error(rc, err, "tokenizer")
    assert not (tmp_path / "run").exists()


def test_cli_pickle_refused_then_trains_with_opt_in(tmp_path, work, capsys, pickle_model_dir,
                                                    toy_data):
    recipe = write_recipe(tmp_path, {"name_or_path": str(pickle_model_dir)}, toy_data)
    rc, _, err = run_cli(capsys, "train", recipe, "--output-dir", tmp_path / "run")
    assert_cli_error(rc, err, "pytorch_model.bin", "model.allow_pickle=true")
    assert not (tmp_path / "run").exists()

    rc, out, err = run_cli(capsys, "train", recipe, "model.allow_pickle=true",
                           "--output-dir", tmp_path / "run")
    assert rc == 0, err
    run = tmp_path / "run"
    assert (run / "metrics.json").exists() and (run / "model.safetensors").exists()
    assert not (run / "pytorch_model.bin").exists()  # the run itself is saved safely
    assert yaml.safe_load((run / "recipe.yaml").read_text())["model"]["allow_pickle"] is True


def test_cli_remote_code_refused(tmp_path, work, capsys, tiny_model_dir, toy_data):
    path = copy_model(tiny_model_dir, tmp_path / "remote")
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_x.XForSeq"}
    (path / "config.json").write_text(json.dumps(config))
    recipe = write_recipe(tmp_path, {"name_or_path": str(path)}, toy_data)
    before = tree(tmp_path)
    rc, _, err = run_cli(capsys, "train", recipe)
    assert_cli_error(rc, err, "remote code", "model.trust_remote_code=true")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("targets, needles", [
    (["query", "q_proj"], ["'q_proj'", "query", "value"]),
    ("nothing_like_this.*", ["'nothing_like_this.*'"]),
])
def test_cli_lora_targets_absent_from_the_model(tmp_path, work, capsys, tiny_model_dir, toy_data,
                                                targets, needles):
    recipe = write_recipe(tmp_path, {"name_or_path": str(tiny_model_dir)}, toy_data,
                          strategy={"name": "lora", "peft": {"target_modules": targets}})
    before = tree(tmp_path)
    rc, _, err = run_cli(capsys, "train", recipe, "--output-dir", tmp_path / "run")
    assert_cli_error(rc, err, "strategy.peft.target_modules", "not found", *needles)
    assert tree(tmp_path) == before
