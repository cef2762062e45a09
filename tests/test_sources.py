"""Source models beyond checkpoints: an inline `model.config` (random init) and run directories
of the kit, adapter runs included (merged into their base once)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from helpers import user_error

from hftransfer import train
from hftransfer.models import source_location
from hftransfer.recipe import ModelSpec, load_recipe
from hftransfer.registry import get_strategy, get_task

TINY_BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 128, "vocab_size": 30522}


def build(recipe_dict, labels=("negative", "positive")):
    recipe = load_recipe(recipe_dict)
    task = get_task(recipe.task_type)(recipe.task_options)
    strategy = get_strategy(recipe.strategy_name)(recipe.strategy_options, task)
    return strategy, strategy.build_model(recipe.model, list(labels))


def test_inline_config_trains_a_random_model(tiny_recipe, tmp_path):
    recipe = tiny_recipe("full", model={"config": TINY_BERT, "processor": "embedded"})
    del recipe["model"]["name_or_path"]
    result = train(recipe, output_dir=tmp_path / "run")
    assert result.metrics["base_model"].startswith("random-init bert")
    assert result.metrics["params"]["total"] < 2_000_000
    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run")
    assert saved.config.hidden_size == 32 and saved.config.id2label[1] == "positive"


@pytest.mark.parametrize("config,needles", [
    ({"model_type": "no-such-model"}, ("model.config.model_type", "'no-such-model'")),
    ({"hidden_size": 32}, ("model.config.model_type",)),
    ({**TINY_BERT, "hiden_size": 16}, ("hiden_size", "BertConfig")),
    ({**TINY_BERT, "vocab_size": 100}, ("vocab_size is 100", "30522")),
])
def test_bad_inline_configs_are_named(config, needles, tiny_recipe, tmp_path):
    recipe = tiny_recipe("full", model={"config": config, "processor": "embedded"})
    user_error(*needles, call=lambda: train(recipe, output_dir=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_inline_text_model_needs_a_processor(tiny_recipe, tmp_path):
    recipe = tiny_recipe("full", model={"config": TINY_BERT})
    user_error("model.processor", call=lambda: train(recipe, output_dir=tmp_path / "run"))


def test_adapters_on_a_random_model_are_refused(tiny_recipe):
    recipe = tiny_recipe("lora", model={"config": TINY_BERT, "processor": "embedded"})
    user_error("model.config", "strategy full", call=lambda: load_recipe(recipe))


def test_lora_run_is_merged_into_a_source_for_the_next_run(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    lora = train(tiny_recipe("lora"), output_dir=tmp_path / "lora")
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    reference = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(
            load_recipe(lora.run_dir / "recipe.yaml").model.name_or_path,
            num_labels=2), str(lora.run_dir)).merge_and_unload()
    # A new label set: the encoder (with the adapter merged in) transfers, the head is new.
    strategy, model = build(tiny_recipe("full", model={"name_or_path": str(lora.run_dir)}),
                            labels=("a", "b", "c"))
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(dict(model.named_parameters())[query],
                          dict(reference.named_parameters())[query], atol=1e-6)
    from transformers import AutoModel

    plain_base = AutoModel.from_pretrained(load_recipe(lora.run_dir / "recipe.yaml").model.name_or_path)
    assert not torch.allclose(dict(model.named_parameters())[query],  # the adapter is in it
                              plain_base.encoder.layer[0].attention.self.query.weight, atol=1e-6)
    assert model.config.num_labels == 3
    assert "classifier.weight" in strategy.new_params
    assert query not in strategy.new_params
    assert len(list((tmp_path / "cache" / "merged").iterdir())) == 1


def test_cache_entries_are_readable_as_the_umask_allows(tiny_recipe, tmp_path, monkeypatch):
    """safetensors writes its files -rw-------; the kit's cache entries (an adapter run merged
    into its base, cached features) read like a run's files: 0o666 less the umask, as open()
    makes them, so a cache shared by a group serves all of it."""
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    previous = os.umask(0o022)
    try:
        lora = train(tiny_recipe("lora", train={"num_train_epochs": 1}), output_dir=tmp_path / "lora")
        merged = Path(source_location(ModelSpec(name_or_path=str(lora.run_dir))))
        train(tiny_recipe("feature-extraction", train={"num_train_epochs": 1}), output_dir=tmp_path / "fe")
    finally:
        os.umask(previous)
    assert merged.parent == tmp_path / "cache" / "merged"
    files = [p for p in merged.rglob("*") if p.is_file()]
    files += list((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert {p.name for p in files} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert len([p for p in files if p.parent.name == "features"]) >= 2  # train, validation, test
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == dict.fromkeys(modes, oct(0o644))
