"""masked-lm: domain-adaptive pretraining on unlabelled text with the tiny BERT (a ``BertModel``,
so the masked-LM head is new): txt and csv data, deterministic held-out masks, perplexity before
and after, the tied decoder, the head warm-up on a frozen encoder, a later classification run
from the MLM run, fill-mask predict, and the user errors."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from helpers import assert_cli_error, run_cli, tree
from safetensors.torch import load_file

import hftransfer
from hftransfer.tasks import masked_lm

WORDS = ["the", "film", "was", "good", "camera", "battery", "life", "is", "great", "and", "screen",
         "bright", "sound", "poor", "phone", "works", "well", "price", "cheap", "lens"]


def texts(n: int, seed: int) -> list[str]:
    """Short texts over a small vocabulary with fixed word pairs: learnable in a few steps."""
    rng = random.Random(seed)
    pairs = [("battery", "life"), ("the", "film"), ("screen", "bright"), ("price", "cheap")]
    out = []
    for _ in range(n):
        words = [w for pair in rng.sample(pairs, 2) for w in pair] + rng.sample(WORDS, 3)
        out.append(" ".join(words))
    return out


@pytest.fixture(scope="module")
def mlm_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mlm-data")
    # Blank lines are skipped.
    (out / "train.txt").write_text("\n".join(texts(96, 0)) + "\n\n  \n", encoding="utf-8")
    (out / "validation.txt").write_text("\n".join(texts(24, 1)) + "\n", encoding="utf-8")
    rows = [{"body": t, "label": i % 2} for i, t in enumerate(texts(48, 2))]
    (out / "train.csv").write_text("body,label\n" + "".join(f"{r['body']},{r['label']}\n" for r in rows),
                                   encoding="utf-8")
    return out


def mlm_recipe(model_dir, data_dir: Path, **sections) -> dict:
    recipe = {
        "name": "tiny-mlm",
        "model": {"name_or_path": str(model_dir)},
        "task": {"type": "masked-lm", "max_length": 32},
        "data": {"train": str(data_dir / "train.txt"), "validation": str(data_dir / "validation.txt")},
        "strategy": {"name": "full"},
        "train": {"num_train_epochs": 4, "per_device_train_batch_size": 16, "learning_rate": 2e-3,
                  "save_strategy": "no", "disable_tqdm": True},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


@pytest.fixture(scope="module")
def mlm_run(tiny_model_dir, mlm_data, tmp_path_factory) -> Path:
    """A masked-lm run on the txt files (the source has no masked-LM head)."""
    out = tmp_path_factory.mktemp("mlm-run") / "run"
    hftransfer.train(mlm_recipe(tiny_model_dir, mlm_data), output_dir=out)
    return out


def test_txt_run_lowers_perplexity_on_the_same_masks(mlm_run):
    metrics = json.loads((mlm_run / "metrics.json").read_text())
    assert metrics["task"] == "masked-lm" and metrics["data"] == {"train": 96, "validation": 24, "test": 0}
    before, after = metrics["before"]["validation"], metrics["validation"]
    # A random new head predicts about uniformly over 30k tokens; training must beat that by far.
    assert before["perplexity"] > 1000
    assert after["perplexity"] < before["perplexity"] / 2
    assert after["loss"] == pytest.approx(torch.tensor(after["perplexity"]).log().item(), rel=0.2)
    card = (mlm_run / "README.md").read_text()
    assert "pipeline_tag: fill-mask" in card and "perplexity" in card and "| validation (before training) |" in card


def test_the_saved_decoder_is_the_embedding_matrix(mlm_run):
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(mlm_run)
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    saved = load_file(mlm_run / "model.safetensors")
    assert "cls.predictions.transform.dense.weight" in saved
    assert "cls.predictions.decoder.weight" not in saved  # one matrix, saved once


def test_evaluate_gives_the_runs_numbers(mlm_run, capsys):
    # The held-out masks are fixed: a later evaluation scores the same positions.
    rc, out, err = run_cli(capsys, "evaluate", mlm_run, "--split", "validation")
    assert rc == 0, err
    metrics = json.loads((mlm_run / "metrics.json").read_text())["validation"]
    assert json.loads(out)["perplexity"] == pytest.approx(metrics["perplexity"], rel=1e-4)


def test_csv_column_and_carved_validation(tiny_model_dir, mlm_data, tmp_path):
    recipe = mlm_recipe(tiny_model_dir, mlm_data, task={"text_column": "body", "whole_word_mask": True},
                        data={"train": str(mlm_data / "train.csv"), "validation": None,
                              "validation_fraction": 0.25},
                        train={"max_steps": 3})
    result = hftransfer.train(recipe, output_dir=tmp_path / "run")
    assert result.metrics["data"] == {"train": 36, "validation": 12, "test": 0}
    assert result.metrics["validation"]["perplexity"] > 1


def _spy_warmup(monkeypatch) -> list:
    """Every warm-up's (active, {name: weight at train begin})."""
    seen = []
    original = masked_lm.HeadWarmup.begin

    def begin(self, state, model):
        original(self, state, model)
        seen.append((self.active, {n: p.detach().clone() for n, p in model.named_parameters()}))

    monkeypatch.setattr(masked_lm.HeadWarmup, "begin", begin)
    return seen


def test_the_new_head_warms_up_on_a_frozen_encoder(tiny_model_dir, mlm_data, tmp_path, monkeypatch):
    seen = _spy_warmup(monkeypatch)
    for name, warmup in (("warm", 100), ("thawed", 1)):
        recipe = mlm_recipe(tiny_model_dir, mlm_data, task={"head_warmup_steps": warmup},
                            train={"max_steps": 3, "warmup_steps": 0})
        hftransfer.train(recipe, output_dir=tmp_path / name)
    for (active, start), name in zip(seen, ("warm", "thawed")):
        assert active
        saved = load_file(tmp_path / name / "model.safetensors")
        encoder = [k for k in start if not k.startswith("cls.")]
        moved = {k for k in encoder if not torch.equal(saved[k], start[k])}
        if name == "warm":  # all three steps inside the warm-up: the encoder is untouched
            assert moved == set()
        else:
            assert "bert.embeddings.word_embeddings.weight" in moved and len(moved) > len(encoder) / 2
        assert not torch.equal(saved["cls.predictions.transform.dense.weight"],
                               start["cls.predictions.transform.dense.weight"])


def test_a_checkpoint_with_a_masked_lm_head_skips_warm_up(mlm_run, mlm_data, tmp_path, monkeypatch):
    seen = _spy_warmup(monkeypatch)
    result = hftransfer.train(mlm_recipe(mlm_run, mlm_data, train={"max_steps": 2}), output_dir=tmp_path / "again")
    assert seen[0][0] is False
    # The head came with the checkpoint: before training the model is the first run's, scored
    # on the same masked positions.
    first = json.loads((mlm_run / "metrics.json").read_text())["validation"]["perplexity"]
    assert result.metrics["before"]["validation"]["perplexity"] == pytest.approx(first, rel=1e-4)


def test_a_classification_run_starts_from_the_mlm_encoder(mlm_run, toy_data, tmp_path):
    from helpers import tiny_recipe_dict

    recipe = tiny_recipe_dict(mlm_run, toy_data, "partial-freeze", strategy={"freeze_layers": 2},
                              train={"max_steps": 2})
    result = hftransfer.train(recipe, output_dir=tmp_path / "cls")
    assert result.metrics["validation"]["accuracy"] >= 0
    mlm = load_file(mlm_run / "model.safetensors")
    cls = load_file(tmp_path / "cls" / "model.safetensors")
    encoder = [k for k in mlm if k.startswith("bert.")]
    assert encoder and all(torch.equal(cls[k], mlm[k]) for k in encoder)  # frozen: exactly the MLM run's
    assert "classifier.weight" in cls and not any(k.startswith("cls.") for k in cls)


def test_fill_mask_predict(mlm_run, capsys):
    rc, out, err = run_cli(capsys, "predict", mlm_run, "--json", "battery [MASK] is great")
    assert rc == 0, err
    (result,) = json.loads(out)
    assert len(result["masks"]) == 1 and len(result["masks"][0]) == 5
    assert result["label"] == result["masks"][0][0]["token"]
    rc, out, err = run_cli(capsys, "predict", mlm_run, "no mask here")
    assert_cli_error(rc, err, "has no [MASK] token", "later stage")


@pytest.mark.parametrize("change, needles", [
    ({"data": {"samples_per_label": 4}}, ("data.samples_per_label", "masked-lm", "max_train_samples")),
    ({"task": {"text_column": "review"}}, ("column 'review' (task.text_column) not found", "body")),
    ({"data": {"train": "EMPTY"}}, ("data.train", "is empty")),
    ({"model": {"config": {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "intermediate_size": 32, "image_size": 16,
                           "patch_size": 8}}}, ("vit model", "masked-lm", "vocabulary")),
    ({"strategy": {"name": "feature-extraction"}},
     ("'feature-extraction' does not apply to task masked-lm", "full, partial-freeze, scratch")),
])
def test_user_errors(change, needles, tiny_model_dir, mlm_data, tmp_path, capsys, work):
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    recipe = mlm_recipe(tiny_model_dir, mlm_data, data={"train": str(mlm_data / "train.csv")},
                        task={"text_column": "body"})
    for key, value in change.items():
        if value.get("train") == "EMPTY":
            value = {**value, "train": str(tmp_path / "empty.txt")}
        recipe[key] = {**recipe[key], **value}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    before = tree(work)
    rc, _out, err = run_cli(capsys, "train", path)
    assert_cli_error(rc, err, *needles)
    assert tree(work) == before
