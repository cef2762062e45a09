"""Model cards: Hub metadata that ``huggingface_hub`` parses back, a model-index that repeats
``metrics.json``, and a body that matches the expected pattern (setfit-style)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import run_cli, tiny_recipe_dict
from huggingface_hub import ModelCard

import hftransfer
from hftransfer.cards import RunFiles, render_card, write_cards
from hftransfer.models import source_license
from hftransfer.recipe import EMBEDDED_MODEL_ID, load_recipe

# The tiny runs these tests render cards for: one epoch is enough.
ONE_EPOCH = {"num_train_epochs": 1, "learning_rate": 3e-3}

HEADINGS = ("## How it was transferred", "## Results", "## Training hyper-parameters",
            "## How to use", "## Reproduce", "## Intended use and limitations")


def recipe_dict(model: str, toy_data: Path, strategy: str = "full", **sections) -> dict:
    return tiny_recipe_dict(model, toy_data, strategy, **{"train": ONE_EPOCH, **sections})


def fake_metrics(base_model: str, strategy: str = "full", **extra) -> dict:
    return {"strategy": strategy, "base_model": base_model, "task": "text-classification",
            "labels": ["negative", "positive"], "data": {"train": 64, "validation": 16, "test": 16},
            "validation": {"loss": 0.4, "accuracy": 0.8125, "f1": 0.8},
            "test": {"loss": 0.5, "accuracy": 0.75, "f1": 0.7333},
            "params": {"trainable": 1000, "total": 4000},
            "train": {"runtime_s": 1.0, "samples_per_second": 64.0, "peak_rss_mb": 500.0, "world_size": 1},
            **extra}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, toy_data) -> dict[str, Path]:
    """A full and a LoRA run of the tiny model, 1 epoch each."""
    base = tmp_path_factory.mktemp("card-runs")
    return {s: hftransfer.train(recipe_dict(str(tiny_model_dir), toy_data, s), output_dir=base / s).run_dir
            for s in ("full", "lora")}


def model_index(card: ModelCard) -> dict[tuple[str, str], float]:
    return {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results or []}


@pytest.mark.parametrize("strategy,library", [("full", "transformers"), ("lora", "peft")])
def test_run_card_parses_and_repeats_metrics(runs, strategy, library, tiny_model_dir):
    run = runs[strategy]
    card = ModelCard.load(run / "README.md")
    metrics = json.loads((run / "metrics.json").read_text())
    assert card.data.library_name == library
    assert card.data.pipeline_tag == "text-classification"
    assert {"hftransfer", f"strategy-{strategy}", "text-classification"} <= set(card.data.tags)
    expected = {(split, name): value for split in ("validation", "test")
                for name, value in metrics[split].items() if name != "loss"}
    assert expected and model_index(card) == expected
    # A local source directory is not a Hub id: named in the body, kept out of the metadata.
    assert card.data.base_model is None
    assert f"`{tiny_model_dir}`" in card.text


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_run_card_body_matches_the_pattern(runs, strategy, tiny_model_dir):
    run = runs[strategy]
    text = (run / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    front, body = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, re.S).groups()
    assert body.lstrip().startswith(f"# tiny-{strategy}\n")
    positions = [body.index(h) for h in HEADINGS]
    assert positions == sorted(positions), "sections out of order"
    assert re.search(rf"\| source model \| `{re.escape(str(tiny_model_dir))}` \|", body)
    assert re.search(rf"\| strategy \| `{strategy}` \|", body)
    pct = 100 * metrics["params"]["trainable"] / metrics["params"]["total"]
    assert f"{metrics['params']['trainable']:,} of {metrics['params']['total']:,} ({pct:.2f}%)" in body
    assert re.search(r"\| validation \| [0-9.]+ \| [0-9.]+ \|", body)
    assert re.search(r"\| test \| [0-9.]+ \| [0-9.]+ \|", body)
    assert f"| test | {metrics['test']['accuracy']:.4f} | {metrics['test']['f1']:.4f} |" in body
    assert "baseline" not in body  # no baseline in metrics.json, none invented
    for row in (r"\| learning_rate \| 0\.003 \|", r"\| num_train_epochs \| 1 \|",
                r"\| per_device_train_batch_size \| 16 \|", r"\| seed \| 0 \|",
                r"\| warmup_steps \| 0\.1 \(a fraction", r"\| weight_decay \| 0\.01 \|"):
        assert re.search(row, body), row
    assert "hftransfer train recipe.yaml" in body
    assert "```yaml\n" + (run / "recipe.yaml").read_text().strip() + "\n```" in body
    if strategy == "lora":
        assert "PeftModel.from_pretrained" in body and "LORA" in body
    else:
        assert 'pipeline("text-classification", model=' in body


def test_card_command_rerenders_the_same_card(runs, capsys):
    run = runs["lora"]
    before = (run / "README.md").read_bytes()
    rc, out, err = run_cli(capsys, "card", run)
    assert rc == 0, err
    assert (run / "README.md").read_bytes() == before


def test_a_default_changed_in_code_does_not_change_an_old_runs_card(runs, capsys, monkeypatch):
    # The card renders from what the run recorded (logs/training_args.json), not from today's
    # defaults of the kit or the strategy.
    from hftransfer.recipe import KIT_DEFAULTS
    from hftransfer.registry import get_strategy

    run = runs["full"]
    before = (run / "README.md").read_bytes()
    assert json.loads((run / "logs" / "training_args.json").read_text())["weight_decay"] == 0.01
    monkeypatch.setitem(KIT_DEFAULTS, "weight_decay", 0.3)
    monkeypatch.setitem(KIT_DEFAULTS, "per_device_train_batch_size", 7)
    monkeypatch.setattr(get_strategy("full"), "defaults", {"learning_rate": 9e-9, "warmup_steps": 0.0})
    for _ in range(2):
        rc, out, err = run_cli(capsys, "card", run)
        assert rc == 0, err
        assert (run / "README.md").read_bytes() == before


def test_embedded_source_gives_hub_metadata_and_its_license(toy_data, tmp_path):
    from huggingface_hub import metadata_load

    from hftransfer.models import embedded_model_path

    recorded = source_license(load_recipe(recipe_dict("embedded", toy_data, "lora")).model)
    assert recorded["license"] == metadata_load(Path(embedded_model_path()) / "README.md")["license"]
    recipe = load_recipe(recipe_dict("embedded", toy_data, "lora"))
    metrics = fake_metrics(EMBEDDED_MODEL_ID, "lora", base_model_license=recorded)
    card = render_card(RunFiles(recipe, metrics, None, {"peft_type": "LORA", "r": 8}))
    path = tmp_path / "README.md"
    card.save(str(path))
    loaded = ModelCard.load(path)
    assert loaded.data.base_model == EMBEDDED_MODEL_ID
    assert loaded.data.license == "apache-2.0"
    assert loaded.data.library_name == "peft"
    assert f"`{EMBEDDED_MODEL_ID}`" in loaded.text


def test_the_license_is_recorded_from_a_local_source_readme(toy_data, tiny_model_dir, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_model_dir, source)
    recipe = load_recipe(recipe_dict(str(source), toy_data))
    assert source_license(recipe.model) == {}  # no README: unknown
    (source / "README.md").write_text("---\nlicense: mit\n---\n# a model\n")
    assert source_license(recipe.model) == {"license": "mit"}
    run = hftransfer.train(recipe_dict(str(source), toy_data), output_dir=tmp_path / "run").run_dir
    assert json.loads((run / "metrics.json").read_text())["base_model_license"] == {"license": "mit"}
    (source / "README.md").write_text("---\nlicense: other\n---\n")  # the source changes later...
    write_cards(run)
    assert ModelCard.load(run / "README.md").data.license == "mit"  # ...the run's card does not


def test_baseline_rows_come_only_from_metrics(toy_data, tiny_model_dir):
    recipe = load_recipe(recipe_dict(str(tiny_model_dir), toy_data))
    baseline = {"strategy": "scratch", "validation": {"accuracy": 0.5, "f1": 0.3333},
                "test": {"accuracy": 0.4375, "f1": 0.25}}
    card = render_card(RunFiles(recipe, fake_metrics(str(tiny_model_dir), baseline=baseline), None, None))
    assert "| validation (`scratch` baseline) | 0.5000 | 0.3333 |" in card.text
    assert "| test (`scratch` baseline) | 0.4375 | 0.2500 |" in card.text
    # The model-index holds this model's results only.
    assert model_index(card) == {("validation", "accuracy"): 0.8125, ("validation", "f1"): 0.8,
                                 ("test", "accuracy"): 0.75, ("test", "f1"): 0.7333}


def test_hub_dataset_and_merged_card(tiny_model_dir, toy_data):
    recipe = load_recipe(recipe_dict(str(tiny_model_dir), toy_data, "lora",
                                     data={"dataset": "stanfordnlp/sst2", "train": None}))
    run = RunFiles(recipe, fake_metrics(str(tiny_model_dir), "lora"), None, {"peft_type": "LORA", "r": 8})
    card = render_card(run, merged=True)
    assert card.data.datasets == ["stanfordnlp/sst2"]
    assert card.data.library_name == "transformers"
    assert "merged into the base weights" in card.text
    assert "PeftModel" not in card.text


def test_write_cards_returns_the_readme(runs):
    paths = write_cards(runs["full"])
    assert paths == [runs["full"] / "README.md"]
    assert ModelCard.load(paths[0]).data.eval_results


# --------------------------------------------------------------------------- cards say only what is true


def _without_test(metrics: dict) -> dict:
    metrics = {k: v for k, v in metrics.items() if k != "test"}
    metrics["data"] = {**metrics["data"], "test": 0}
    return metrics


def test_a_run_without_a_test_split_claims_none(tiny_model_dir, toy_data):
    recipe = load_recipe(recipe_dict(str(tiny_model_dir), toy_data, data={"test": None}))
    card = render_card(RunFiles(recipe, _without_test(fake_metrics(str(tiny_model_dir))), None, None))
    assert "read once" not in card.text and "test split was" not in card.text
    assert "There was no test split" in card.text
    assert {split for split, _ in model_index(card)} == {"validation"}
    with_test = render_card(RunFiles(load_recipe(recipe_dict(str(tiny_model_dir), toy_data)),
                                     fake_metrics(str(tiny_model_dir)), None, None))
    assert "the test split was read once, at the end" in with_test.text


def test_model_index_names_the_data_not_the_recipe(tiny_model_dir, toy_data, tmp_path):
    from hftransfer.cards import data_name

    recipe = load_recipe(recipe_dict(str(tiny_model_dir), toy_data, name="my-recipe"))
    card = render_card(RunFiles(recipe, fake_metrics(str(tiny_model_dir)), None, None))
    names = {(r.dataset_name, r.dataset_type) for r in card.data.eval_results}
    assert names == {(toy_data.name, toy_data.name)}  # toy_data/train.csv: the folder names the data
    assert "my-recipe" not in {n for pair in names for n in pair}
    hub = load_recipe(recipe_dict(str(tiny_model_dir), toy_data, data={"dataset": "stanfordnlp/sst2", "train": None,
                                                                        "validation": None, "test": None}))
    card = render_card(RunFiles(hub, fake_metrics(str(tiny_model_dir)), None, None))
    assert {r.dataset_name for r in card.data.eval_results} == {"stanfordnlp/sst2"}
    spec = lambda train: load_recipe(recipe_dict(str(tiny_model_dir), toy_data, data={"train": train})).data  # noqa: E731
    (tmp_path / "reviews").mkdir()
    shutil.copy(toy_data / "train.csv", tmp_path / "reviews" / "my_reviews.csv")
    assert data_name(spec(str(tmp_path / "reviews" / "my_reviews.csv"))) == "my_reviews.csv"
    assert data_name(spec(str(tmp_path / "reviews" / "*.csv"))) == "reviews"
    assert data_name(spec(str(tmp_path / "reviews"))) == "reviews"


def test_the_conll2003_card_names_conll2003(shared_data, tiny_model_dir, toy_data):
    from hftransfer.cards import data_name

    recipe = recipe_dict(str(tiny_model_dir), toy_data)
    recipe["task"] = {"type": "token-classification"}
    recipe["data"] = {s: str(shared_data / "conll2003" / f"{s}.txt") for s in ("train", "validation", "test")}
    assert data_name(load_recipe(recipe).data) == "conll2003"


def test_cards_link_no_package_index_page(tiny_model_dir, toy_data):
    recipe = load_recipe(recipe_dict(str(tiny_model_dir), toy_data))
    card = render_card(RunFiles(recipe, fake_metrics(str(tiny_model_dir)), None, None))
    assert "pypi.org" not in card.text
    assert "pypi.org" not in _multitask_card(tiny_model_dir, toy_data).text


def _multitask_card(tiny_model_dir, toy_data, test: bool = True):
    from hftransfer.cards import render_multitask_card

    splits = ("train", "validation", "test") if test else ("train", "validation")
    recipe = load_recipe({
        "name": "tiny-multitask", "model": {"name_or_path": str(tiny_model_dir)},
        "tasks": {"sentiment": {"task": {"type": "text-classification"},
                                "data": {s: str(toy_data / f"{s}.csv") for s in splits}},
                  "ner": {"task": {"type": "token-classification"},
                          "data": {"dataset": "eriktks/conll2003", "validation_split": "validation"}}},
        "strategy": {"name": "multitask"}, "train": {"num_train_epochs": 1}})
    per_split = lambda s: {"sentiment": {"accuracy": 0.75, "f1": 0.7, "loss": 0.5},  # noqa: E731
                           "ner": {"precision": 0.5, "recall": 0.4, "f1": 0.45, "f1_PER": 0.6}}
    metrics = {"strategy": "multitask", "base_model": str(tiny_model_dir), "validation": per_split("validation"),
               "tasks": {"sentiment": "text-classification", "ner": "token-classification"},
               "params": {"tasks": {}}, "train": {"runtime_s": 1.0}}
    if test:
        metrics["test"] = per_split("test")
    return render_multitask_card(RunFiles(recipe, metrics, None, None))


def test_multitask_card_has_a_pipeline_tag_and_a_model_index_per_task(tiny_model_dir, toy_data, tmp_path):
    card = _multitask_card(tiny_model_dir, toy_data)
    card.save(str(tmp_path / "README.md"))
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.pipeline_tag == "text-classification"  # the first task's
    entries = {(r.task_name, r.task_type, r.dataset_name, r.dataset_split, r.metric_type): r.metric_value
               for r in loaded.data.eval_results}
    assert entries[("sentiment", "text-classification", toy_data.name, "test", "accuracy")] == 0.75
    assert entries[("ner", "token-classification", "eriktks/conll2003", "validation", "f1")] == 0.45
    assert entries[("ner", "token-classification", "eriktks/conll2003", "test", "f1_PER")] == 0.6
    assert not any(key[-1] == "loss" for key in entries)
    assert loaded.data.datasets == ["eriktks/conll2003"]
    assert "test splits were read once" in loaded.text
    untested = _multitask_card(tiny_model_dir, toy_data, test=False)
    assert "read once" not in untested.text and "There were no test splits" in untested.text
