"""hftransfer ensemble: members with their own processors, temperatures and weights fit on
validation NLL; an ensemble run directory that evaluate and predict take."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE
from helpers import refused, run_cli, tiny_recipe_dict, tree
from test_distill import word_model_dir  # noqa: F401  (fixture: another tokenizer)
from test_image import image_data, image_recipe, tiny_vit_dir  # noqa: F401  (fixtures)

import hftransfer
from hftransfer import api, engine
from hftransfer.fusion import ensemble, scores


@pytest.fixture(scope="module")
def members(tiny_model_dir, toy_data, word_model_dir, tmp_path_factory) -> list[Path]:
    """Three runs of the toy task: two seeds of the tiny BERT, and a BERT with another tokenizer."""
    root = tmp_path_factory.mktemp("members")
    runs = []
    for name, model, seed in (("a", tiny_model_dir, 0), ("b", tiny_model_dir, 1), ("words", word_model_dir, 2)):
        recipe = tiny_recipe_dict(model, toy_data, "full", train={"num_train_epochs": 2, "seed": seed})
        hftransfer.train(recipe, output_dir=root / name)
        runs.append(root / name)
    return runs


def test_fit_is_at_least_its_best_member_and_predicts(members, tmp_path, capsys):
    before = {str(m): tree(m) for m in members}
    rc, out, err = run_cli(capsys, "ensemble", *map(str, members), "--output-dir", str(tmp_path / "ens"))
    assert rc == 0, err
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    fitted = metrics["validation"]["nll"]
    for member in metrics["ensemble"]["members"]:
        assert fitted <= member["validation"]["nll"] + 1e-9  # by construction of the fit
    weights = [m["weight"] for m in metrics["ensemble"]["members"]]
    assert min(weights) >= 0 and abs(sum(weights) - 1) < 1e-6  # probability averaging: a simplex
    assert {str(m): tree(m) for m in members} == before  # members untouched

    # evaluate re-measures what the fit reported; test was read once, at build time, and agrees
    again = hftransfer.evaluate(tmp_path / "ens", split="validation")
    assert again["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])
    assert again["nll"] == pytest.approx(fitted, abs=1e-6)
    assert hftransfer.evaluate(tmp_path / "ens", split="test")["nll"] == pytest.approx(metrics["test"]["nll"], abs=1e-6)

    # predict: the combination of what each member (with its own tokenizer) gives
    texts = [f"{POSITIVE[0]} and {POSITIVE[1]}", f"{NEGATIVE[0]} {NEGATIVE[2]}", "a plain sentence"]
    got = hftransfer.predict(tmp_path / "ens", texts)
    loaded = [engine.load_run(m) for m in members]
    logits = [r.task.logits(r.model, r.processor, texts).numpy() for r in loaded]
    spec = [(m["temperature"], m["weight"]) for m in json.loads((tmp_path / "ens" / "ensemble.json").read_text())["members"]]
    probs = sum(w * np.exp(scores.log_softmax(z / t)) for z, (t, w) in zip(logits, spec))
    labels = metrics["labels"]
    assert [g["label"] for g in got] == [labels[i] for i in probs.argmax(1)]
    assert [g["score"] for g in got] == pytest.approx(list(probs.max(1)), abs=1e-5)
    rc, out, err = run_cli(capsys, "predict", str(tmp_path / "ens"), "--json", *texts)
    assert rc == 0, err
    printed = json.loads(out)
    assert [p["label"] for p in printed] == [g["label"] for g in got]
    assert [p["score"] for p in printed] == pytest.approx([g["score"] for g in got], abs=1e-6)
    assert "not** a `transformers` model" in (tmp_path / "ens" / "README.md").read_text()


def test_logit_combination_and_fit_fallback():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    good = np.eye(3)[labels] * 3 + rng.normal(size=(300, 3))
    noise = rng.normal(size=(300, 3)) * 5  # knows nothing
    for how in ensemble.COMBINES:
        temps = [scores.fit_temperature(z, labels) for z in (good, noise)]
        w = ensemble.fit_weights([good, noise], temps, labels, how)
        combined = ensemble.combine([good, noise], temps, w, how)
        alone = scores.nll(good / temps[0], labels)
        assert -combined[np.arange(300), labels].mean() <= alone + 1e-9
        assert w[1] < 0.05 * max(w[0], 1e-12) + 1e-6  # the noise member is (almost) left out


def test_member_changed_or_moved_is_an_error(members, tmp_path, capsys):
    import shutil

    copies = []
    for m in members[:2]:
        shutil.copytree(m, tmp_path / m.name)
        copies.append(tmp_path / m.name)
    api.ensemble(copies, tmp_path / "ens")
    with open(copies[1] / "config.json", "a") as f:
        f.write(" ")
    refused(capsys, tmp_path, ["predict", str(tmp_path / "ens"), "some text"], "changed after the ensemble was fit")
    shutil.rmtree(copies[0])
    refused(capsys, tmp_path, ["evaluate", str(tmp_path / "ens")], "is not there any more")
    refused(capsys, tmp_path, ["push", str(tmp_path / "ens"), "--repo-id", "me/x", "--dry-run", str(tmp_path / "d")],
            "is an ensemble")


def test_bad_members_are_refused_and_nothing_is_written(members, tiny_model_dir, toy_data, tiny_vit_dir,
                                                        image_data, tmp_path, capsys):
    out = str(tmp_path / "ens")
    refused(capsys, tmp_path, ["ensemble", str(members[0]), "--output-dir", out], "at least two runs")
    refused(capsys, tmp_path, ["ensemble", str(members[0]), str(members[0]), "--output-dir", out], "listed twice")
    # another label set
    relabelled = tmp_path / "relabelled"
    relabelled.mkdir()
    for split in ("train", "validation", "test"):
        text = (toy_data / f"{split}.csv").read_text().replace(",positive", ",good").replace(",negative", ",bad")
        (relabelled / f"{split}.csv").write_text(text)
    other = tmp_path / "other"
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, relabelled, "full"), output_dir=other)
    refused(capsys, tmp_path, ["ensemble", str(members[0]), str(other), "--output-dir", out], "label set")
    # another task
    image_run = tmp_path / "img"
    hftransfer.train(image_recipe(tiny_vit_dir, image_data, train={"num_train_epochs": 1}), output_dir=image_run)
    refused(capsys, tmp_path, ["ensemble", str(members[0]), str(image_run), "--output-dir", out], "same task")
    refused(capsys, tmp_path, ["ensemble", str(members[0]), str(tmp_path / "nope"), "--output-dir", out])
    assert not (tmp_path / "ens").exists()


def test_a_member_trained_on_other_data_reads_the_first_members(members, tiny_model_dir, toy_data, tmp_path):
    """A source model trained elsewhere (other data, same labels) joins a target run: the
    ensemble is fit and scored on the first member's splits."""
    from conftest import toy_rows, write_csv

    other_data = tmp_path / "other-data"
    other_data.mkdir()
    for split, seed in (("train", 7), ("validation", 8), ("test", 9)):
        write_csv(other_data / f"{split}.csv", toy_rows(48 if split == "train" else 12, seed))
    other = tmp_path / "other"
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, other_data, "full"), output_dir=other)
    metrics = api.ensemble([members[0], other], tmp_path / "ens")
    assert metrics["data"] == json.loads((members[0] / "metrics.json").read_text())["data"]
    own = engine.split_outputs(engine.load_run(members[0]), "validation")
    assert len(own.labels) == 16  # the first member's validation split, not the other's 12 rows
    assert hftransfer.evaluate(tmp_path / "ens", split="validation")["nll"] == pytest.approx(
        metrics["validation"]["nll"], abs=1e-6)


def test_image_ensemble(tiny_vit_dir, image_data, tmp_path):
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"img{seed}"
        hftransfer.train(image_recipe(tiny_vit_dir, image_data, train={"num_train_epochs": 2, "seed": seed}),
                         output_dir=run)
        runs.append(run)
    metrics = api.ensemble(runs, tmp_path / "ens", combine="logits")
    assert metrics["validation"]["nll"] <= min(m["validation"]["nll"] for m in metrics["ensemble"]["members"]) + 1e-9
    files = sorted(str(p) for p in (image_data / "test").glob("*/*.png"))[:3]
    assert len(hftransfer.predict(tmp_path / "ens", files)) == 3
