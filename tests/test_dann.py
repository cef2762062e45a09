"""Strategy dann: domain-adversarial training (a domain classifier behind a gradient reversal
layer) on labelled source data and unlabelled target inputs; the run saves the plain task model."""
from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from conftest import FILLER, NEGATIVE, POSITIVE
from helpers import assert_cli_error, run_cli, tiny_recipe_dict, tree
from safetensors.torch import load_file
from test_image import image_data, image_recipe, tiny_vit_dir  # noqa: F401  (fixtures)
from test_token import ner_data, ner_recipe  # noqa: F401  (fixtures)

import hftransfer
from hftransfer import rundir
from hftransfer.strategies.dann import HEAD_FILE, LOG_KEY, _DomainCallback, grl_coefficient, reverse_gradient


@pytest.fixture(scope="module")
def target_texts(tmp_path_factory) -> Path:
    """Target-domain inputs: sentiment words in another register (capitalised, with a suffix)."""
    path = tmp_path_factory.mktemp("target") / "target.txt"
    rows = [f"{w.upper()} {f} product , {v} service !" for w in POSITIVE + NEGATIVE for f in FILLER[:3]
            for v in ("really", "truly")]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def dann_recipe(tiny_model_dir, toy_data, target_texts, **strategy) -> dict:
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, "dann", strategy=strategy)
    recipe["data"]["unlabeled"] = str(target_texts)
    return recipe


def test_the_lambda_schedule():
    assert grl_coefficient(0.0) == 0.0
    assert grl_coefficient(1.0) == pytest.approx(0.99991, abs=1e-5)
    assert grl_coefficient(1.0, lambda_max=0.3) == pytest.approx(0.3 * 0.99991, abs=1e-5)
    assert grl_coefficient(0.5) == pytest.approx(2 / (1 + 2.718281828 ** -5) - 1)
    values = [grl_coefficient(i / 20) for i in range(21)]
    assert all(a < b for a, b in pairwise(values))
    assert grl_coefficient(-1.0) == 0.0 and grl_coefficient(2.0) == grl_coefficient(1.0)
    assert grl_coefficient(0.7, lambda_max=0.0) == 0.0


def test_gradient_reversal_reverses_and_scales_the_gradient():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x.detach())  # the identity going forward
    (y * torch.tensor([1.0, 2.0, 4.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.25, -0.5, -1.0]))


@pytest.fixture(scope="module")
def dann_run(tiny_model_dir, toy_data, target_texts, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("dann") / "run"
    hftransfer.train(dann_recipe(tiny_model_dir, toy_data, target_texts, domain_hidden_size=16), output_dir=run)
    return run


def test_a_dann_run_logs_domain_accuracy_and_saves_the_plain_model(dann_run, toy_data, target_texts, capsys):
    metrics = json.loads((dann_run / "metrics.json").read_text())
    history = json.loads((dann_run / "logs" / "log_history.json").read_text())
    per_epoch = [e for e in history if LOG_KEY in e]
    assert [round(e["epoch"]) for e in per_epoch] == [1, 2]
    assert all(0.0 <= e[LOG_KEY] <= 1.0 for e in per_epoch)
    transfer = metrics["transfer"]
    assert transfer["domain_accuracy"] == [e[LOG_KEY] for e in per_epoch]
    assert transfer["final_domain_accuracy"] == per_epoch[-1][LOG_KEY]
    assert transfer["lambda_max"] == 1.0 and transfer["domain_hidden_size"] == 16
    assert transfer["target_inputs"] == len(target_texts.read_text().splitlines())
    assert metrics["data"]["unlabeled"] == transfer["target_inputs"]
    assert "final domain accuracy" in (dann_run / "README.md").read_text()
    # The run is the plain task model: no domain classifier in the weights or the config.
    saved = load_file(str(dann_run / "model.safetensors"))
    assert all(key.startswith(("bert.", "classifier.")) for key in saved), sorted(saved)
    assert not any("domain" in key for key in saved)
    config = json.loads((dann_run / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(dann_run)  # loads with plain transformers
    # predict and evaluate --data (a target-domain file) load it like any run.
    assert [p["label"] for p in hftransfer.predict(dann_run, ["good film", "awful day"])] in (
        [a, b] for a in ("positive", "negative") for b in ("positive", "negative"))
    target = dann_run.parent / "target.csv"
    target.write_text("text,label\nGOOD product really,positive\nAWFUL service truly,negative\n")
    rc, out, err = run_cli(capsys, "evaluate", dann_run, "--data", target)
    assert rc == 0, err
    assert "accuracy" in json.loads(out)


def test_the_domain_head_trains_with_the_optimizer(tiny_model_dir, toy_data, target_texts, tmp_path,
                                                  monkeypatch):
    from hftransfer.strategies.dann import DomainAdversarial
    from hftransfer.trainer import TransferTrainer

    seen = {}
    original_create, original_prepare = TransferTrainer.create_optimizer, DomainAdversarial.prepare

    def create(self, model=None):
        optimizer = original_create(self, model)
        seen["lr"] = sorted({group["lr"] for group in optimizer.param_groups})
        seen["optimized"] = {id(p) for group in optimizer.param_groups for p in group["params"]}
        return optimizer

    def prepare(self, model):
        model = original_prepare(self, model)
        seen["strategy"], seen["initial"] = self, [p.detach().clone() for p in self.domain_head.parameters()]
        return model

    monkeypatch.setattr(TransferTrainer, "create_optimizer", create)
    monkeypatch.setattr(DomainAdversarial, "prepare", prepare)
    hftransfer.train(dann_recipe(tiny_model_dir, toy_data, target_texts), output_dir=tmp_path / "run")
    head = list(seen["strategy"].domain_head.parameters())
    assert {id(p) for p in head} <= seen["optimized"]
    assert all(not torch.equal(p.detach().cpu(), p0) for p, p0 in zip(head, seen["initial"]))
    # Its gradients are cleared after every optimizer step, as the model's are (the Trainer
    # clears only the model's): the last step's are gone, not summed into the next.
    assert all(p.grad is None for p in head)
    assert seen["lr"][-1] == pytest.approx(10 * seen["lr"][0])  # domain_learning_rate_scale


def test_lambda_zero_trains_exactly_as_full(tiny_model_dir, toy_data, target_texts, tmp_path):
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, "full"), output_dir=tmp_path / "full")
    hftransfer.train(dann_recipe(tiny_model_dir, toy_data, target_texts, lambda_max=0.0), output_dir=tmp_path / "d0")
    hftransfer.train(dann_recipe(tiny_model_dir, toy_data, target_texts, lambda_max=1.0), output_dir=tmp_path / "d1")
    full, d0, d1 = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("full", "d0", "d1"))
    assert full.keys() == d0.keys()
    for name in full:
        assert torch.equal(full[name], d0[name]), name
    # ... and the reversal, on, does move the encoder.
    assert not torch.equal(full["bert.encoder.layer.0.attention.self.query.weight"],
                           d1["bert.encoder.layer.0.attention.self.query.weight"])


def test_a_resumed_run_ends_as_an_uninterrupted_one(tiny_model_dir, toy_data, target_texts, tmp_path,
                                                   monkeypatch):
    recipe = dann_recipe(tiny_model_dir, toy_data, target_texts)
    recipe["train"].update({"save_strategy": "epoch", "num_train_epochs": 2})
    whole = hftransfer.train(recipe, output_dir=tmp_path / "whole")
    original = _DomainCallback.on_save

    def save_then_stop(self, args, state, control, **kwargs):  # Ctrl-C right after the first checkpoint
        original(self, args, state, control, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(_DomainCallback, "on_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        hftransfer.train(recipe, output_dir=tmp_path / "run")
    monkeypatch.setattr(_DomainCallback, "on_save", original)
    checkpoint = rundir.last_complete_checkpoint(tmp_path / ".run.partial" / "checkpoints")
    assert (checkpoint / HEAD_FILE).is_file()
    resumed = hftransfer.train(recipe, output_dir=tmp_path / "run", resume=True)
    # The same target batches and the same domain classifier: the same model and accuracies.
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "run" / "model.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed.metrics["transfer"]["domain_accuracy"] == whole.metrics["transfer"]["domain_accuracy"]


def test_image_dann_with_a_tiny_vit(tiny_vit_dir, image_data, tmp_path):
    recipe = image_recipe(tiny_vit_dir, image_data, "dann", train={"num_train_epochs": 2})
    recipe["data"]["unlabeled"] = str(image_data / "test")  # a folder of images; labels unused
    recipe["data"]["test"] = None
    result = hftransfer.train(recipe, output_dir=tmp_path / "run")
    transfer = result.metrics["transfer"]
    assert len(transfer["domain_accuracy"]) == 2 and transfer["target_inputs"] == len(list((image_data / "test").rglob("*.png")))
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert not any("domain" in key for key in saved)
    assert len(hftransfer.predict(tmp_path / "run", [str(image_data / "validation" / "red" / "000.png")])) == 1


# --------------------------------------------------------------------------- bad input


def _refused(capsys, work, recipe: dict, *needles: str) -> None:
    import yaml

    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    before = tree(work)
    rc, _, err = run_cli(capsys, "train", path, "--output-dir", work / "out")
    assert_cli_error(rc, err, *needles)
    assert tree(work) == before


def test_dann_without_target_inputs_is_refused(tiny_model_dir, toy_data, capsys, work):
    _refused(capsys, work, tiny_recipe_dict(tiny_model_dir, toy_data, "dann"), "data.unlabeled", "target domain")


def test_dann_of_token_classification_is_refused(tiny_model_dir, ner_data, target_texts, capsys, work):
    recipe = ner_recipe(tiny_model_dir, ner_data, "dann")
    recipe["data"]["unlabeled"] = str(target_texts)
    _refused(capsys, work, recipe, "token-classification", "pooled features")


def test_dann_of_a_multitask_recipe_is_refused(tiny_model_dir, toy_data, capsys, work):
    data = {"train": str(toy_data / "train.csv"), "validation": str(toy_data / "validation.csv")}
    recipe = {"name": "mt", "model": {"name_or_path": str(tiny_model_dir)}, "strategy": {"name": "dann"},
              "tasks": {"a": {"task": {"type": "text-classification"}, "data": data},
                        "b": {"task": {"type": "text-classification"}, "data": data}}}
    _refused(capsys, work, recipe, "strategy 'dann' trains one task")


def test_bad_dann_options_are_refused(tiny_model_dir, toy_data, target_texts, capsys, work):
    _refused(capsys, work, dann_recipe(tiny_model_dir, toy_data, target_texts, lambda_max=-1), "lambda_max")
    _refused(capsys, work, dann_recipe(tiny_model_dir, toy_data, target_texts, domain_hidden_size=0),
             "domain_hidden_size")
