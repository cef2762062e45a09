"""The fine-tuning playbook strategies on a tiny random-init BERT: only the intended parameters
change, L2-SP and layer-wise rates behave as defined, the feature cache hits and invalidates."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification

import hftransfer
from hftransfer.cli import main
from hftransfer.errors import HFTransferError
from hftransfer.recipe import load_recipe
from hftransfer.registry import get_strategy, get_task


@pytest.fixture(autouse=True)
def feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def weights(path):
    return dict(AutoModelForSequenceClassification.from_pretrained(path).named_parameters())


def changed(before, after, prefix):
    names = [n for n in before if n.startswith(prefix)]
    assert names, prefix
    return any(not torch.equal(before[n], after[n]) for n in names)


def test_partial_freeze_keeps_frozen_layers_bit_identical(tiny_model_dir, tiny_recipe, tmp_path):
    result = hftransfer.train(tiny_recipe("partial-freeze", strategy={"freeze_layers": 1}),
                              output_dir=tmp_path / "run")
    source, trained = weights(tiny_model_dir), weights(result.run_dir)
    assert not changed(source, trained, "bert.embeddings.")
    assert not changed(source, trained, "bert.encoder.layer.0.")
    assert changed(source, trained, "bert.encoder.layer.1.")
    transfer = result.metrics["transfer"]
    assert transfer["distance_from_source"] > 0
    frozen = sum(p.numel() for n, p in source.items()
                 if n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")))
    assert transfer["frozen_at_end"] == frozen
    assert result.metrics["params"]["trainable"] == result.metrics["params"]["total"] - frozen


def test_fractional_freeze(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe("partial-freeze", strategy={"freeze_layers": 0.5}))
    assert recipe.strategy_options.freeze_layers == 0.5
    strategy = get_strategy("partial-freeze")(recipe.strategy_options, None)
    assert strategy.frozen_count(6) == 3 and strategy.frozen_count(2) == 1


def test_gradual_unfreeze_thaws_from_the_top(tiny_model_dir, tiny_recipe, tmp_path):
    # 64 rows / batch 16 = 4 steps an epoch, 2 epochs = 8 steps; the frozen stack is
    # [embeddings, layer 0, layer 1]; one group thaws every 5 steps: layer 1 at step 5 only.
    recipe = tiny_recipe("partial-freeze", strategy={
        "freeze_layers": 2, "gradual_unfreeze": True, "unfreeze_every": 5, "unfreeze_unit": "step"})
    result = hftransfer.train(recipe, output_dir=tmp_path / "run")
    source, trained = weights(tiny_model_dir), weights(result.run_dir)
    assert changed(source, trained, "bert.encoder.layer.1.")
    assert not changed(source, trained, "bert.encoder.layer.0.")
    assert not changed(source, trained, "bert.embeddings.")


def _strategy(tiny_recipe, name="full", **options):
    recipe = load_recipe(tiny_recipe(name, strategy=options))
    task = get_task(recipe.task_type)(recipe.task_options)
    strategy = get_strategy(name)(recipe.strategy_options, task)
    model = strategy.prepare(strategy.build_model(recipe.model, ["negative", "positive"]))
    return strategy, model


def test_l2sp_is_zero_at_start_and_grows_with_distance(tiny_recipe):
    strategy, model = _strategy(tiny_recipe, regularization={"type": "l2sp", "weight": 0.5,
                                                           "head_weight": 0.0})
    assert float(strategy.extra_loss(model, {}, None).detach()) == 0.0
    param = model.bert.encoder.layer[0].attention.self.query.weight
    values = []
    for step in (0.01, 0.02, 0.04):
        with torch.no_grad():
            param.copy_(strategy.anchors["bert.encoder.layer.0.attention.self.query.weight"] + step)
        values.append(float(strategy.extra_loss(model, {}, None).detach()))
    assert 0 < values[0] < values[1] < values[2]
    assert values[1] == pytest.approx(4 * values[0], rel=1e-3)  # λ‖θ − θ₀‖²: quadratic
    assert values[0] == pytest.approx(0.5 * param.numel() * 0.01 ** 2, rel=1e-3)


def test_l2sp_head_term_is_plain_l2(tiny_recipe):
    strategy, model = _strategy(tiny_recipe, regularization={"type": "l2sp", "weight": 0.0,
                                                           "head_weight": 0.1})
    expected = 0.1 * sum(float((p ** 2).sum()) for n, p in model.named_parameters()
                         if n.startswith("classifier"))
    assert float(strategy.extra_loss(model, {}, None).detach()) == pytest.approx(expected, rel=1e-5)


def test_l2sp_keeps_weights_closer_to_the_source(tiny_recipe, tmp_path):
    # Plain SGD shows the pull cleanly (Adam rescales every gradient, the penalty's too).
    sgd = {"optim": "sgd", "learning_rate": 0.05, "num_train_epochs": 4}
    plain = hftransfer.train(tiny_recipe("full", train=sgd), output_dir=tmp_path / "plain")
    pulled = hftransfer.train(tiny_recipe("full", train=sgd, strategy={
        "regularization": {"type": "l2sp", "weight": 5.0}}), output_dir=tmp_path / "l2sp")
    assert (pulled.metrics["transfer"]["distance_from_source"]
            < plain.metrics["transfer"]["distance_from_source"])


def test_layer_wise_rates_are_monotone_in_depth(tiny_recipe, tmp_path):
    from hftransfer.recipe import make_training_arguments, training_values
    from hftransfer.trainer import TransferTrainer

    recipe = load_recipe(tiny_recipe("full", strategy={"layer_lr_decay": 0.5}))
    strategy, model = _strategy(tiny_recipe, layer_lr_decay=0.5)
    values = training_values(recipe.train, strategy.task.training_defaults, type(strategy).defaults)
    args = make_training_arguments(values, str(tmp_path))
    trainer = TransferTrainer(model=model, args=args, strategy=strategy)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == len(named)  # every parameter is in exactly one group
    base = args.learning_rate
    embeddings = lr_of[id(named["bert.embeddings.word_embeddings.weight"])]
    layer0 = lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])]
    layer1 = lr_of[id(named["bert.encoder.layer.1.attention.self.query.weight"])]
    head = lr_of[id(named["classifier.weight"])]
    # layer l of L=2 gets lr·γ^(L−l): the top layer and the head the full rate, embeddings γ^L
    assert embeddings < layer0 < layer1 == head == base
    assert layer0 == pytest.approx(base * 0.5)
    assert embeddings == pytest.approx(base * 0.5 ** 2)


@pytest.mark.parametrize("pooling,head", [("cls", "linear"), ("mean", "mlp")])
def test_feature_extraction_exports_exactly_what_it_trained(pooling, head, tiny_model_dir,
                                                            tiny_recipe, tmp_path):
    recipe = tiny_recipe("feature-extraction", strategy={"pooling": pooling, "head": head},
                         train={"num_train_epochs": 20, "learning_rate": 1e-2})
    result = hftransfer.train(recipe, output_dir=tmp_path / "run")
    source, trained = weights(tiny_model_dir), weights(result.run_dir)
    for name, value in source.items():  # the encoder is untouched
        if name.startswith(("bert.embeddings.", "bert.encoder.layer.0.", "bert.encoder.layer.1.")):
            assert torch.equal(value, trained[name]), name
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["num_hidden_layers"] == (3 if pooling == "mean" else 2)
    assert result.metrics["params"]["trainable"] == (66 if head == "linear" else 32 * 32 + 32 + 66)
    # The saved plain-transformers model computes the trained head's metrics on test.
    reloaded = hftransfer.evaluate(result.run_dir, split="test")
    assert reloaded["loss"] == pytest.approx(result.metrics["test"]["loss"], abs=1e-5)
    assert reloaded["accuracy"] == result.metrics["test"]["accuracy"]


def test_feature_cache_hits_and_invalidates(tiny_model_dir, tiny_recipe, tmp_path, monkeypatch,
                                            feature_cache, toy_data):
    from hftransfer.strategies.features import FeatureExtraction
    from hftransfer.tasks.text import TextClassification

    calls = []
    original = FeatureExtraction.encode

    def counting(self, ds, collator, split, **kwargs):
        calls.append(split)
        return original(self, ds, collator, split, **kwargs)

    monkeypatch.setattr(FeatureExtraction, "encode", counting)
    tokenised = []
    preprocess = TextClassification.preprocess
    monkeypatch.setattr(TextClassification, "preprocess",
                        lambda self, ds, *a, **k: tokenised.append(len(ds)) or preprocess(self, ds, *a, **k))
    recipe = tiny_recipe("feature-extraction", train={"num_train_epochs": 1})
    hftransfer.train(recipe, output_dir=tmp_path / "a")
    assert sorted(calls) == ["test", "train", "validation"]
    assert len(list((feature_cache / "features").glob("*.safetensors"))) == 3

    calls.clear()
    tokenised.clear()
    hftransfer.train({**recipe, "train": {**recipe["train"], "num_train_epochs": 3}},
                     output_dir=tmp_path / "b")
    assert calls == []  # warm cache: no encoder pass at all
    assert tokenised == []  # ...and no tokenising: the cache knows the splits by their rows

    # The same sentences with other labels: the cached features come with the old labels, so
    # they are not used.
    relabelled = tmp_path / "relabelled.csv"
    lines = (toy_data / "train.csv").read_text().splitlines()
    flip = {"positive": "negative", "negative": "positive"}
    relabelled.write_text("\n".join(lines[:1] + [f"{text},{flip[label]}" for text, label in
                                                   (line.rsplit(",", 1) for line in lines[1:])]) + "\n")
    calls.clear()
    hftransfer.train({**recipe, "data": {**recipe["data"], "train": str(relabelled)}}, output_dir=tmp_path / "e")
    assert calls == ["train"]

    changed_train = tmp_path / "train.csv"
    lines = (toy_data / "train.csv").read_text().splitlines()
    changed_train.write_text("\n".join(lines[:-1] + ["a brand new lovely sentence,positive"]) + "\n")
    calls.clear()
    hftransfer.train({**recipe, "data": {**recipe["data"], "train": str(changed_train)}},
                     output_dir=tmp_path / "c")
    assert calls == ["train"]  # only the split whose data changed

    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other_model)
    model = AutoModelForSequenceClassification.from_pretrained(other_model)
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.bias.add_(0.1)
    model.bert.save_pretrained(other_model)
    calls.clear()
    hftransfer.train({**recipe, "model": {"name_or_path": str(other_model)}}, output_dir=tmp_path / "d")
    assert sorted(calls) == ["test", "train", "validation"]


@pytest.mark.parametrize("override,needle", [
    ("strategy.pooling=max", "strategy.pooling must be cls or mean"),
    ("strategy.head=deep", "strategy.head must be linear or mlp"),
    ("strategy.regularization.weight=-1", "strategy.regularization.weight must be >= 0"),
    ("strategy.layer_lr_decay=0", "strategy.layer_lr_decay must be > 0"),
    ("strategy.layer_lr_decay=-0.5", "strategy.layer_lr_decay must be > 0"),
])
def test_bad_strategy_options(override, needle, tiny_recipe, tmp_path, capsys):
    import yaml

    name = override.split("=")[0].split(".")[1]
    strategy = "feature-extraction" if name in ("pooling", "head") else "full"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(strategy)))
    code = main(["train", str(path), override, "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and needle in err
    assert err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_freeze_layers_deeper_than_the_model(tiny_recipe, tmp_path, capsys):
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe("partial-freeze", strategy={"freeze_layers": 5})))
    assert main(["train", str(path), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "freeze_layers is 5 but the model has only 2 layers" in err
    assert not (tmp_path / "run").exists()


def test_l2sp_with_scratch_is_refused(tiny_recipe):
    with pytest.raises(HFTransferError, match="scratch starts from random weights"):
        load_recipe(tiny_recipe("scratch", strategy={"regularization": {"type": "l2sp", "weight": 0.1}}))


def test_feature_batches_are_the_rows_stacked():
    from transformers import default_data_collator

    from hftransfer.strategies.features import FeatureDataset, stack_rows

    ds = FeatureDataset(torch.randn(10, 4), torch.arange(10) % 2)
    fetched = stack_rows(ds.__getitems__([7, 2, 5]))
    expected = default_data_collator([ds[7], ds[2], ds[5]])
    assert fetched.keys() == expected.keys()
    assert all(torch.equal(fetched[k], expected[k]) for k in expected)
    assert torch.equal(stack_rows([ds[3]])["features"], ds.features[3:4])  # a single row still stacks


def test_text_inputs_key_names_what_preprocessing_makes(tiny_model_dir, toy_data, tmp_path):
    import datasets
    from transformers import AutoTokenizer

    from hftransfer.tasks.text import TextClassification

    task = get_task("text-classification")(get_task("text-classification").Options())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    labels = ["negative", "positive"]
    rows = {"text": ["a good film", "a bad day"], "label": ["positive", "negative"]}
    key = task.inputs_key(datasets.Dataset.from_dict(rows), tokenizer, labels)
    tokenizer(["some text"], truncation=True, max_length=3)  # state a call leaves behind
    again = TextClassification(task.options)
    assert again.inputs_key(datasets.Dataset.from_dict(rows), tokenizer, labels) == key
    others = [
        task.inputs_key(datasets.Dataset.from_dict({**rows, "text": ["a good film", "a bad day!"]}), tokenizer, labels),
        task.inputs_key(datasets.Dataset.from_dict({**rows, "label": ["positive", "positive"]}), tokenizer, labels),
        task.inputs_key(datasets.Dataset.from_dict({"text": rows["text"]}), tokenizer, labels),
        TextClassification(TextClassification.Options(max_length=4)).inputs_key(
            datasets.Dataset.from_dict(rows), tokenizer, labels),
        task.inputs_key(datasets.Dataset.from_dict(rows), AutoTokenizer.from_pretrained(
            tiny_model_dir, do_lower_case=False), labels),
    ]
    assert len({key, *others}) == 1 + len(others)


def test_accuracy_and_f1_are_scikit_learns():
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    from hftransfer.tasks.base import accuracy_f1

    rng = np.random.default_rng(0)
    for n_labels in (2, 2, 3, 5):
        for size in (1, 7, 50):
            refs, preds = rng.integers(0, n_labels, size), rng.integers(0, n_labels, size)
            for r, p in ((refs, preds), (refs, refs), (np.zeros(size, int), np.zeros(size, int))):
                average = "binary" if n_labels == 2 else "macro"
                ours = accuracy_f1(r, p, binary=n_labels == 2)
                assert ours["accuracy"] == pytest.approx(accuracy_score(r, p))
                assert ours["f1"] == pytest.approx(f1_score(r, p, average=average, zero_division=0))
