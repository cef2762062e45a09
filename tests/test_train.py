"""End-to-end training on a tiny random-init BERT: every strategy, the run-directory and
metrics.json contracts, loading outside the kit, atomic writes."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import assert_same_predictions, run_without_the_kit, tiny_recipe_dict
from safetensors.torch import load_file

import hftransfer
from hftransfer.cli import main
from hftransfer.errors import HFTransferError


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, toy_data):
    """One trained run per strategy, shared by the tests of this module."""
    out = {}
    base = tmp_path_factory.mktemp("runs")
    for strategy in ("full", "lora", "scratch"):
        recipe = tiny_recipe_dict(tiny_model_dir, toy_data, strategy, train={
            "num_train_epochs": 8, "learning_rate": 3e-3, "save_strategy": "epoch"})
        out[strategy] = hftransfer.train(recipe, output_dir=base / strategy)
    return out


def test_metrics_json_follows_the_contract(runs):
    for strategy, result in runs.items():
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        assert metrics["strategy"] == strategy
        assert metrics["task"] == "text-classification"
        assert set(metrics["validation"]) >= {"accuracy", "f1"}
        assert set(metrics["test"]) >= {"accuracy", "f1"}
        assert 0 < metrics["params"]["trainable"] <= metrics["params"]["total"]
        train = metrics["train"]
        assert train["runtime_s"] > 0 and train["samples_per_second"] > 0
        assert train["peak_rss_mb"] > 50 and train["world_size"] == 1
        assert metrics["labels"] == ["negative", "positive"]


def test_run_directory_contents(runs):
    full, lora = runs["full"].run_dir, runs["lora"].run_dir
    for name in ("recipe.yaml", "metrics.json", "README.md", "config.json", "model.safetensors",
                 "tokenizer.json", "logs/log_history.json"):
        assert (full / name).exists(), name
    assert not (full / "checkpoints").exists()  # kept only with --keep-checkpoints (test_polish.py)
    for name in ("adapter_config.json", "adapter_model.safetensors", "config.json"):
        assert (lora / name).exists(), name
    assert not (lora / "model.safetensors").exists()
    assert not list(full.parent.glob(".*.partial"))  # staging renamed away
    assert "strategy-lora" in (lora / "README.md").read_text()


def test_transfer_learns_the_toy_task(runs):
    # The toy label is one sentiment word; a trained model must beat chance clearly.
    assert runs["full"].metrics["validation"]["accuracy"] >= 0.75


def test_lora_trains_under_one_percent_plus_head_and_keeps_base(runs, tiny_model_dir):
    params = runs["lora"].metrics["params"]
    assert params["trainable"] < 0.1 * params["total"]
    adapter = load_file(runs["lora"].run_dir / "adapter_model.safetensors")
    assert any("lora_A" in k for k in adapter) and any("classifier" in k for k in adapter)
    assert not any("word_embeddings" in k for k in adapter)


def test_lora_base_weights_unchanged(tiny_model_dir, tiny_recipe, tmp_path):
    from hftransfer.trainer import TransferTrainer

    captured = {}
    original = TransferTrainer.train

    def spy(self, *args, **kwargs):
        before = {n: p.detach().clone() for n, p in self.model.named_parameters() if "base_layer" in n}
        out = original(self, *args, **kwargs)
        captured["before"] = before
        captured["after"] = {n: p.detach() for n, p in self.model.named_parameters() if "base_layer" in n}
        captured["lora"] = {n: p.detach().clone() for n, p in self.model.named_parameters() if "lora_B" in n}
        return out

    TransferTrainer.train = spy
    try:
        hftransfer.train(tiny_recipe("lora"), output_dir=tmp_path / "run")
    finally:
        TransferTrainer.train = original
    assert captured["before"]
    for name, before in captured["before"].items():
        assert torch.equal(before, captured["after"][name]), name
    assert any(p.abs().sum() > 0 for p in captured["lora"].values())  # the adapter did train


def test_scratch_is_randomly_initialised(tiny_model_dir, tiny_recipe, tmp_path):
    from hftransfer.recipe import load_recipe
    from hftransfer.registry import get_strategy, get_task

    recipe = load_recipe(tiny_recipe("scratch"))
    task = get_task("text-classification")(recipe.task_options)
    scratch = get_strategy("scratch")(recipe.strategy_options, task).build_model(recipe.model, ["a", "b"])
    full = get_strategy("full")(recipe.strategy_options, task).build_model(recipe.model, ["a", "b"])
    w_scratch = scratch.bert.encoder.layer[0].attention.self.query.weight
    w_full = full.bert.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(w_scratch, w_full)


def test_predict_json_uses_label_names_and_matches_pipeline(runs, capsys, tmp_path):
    texts = ["the film was great", "it was awful and grim", "a lovely warm day"]
    for strategy in ("full", "lora"):
        run_dir = runs[strategy].run_dir
        assert main(["predict", str(run_dir), "--json", *texts]) == 0
        kit = json.loads(capsys.readouterr().out)
        assert [set(r) for r in kit] == [{"label", "score"}] * 3
        assert {r["label"] for r in kit} <= {"negative", "positive"}
        # The same predictions from plain transformers/peft in a process without the kit.
        if strategy == "full":
            load = f"model = {str(run_dir)!r}"
        else:
            base = json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
            load = textwrap.dedent(f"""
                from peft import PeftModel
                from transformers import AutoConfig, AutoModelForSequenceClassification
                cfg = AutoConfig.from_pretrained({str(run_dir)!r})
                base = AutoModelForSequenceClassification.from_pretrained({base!r}, config=cfg)
                model = PeftModel.from_pretrained(base, {str(run_dir)!r})
            """)
        script = textwrap.dedent(f"""
            import json, sys
            from transformers import AutoTokenizer, pipeline
            {{load}}
            pipe = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained({str(run_dir)!r}))
            out = pipe({texts!r})
            print(json.dumps(out))
        """).replace("{load}", load.replace("\n", "\n" + " " * 0))
        assert_same_predictions(run_without_the_kit(script, tmp_path), kit)


def test_evaluate_reproduces_test_metrics(runs, capsys):
    run_dir = runs["full"].run_dir
    assert main(["evaluate", str(run_dir), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(runs["full"].metrics["test"]["accuracy"])


def test_existing_run_is_not_overwritten(runs, tiny_recipe):
    run_dir = runs["full"].run_dir
    before = (run_dir / "metrics.json").read_text()
    with pytest.raises(HFTransferError, match="already exists"):
        hftransfer.train(tiny_recipe("full"), output_dir=run_dir)
    assert (run_dir / "metrics.json").read_text() == before


def test_overwrite_replaces_a_run(tiny_recipe, tmp_path):
    run_dir = tmp_path / "run"
    hftransfer.train(tiny_recipe("full", train={"num_train_epochs": 1}), output_dir=run_dir)
    first = json.loads((run_dir / "metrics.json").read_text())
    hftransfer.train(tiny_recipe("scratch", train={"num_train_epochs": 1}), output_dir=run_dir, overwrite=True)
    second = json.loads((run_dir / "metrics.json").read_text())
    assert first["strategy"] == "full" and second["strategy"] == "scratch"


def test_crash_leaves_no_finished_looking_run(tiny_recipe, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash while saving")

    import hftransfer.engine

    monkeypatch.setattr(hftransfer.engine, "write_cards", boom)
    with pytest.raises(RuntimeError):
        hftransfer.train(tiny_recipe("full", train={"num_train_epochs": 1}), output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.rglob("metrics.json"))


def test_pair_classification(tiny_model_dir, tmp_path, capsys):
    rows = []
    for i in range(48):
        same = i % 2 == 0
        a = ["good", "bad", "happy", "sad"][i % 4]
        b = a if same else {"good": "bad", "bad": "good", "happy": "sad", "sad": "happy"}[a]
        rows.append(f"it was {a},it was {b},{'same' if same else 'different'}")
    (tmp_path / "pairs.csv").write_text("premise,hypothesis,relation\n" + "\n".join(rows) + "\n")
    recipe = {
        "model": {"name_or_path": str(tiny_model_dir)},
        "task": {"type": "text-classification", "text_column": "premise",
                 "text_pair_column": "hypothesis", "label_column": "relation"},
        "data": {"train": str(tmp_path / "pairs.csv"), "validation_fraction": 0.25},
        "train": {"num_train_epochs": 1, "save_strategy": "no", "disable_tqdm": True},
    }
    result = hftransfer.train(recipe, output_dir=tmp_path / "run")
    assert result.metrics["data"]["validation"] == 12  # stratified 25 % of 48
    capsys.readouterr()  # training logs
    assert main(["predict", str(result.run_dir), "--json", "it was good\tit was bad"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["label"] in ("same", "different")


def test_python_api_and_module_entry_point(tiny_recipe, tmp_path):
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe("full", train={"num_train_epochs": 1})))
    done = subprocess.run([sys.executable, "-m", "hftransfer", "train", str(path), "train.seed=3",
                           "--output-dir", str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    recipe = hftransfer.load_recipe(tmp_path / "run" / "recipe.yaml")
    assert recipe.train["seed"] == 3
    assert hftransfer.predict(tmp_path / "run", ["a great film"])[0]["label"] in ("negative", "positive")
