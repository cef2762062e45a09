"""Recipes: YAML loading, typed values, dotted overrides and validation of user mistakes.

Everything here fails (or passes) before a model or a data file is touched, so no test needs a
model: library calls must raise ``HFTransferError`` with one line that says what is wrong, where,
and what to do, and ``hftransfer validate`` must turn that into one ``error:`` line and exit 2.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from helpers import assert_cli_error, run_cli, user_error

from hftransfer.recipe import Recipe, apply_overrides, load_recipe, parse_value
from hftransfer.registry import all_strategies, all_tasks

# --------------------------------------------------------------------------- helpers


def base_recipe(tmp_path: Path, **sections) -> dict:
    """A valid recipe mapping (no file or model is read by load_recipe)."""
    recipe = {
        "name": "unit",
        "model": {"name_or_path": str(tmp_path / "model")},
        "task": {"type": "text-classification"},
        "data": {"train": str(tmp_path / "train.csv")},
        "strategy": {"name": "full"},
        "train": {"num_train_epochs": 1},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


# --------------------------------------------------------------------------- positive: typed values


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # Plain YAML 1.1 reads `2e-4` as the string "2e-4"; the kit must read it as a number.
    path = write_yaml(tmp_path / "r.yaml", f"""\
model: {{name_or_path: {tmp_path / 'model'}}}
data: {{train: {tmp_path / 'train.csv'}, validation_fraction: 1e-1}}
train:
  learning_rate: 2e-4
  weight_decay: 1E-2
  num_train_epochs: 3
""")
    recipe = load_recipe(path)
    assert recipe.train["learning_rate"] == pytest.approx(2e-4)
    assert isinstance(recipe.train["learning_rate"], float)
    assert recipe.train["weight_decay"] == pytest.approx(0.01)
    assert isinstance(recipe.data.validation_fraction, float)
    assert recipe.data.validation_fraction == pytest.approx(0.1)
    assert recipe.name == "r"  # the file's stem when the recipe has no name


def test_override_exponent_becomes_float(tmp_path):
    recipe = load_recipe(base_recipe(tmp_path), ["train.learning_rate=2e-4",
                                                 "data.validation_fraction=.25"])
    assert recipe.train["learning_rate"] == pytest.approx(2e-4)
    assert isinstance(recipe.train["learning_rate"], float)
    assert recipe.data.validation_fraction == pytest.approx(0.25)


@pytest.mark.parametrize("text, expected", [
    ("2e-4", 2e-4), ("3", 3), ("true", True), ("[query, value]", ["query", "value"]),
    ("hello", "hello"), ("", ""), ("{r: 4}", {"r": 4}),
])
def test_parse_value_types_like_yaml(text, expected):
    assert parse_value(text) == expected
    assert type(parse_value(text)) is type(expected)


def test_overrides_create_and_replace_nested_keys(tmp_path):
    data = base_recipe(tmp_path, strategy={"name": "lora"})
    recipe = load_recipe(data, [
        "strategy.peft.r=4",                           # creates strategy.peft
        "strategy.peft.target_modules=[query,value]",  # a list
        "train.num_train_epochs=5",                    # replaces
        "task.text_column=sentence",
        "name=with=equals",                            # only the first '=' splits
    ])
    assert recipe.strategy == {"name": "lora", "peft": {"r": 4, "target_modules": ["query", "value"]}}
    assert recipe.strategy_options.peft == {"r": 4, "target_modules": ["query", "value"]}
    assert recipe.train["num_train_epochs"] == 5
    assert recipe.task_options.text_column == "sentence"
    assert recipe.name == "with=equals"
    # the input mapping is left alone
    assert "peft" not in data["strategy"] and data["train"]["num_train_epochs"] == 1


def test_override_creates_a_missing_section(tmp_path):
    data = base_recipe(tmp_path)
    del data["train"], data["task"]
    recipe = load_recipe(data, ["train.seed=7", "task.label_column=y"])
    assert recipe.train == {"seed": 7}
    assert recipe.task_options.label_column == "y"


def test_override_replaces_a_whole_section(tmp_path):
    recipe = load_recipe(base_recipe(tmp_path, strategy={"name": "lora", "peft": {"r": 8}}),
                         ["strategy.peft={r: 2, lora_alpha: 4}"])
    assert recipe.strategy["peft"] == {"r": 2, "lora_alpha": 4}


def test_apply_overrides_returns_a_new_mapping():
    data = {"train": {"seed": 1}}
    out = apply_overrides(data, ["train.seed=2", "a.b.c=1"])
    assert out == {"train": {"seed": 2}, "a": {"b": {"c": 1}}}
    assert data == {"train": {"seed": 1}}


def test_values_are_coerced_to_their_declared_types(tmp_path):
    recipe = load_recipe(base_recipe(tmp_path), [
        "model.allow_pickle=true", "data.max_train_samples=10", "data.validation_fraction=0",
        "train.per_device_train_batch_size=8", "name=123",
    ])
    assert recipe.model.allow_pickle is True
    assert recipe.data.max_train_samples == 10
    assert recipe.data.validation_fraction == 0.0 and isinstance(recipe.data.validation_fraction, float)
    assert recipe.train["per_device_train_batch_size"] == 8
    assert recipe.name == "123"


def test_model_shorthand_string(tmp_path):
    data = base_recipe(tmp_path)
    data["model"] = "some-org/some-model"
    assert load_recipe(data).model.name_or_path == "some-org/some-model"


def test_train_accepts_training_arguments_fields(tmp_path):
    from transformers import TrainingArguments

    from hftransfer.recipe import make_training_arguments, training_values
    from hftransfer.registry import get_strategy, get_task

    train = {"gradient_accumulation_steps": 2, "lr_scheduler_type": "cosine",
             "label_smoothing_factor": 0.1, "max_steps": 3, "logging_steps": 5,
             "warmup_steps": 0.1, "dataloader_num_workers": 0, "seed": 11,
             "learning_rate": "3e-5"}
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    assert set(train) <= fields
    recipe = load_recipe(base_recipe(tmp_path, train=train))
    assert recipe.train["learning_rate"] == pytest.approx(3e-5)  # "3e-5" string -> float
    values = training_values(recipe.train, get_task("text-classification").training_defaults,
                             get_strategy("full").defaults)
    args = make_training_arguments(values, str(tmp_path / "out"))
    assert args.gradient_accumulation_steps == 2
    assert str(args.lr_scheduler_type).endswith("cosine") or args.lr_scheduler_type == "cosine"
    assert args.label_smoothing_factor == pytest.approx(0.1)
    assert args.max_steps == 3 and args.seed == 11
    assert args.learning_rate == pytest.approx(3e-5)  # the recipe wins over strategy defaults
    assert not (tmp_path / "out").exists()  # building arguments writes nothing


def test_recipe_round_trips_through_yaml(tmp_path):
    recipe = load_recipe(base_recipe(tmp_path, strategy={"name": "lora", "peft": {"r": 4}},
                                     train={"learning_rate": 2e-4}))
    path = write_yaml(tmp_path / "again.yaml", recipe.to_yaml())
    again = load_recipe(path)
    assert again.to_dict() == recipe.to_dict()
    assert isinstance(again, Recipe)


# --------------------------------------------------------------------------- unknown keys / names


def test_unknown_top_level_key_names_it_and_lists_allowed(tmp_path):
    data = base_recipe(tmp_path)
    data["epochs"] = 3
    msg = user_error("'epochs'", call=lambda: load_recipe(data))
    for allowed in ("data", "model", "name", "strategy", "task", "train"):
        assert allowed in msg
    assert "task_options" not in msg and "strategy_options" not in msg  # internals stay hidden


@pytest.mark.parametrize("section, key, allowed", [
    ("model", "revison", ["name_or_path", "revision", "trust_remote_code", "allow_pickle"]),
    ("data", "trian", ["train", "validation", "test", "validation_fraction", "samples_per_label"]),
    ("task", "text_colum", ["text_column", "label_column", "text_pair_column"]),
])
def test_unknown_nested_key_names_it_and_lists_allowed(tmp_path, section, key, allowed):
    data = base_recipe(tmp_path, **{section: {key: "x"}})
    msg = user_error(f"{section}.{key}", call=lambda: load_recipe(data))
    for name in allowed:
        assert name in msg


def test_unknown_task_key_lists_type_among_allowed(tmp_path):
    # `type` is an allowed key of `task:`; the list of allowed keys must not leave it out.
    data = base_recipe(tmp_path, task={"colour": "red"})
    msg = user_error("task.colour", call=lambda: load_recipe(data))
    allowed = msg.split("allowed keys:", 1)[-1]
    assert "type" in allowed and "text_column" in allowed


def test_unknown_strategy_key_for_strategy_without_options_lists_allowed(tmp_path):
    # `full` has no options besides `name`: the message must still say what is allowed
    # (not end in an empty "allowed keys: ").
    data = base_recipe(tmp_path, strategy={"name": "full", "peft": {"r": 4}})
    msg = user_error("strategy.peft", call=lambda: load_recipe(data))
    allowed = msg.split("allowed keys:", 1)[-1].strip()
    assert allowed, f"no allowed keys listed: {msg!r}"
    assert "name" in allowed


def test_unknown_lora_option_lists_allowed(tmp_path):
    data = base_recipe(tmp_path, strategy={"name": "lora", "pef": {"r": 4}})
    user_error("strategy.pef", "peft", call=lambda: load_recipe(data))


def test_unknown_strategy_lists_valid_ones(tmp_path):
    msg = user_error("'lorra'", "strategy.name",
                            call=lambda: load_recipe(base_recipe(tmp_path, strategy={"name": "lorra"})))
    for name in all_strategies():
        assert name in msg


def test_unknown_task_lists_valid_ones(tmp_path):
    msg = user_error("'text-classifcation'", "task.type", call=lambda: load_recipe(
        base_recipe(tmp_path, task={"type": "text-classifcation"})))
    for name in all_tasks():
        assert name in msg


def test_unknown_train_key_suggests_the_close_match(tmp_path):
    user_error("train.learnig_rate", "TrainingArguments", "learning_rate",
                      call=lambda: load_recipe(base_recipe(tmp_path, train={"learnig_rate": 1e-3})))


def test_unknown_train_key_without_close_match(tmp_path):
    user_error("train.epochs_total_please", "TrainingArguments",
                      call=lambda: load_recipe(base_recipe(tmp_path, train={"epochs_total_please": 3})))


@pytest.mark.parametrize("key, advice", [
    ("output_dir", "--output-dir"), ("resume_from_checkpoint", "--resume"),
])
def test_train_keys_owned_by_the_kit_are_refused(tmp_path, key, advice):
    user_error(f"train.{key}", advice,
                      call=lambda: load_recipe(base_recipe(tmp_path, train={key: "x"})))


def test_unknown_peft_method_lists_valid(tmp_path):
    msg = user_error("strategy.peft.method", "'lorax'", "lora", call=lambda: load_recipe(
        base_recipe(tmp_path, strategy={"name": "lora", "peft": {"method": "lorax"}})))
    assert "ia3" in msg


def test_unknown_peft_field_lists_config_fields(tmp_path):
    user_error("strategy.peft", "rank", "lora_alpha", call=lambda: load_recipe(
        base_recipe(tmp_path, strategy={"name": "lora", "peft": {"rank": 4}})))


def test_peft_task_type_is_set_by_the_kit(tmp_path):
    user_error("strategy.peft.task_type", "remove", call=lambda: load_recipe(
        base_recipe(tmp_path, strategy={"name": "lora", "peft": {"task_type": "CAUSAL_LM"}})))


# --------------------------------------------------------------------------- wrongly typed values


@pytest.mark.parametrize("sections, needles", [
    ({"train": {"num_train_epochs": "many"}}, ["train.num_train_epochs", "'many'", "number"]),
    ({"train": {"num_train_epochs": True}}, ["train.num_train_epochs", "number"]),
    ({"train": {"per_device_train_batch_size": 1.5}}, ["train.per_device_train_batch_size", "integer"]),
    ({"train": {"learning_rate": -1e-3}}, ["train.learning_rate", "negative"]),
    ({"model": {"allow_pickle": "maybe"}}, ["model.allow_pickle", "true/false", "'maybe'"]),
    ({"model": {"name_or_path": ["a", "b"]}}, ["model.name_or_path", "string"]),
    ({"data": {"max_train_samples": "ten"}}, ["data.max_train_samples", "integer", "'ten'"]),
    ({"data": {"samples_per_label": 0}}, ["data.samples_per_label", "at least 1"]),
    ({"data": {"validation_fraction": 1.5}}, ["data.validation_fraction", "[0, 1)", "1.5"]),
    ({"task": {"max_length": 1}}, ["task.max_length", "at least 2"]),
    ({"task": {"text_column": {"a": 1}}}, ["task.text_column", "string"]),
    ({"strategy": {"name": 3}}, ["strategy.name", "string"]),
    ({"strategy": {"name": "lora", "peft": [1, 2]}}, ["strategy.peft", "mapping"]),
    ({"train": 3}, ["train", "mapping"]),
    ({"data": ["train.csv"]}, ["data", "mapping"]),
    ({"model": 3}, ["model", "mapping"]),
    ({"name": "  "}, ["name", "empty"]),
])
def test_wrongly_typed_values(tmp_path, sections, needles):
    data = base_recipe(tmp_path)
    for key, value in sections.items():  # replace, not merge, so wrong types get through
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    user_error(*needles, call=lambda: load_recipe(data))


def test_invalid_training_argument_value_fails_at_validation(tmp_path):
    # An enum value that TrainingArguments will refuse must be caught by `validate`, before
    # any data or model loads, and the message must name the key.
    data = base_recipe(tmp_path, train={"lr_scheduler_type": "cosine_wobble"})
    user_error("train.lr_scheduler_type", "cosine_wobble", "cosine",
                      call=lambda: load_recipe(data))


def test_unsupported_data_format_fails_at_validation(tmp_path):
    data = base_recipe(tmp_path, data={"format": "xlsx"})
    user_error("data.format", "'xlsx'", "csv", "parquet", call=lambda: load_recipe(data))


def test_missing_training_data(tmp_path):
    data = base_recipe(tmp_path)
    del data["data"]
    user_error("data.train", "data.dataset", call=lambda: load_recipe(data))


def test_both_local_and_hub_data(tmp_path):
    data = base_recipe(tmp_path, data={"dataset": "glue"})
    user_error("data.train", "data.dataset", "not both", call=lambda: load_recipe(data))


# --------------------------------------------------------------------------- bad overrides


@pytest.mark.parametrize("override", [
    "train.learning_rate", "=3", "train..learning_rate=1", ".seed=1", "train.=1", " =1",
])
def test_malformed_overrides(tmp_path, override):
    user_error(f"bad override {override!r}", "key.path=value",
                      call=lambda: load_recipe(base_recipe(tmp_path), [override]))


def test_override_through_a_scalar(tmp_path):
    user_error("train.num_train_epochs.x=1", "train.num_train_epochs is not a mapping",
                      call=lambda: load_recipe(base_recipe(tmp_path), ["train.num_train_epochs.x=1"]))


def test_override_unknown_key(tmp_path):
    msg = user_error("'modle'", call=lambda: load_recipe(base_recipe(tmp_path),
                                                                ["modle.name_or_path=x"]))
    assert "model" in msg.split("allowed", 1)[-1]


def test_override_unknown_train_key(tmp_path):
    user_error("train.learning_rat", "learning_rate",
                      call=lambda: load_recipe(base_recipe(tmp_path), ["train.learning_rat=1e-3"]))


def test_override_wrong_type(tmp_path):
    user_error("data.max_train_samples", "'lots'",
                      call=lambda: load_recipe(base_recipe(tmp_path), ["data.max_train_samples=lots"]))


# --------------------------------------------------------------------------- recipe files


def test_recipe_file_missing(tmp_path):
    user_error(str(tmp_path / "nope.yaml"), "does not exist",
                      call=lambda: load_recipe(tmp_path / "nope.yaml"))


def test_recipe_is_a_directory(tmp_path):
    user_error("directory", "YAML file", call=lambda: load_recipe(tmp_path))


def test_recipe_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    user_error("latin1.yaml", "UTF-8", call=lambda: load_recipe(path))


def test_recipe_invalid_yaml_says_where(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "name: x\ntrain:\n  learning_rate: [1, 2\n  seed: 3\n")
    msg = user_error("bad.yaml", "not valid YAML", "line", call=lambda: load_recipe(path))
    assert "line 4" in msg or "line 3" in msg


@pytest.mark.parametrize("text, needle", [("", "empty"), ("# only a comment\n", "empty"),
                                          ("- a\n- b\n", "mapping")])
def test_recipe_empty_or_not_a_mapping(tmp_path, text, needle):
    path = write_yaml(tmp_path / "r.yaml", text)
    user_error("r.yaml", needle, call=lambda: load_recipe(path))


# --------------------------------------------------------------------------- the CLI


def test_cli_validate_ok(tmp_path, capsys, tiny_model_dir, toy_data):
    recipe = base_recipe(tmp_path, model={"name_or_path": str(tiny_model_dir)},
                         data={"train": str(toy_data / "train.csv")})
    path = write_yaml(tmp_path / "ok.yaml", yaml.safe_dump(recipe))
    rc, out, err = run_cli(capsys, "validate", path, "train.learning_rate=2e-4")
    assert rc == 0, err
    assert out.startswith("ok:") and "text-classification" in out and "full" in out


@pytest.mark.parametrize("mutate, overrides, needles", [
    (lambda d: d.update(epochs=3), [], ["unknown key 'epochs'", "allowed keys"]),
    (lambda d: None, ["strategy.name=lorra"], ["'lorra'", "full", "lora", "scratch"]),
    (lambda d: None, ["task.type=text-regression"], ["'text-regression'", "text-classification"]),
    (lambda d: None, ["train.learning_rate"], ["bad override", "key.path=value"]),
    (lambda d: None, ["train.num_train_epochs=lots"], ["train.num_train_epochs", "'lots'"]),
    (lambda d: d["train"].update(learnig_rate=1), [], ["train.learnig_rate", "learning_rate"]),
])
def test_cli_validate_errors(tmp_path, capsys, mutate, overrides, needles):
    data = base_recipe(tmp_path)
    mutate(data)
    path = write_yaml(tmp_path / "r.yaml", yaml.safe_dump(data))
    before = sorted(tmp_path.rglob("*"))
    rc, out, err = run_cli(capsys, "validate", path, *overrides)
    assert_cli_error(rc, err, *needles)
    assert out == ""
    assert sorted(tmp_path.rglob("*")) == before


def test_cli_validate_missing_recipe(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "validate", tmp_path / "missing.yaml")
    assert_cli_error(rc, err, "missing.yaml", "does not exist")


def test_cli_usage_error_is_one_line(capsys):
    rc, _, err = run_cli(capsys, "train")
    assert_cli_error(rc, err, "recipe", "--help")
    rc, _, err = run_cli(capsys, "frobnicate")
    assert_cli_error(rc, err, "frobnicate", "--help")
