"""hftransfer rank: candidates scored from frozen features of the recipe's training data (through
the feature cache), LEEP for a run with a head of its own, Kendall's τ against a comparison of
the same candidates, per-word features for token tasks, and the user errors."""
from __future__ import annotations

import json

import pytest
import yaml
from helpers import assert_cli_error, run_cli, tiny_recipe_dict, user_error
from test_image import TINY_VIT
from test_token import toy_sentences, write_conll

import hftransfer
from hftransfer.ranking import rank


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("HFTRANSFER_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def candidates(tmp_path_factory, tiny_model_dir, toy_data):
    """A YAML file of four candidates: the tiny model, a run fine-tuned from it (a head of its
    own), a 1-layer truncation and a random twin."""
    root = tmp_path_factory.mktemp("candidates")
    run = root / "run"
    hftransfer.train(tiny_recipe_dict(tiny_model_dir, toy_data, "full", train={"num_train_epochs": 3}),
                     output_dir=run)
    path = root / "candidates.yaml"
    path.write_text(yaml.safe_dump({
        "tiny": str(tiny_model_dir), "tuned": str(run),
        "one-layer": {"name_or_path": str(tiny_model_dir), "init": {"num_hidden_layers": 1, "layers": "bottom"}},
        "random": {"name_or_path": str(tiny_model_dir), "init": {"weights": "random"}}}, sort_keys=False))
    return path


def test_rank_scores_every_candidate_and_caches_their_features(candidates, tiny_model_dir, toy_data, tmp_path,
                                                               cache):
    # Seed 1: the random twin is not the tiny model itself (that one was made with seed 0).
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, "full", train={"seed": 1})
    result = rank(recipe, str(candidates), output_dir=tmp_path / "rank")
    ranking = json.loads(result.path.read_text())
    assert ranking == json.loads(json.dumps(result.ranking))
    rows = ranking["candidates"]
    assert sorted(r["name"] for r in rows) == ["one-layer", "random", "tiny", "tuned"]
    assert [r["logme"] for r in rows] == sorted((r["logme"] for r in rows), reverse=True)
    assert all(r["examples"] == 64 and r["dim"] == 32 and r["seconds"] > 0 for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["tuned"]["leep"] is not None and by_name["tuned"]["leep"] <= 0
    assert by_name["tiny"]["leep"] is None and "head" in by_name["tiny"]["leep_note"]
    # The run fine-tuned on this very task separates its classes: the best of the four.
    assert ranking["recommendation"]["best"] == "tuned" == rows[0]["name"]
    assert by_name["tuned"]["probe_accuracy"] > by_name["random"]["probe_accuracy"]
    assert len(list((cache / "features").glob("*.safetensors"))) == 4  # training split only

    # A feature-extraction run of a candidate reads its training features from that cache.
    hftransfer.train({**recipe, "strategy": {"name": "feature-extraction"}}, output_dir=tmp_path / "fe")
    assert len(list((cache / "features").glob("*.safetensors"))) == 4 + 2  # + validation, test


def test_rank_against_a_comparison_of_the_same_candidates(candidates, tiny_model_dir, toy_data, tmp_path, cache):
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, "full", train={"learning_rate": 5e-3})
    grid = hftransfer.compare(recipe, sources=str(candidates), strategies="full", budgets="all", seeds=1,
                              min_steps=8, scratch=False, output_dir=tmp_path / "cmp", progress=False)
    assert [a["name"] for a in grid.results["comparison"]["arms"]] == ["tiny", "tuned", "one-layer", "random"]
    result = hftransfer.rank(recipe, str(candidates), compare_dir=tmp_path / "cmp", output_dir=tmp_path / "rank")
    tuned = result.ranking["fine_tuned"]
    assert tuned["budget"] == "all" and set(tuned["scores"]) == {"tiny", "tuned", "one-layer", "random"}
    assert -1 <= tuned["kendall_tau"]["logme"] <= 1 and "probe_accuracy" in tuned["kendall_tau"]
    assert "leep" not in tuned["kendall_tau"]  # only one candidate has a head of its own
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Source ranking before training" in report
    assert f"{tuned['kendall_tau']['logme']:.2f}" in report


def test_text_candidates_are_scored_on_what_the_strategy_trains_on(tiny_model_dir, toy_data, tmp_path, cache):
    """Fine-tuning trains the model's own head on the first token: rank scores that (cls), even
    for a sentence-transformers checkpoint; a feature-extraction recipe keeps its own pooling."""
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, "full")
    rows = rank(recipe, f"{tiny_model_dir},embedded", output_dir=tmp_path / "a").ranking["candidates"]
    assert {r["name"]: r["pooling"] for r in rows} == {str(tiny_model_dir): "cls", "embedded": "cls"}
    probe = {**recipe, "strategy": {"name": "feature-extraction"}}
    rows = rank(probe, f"{tiny_model_dir},embedded", output_dir=tmp_path / "b").ranking["candidates"]
    assert {r["name"]: r["pooling"] for r in rows} == {str(tiny_model_dir): "cls", "embedded": "mean"}
    rows = rank(recipe, f"{tiny_model_dir},embedded", pooling="mean", output_dir=tmp_path / "c").ranking["candidates"]
    assert {r["pooling"] for r in rows} == {"mean"}


def test_token_tasks_rank_on_per_word_features(tiny_model_dir, tmp_path, cache):
    sentences = toy_sentences(24, 0)
    train = write_conll(tmp_path / "train.txt", sentences)
    recipe = tiny_recipe_dict(tiny_model_dir, tmp_path, "full")
    recipe["task"] = {"type": "token-classification"}
    recipe["data"] = {"train": str(train), "validation": str(write_conll(tmp_path / "v.txt", toy_sentences(8, 1)))}
    result = rank(recipe, [str(tiny_model_dir), "embedded"], output_dir=tmp_path / "rank")
    words = sum(len(tokens) for tokens, _ in sentences)
    assert [r["examples"] for r in result.ranking["candidates"]] == [words, words]
    assert {r["dim"] for r in result.ranking["candidates"]} == {32, 384}


def test_bad_candidates_are_one_clear_error(tiny_model_dir, toy_data, tmp_path, cache):
    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, "full")
    out = tmp_path / "rank"
    user_error("needs 2 or more", call=lambda: rank(recipe, str(tiny_model_dir), output_dir=out))
    user_error("candidate /no/such/model", "does not exist",
               call=lambda: rank(recipe, f"{tiny_model_dir},/no/such/model", output_dir=out))
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "bert"}))
    user_error(f"candidate {empty}", call=lambda: rank(recipe, f"{tiny_model_dir},{empty}", output_dir=out))
    from transformers import ViTConfig, ViTModel

    vit = tmp_path / "vit"
    ViTModel(ViTConfig(**TINY_VIT)).save_pretrained(vit)
    user_error(f"candidate {vit}", call=lambda: rank(recipe, [str(tiny_model_dir), str(vit)], output_dir=out))
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"good film {i},positive\n" for i in range(8)))
    single = {**recipe, "data": {"train": str(one_class), "validation": str(one_class)}}
    user_error("single class", call=lambda: rank(single, f"{tiny_model_dir},embedded", output_dir=out))
    user_error("--folds", call=lambda: rank(recipe, f"{tiny_model_dir},embedded", folds=1, output_dir=out))
    assert not out.exists()


def test_the_cli_prints_the_ranking(candidates, tiny_model_dir, toy_data, tmp_path, capsys, cache):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_model_dir, toy_data, "full")))
    rc, out, err = run_cli(capsys, "rank", path, "--candidates", candidates, "--output-dir", tmp_path / "o")
    assert rc == 0, err
    assert "recommended: tuned" in out and "64 training examples" in out
    rc, out, err = run_cli(capsys, "rank", path, "--candidates", "embedded", "--output-dir", tmp_path / "o2")
    assert_cli_error(rc, err, "ranking needs 2 or more")
