"""token-classification: CoNLL reading, IOB2, first-sub-word labels, seqeval metrics, grouped
predictions, every strategy on a tiny BERT, and the outputs loading in plain transformers."""
from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import pytest
from helpers import assert_cli_error, run_cli, run_without_the_kit, tiny_recipe_dict, user_error

from hftransfer import train
from hftransfer.registry import get_task

PEOPLE = [["john"], ["mary"], ["peter", "smith"], ["anna", "brown"]]
PLACES = [["paris"], ["london"], ["berlin"], ["new", "york"]]
FILLER = ["today", "with", "friends", "again", "and", "then", "slept"]


def toy_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """'<person> visited <place> ...': learnable in a few steps by a tiny model."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        tokens = person + ["visited"] + place + rng.sample(FILLER, rng.randint(0, 3))
        tags = (["B-PER"] + ["I-PER"] * (len(person) - 1) + ["O"]
                + ["B-LOC"] + ["I-LOC"] * (len(place) - 1))
        tags += ["O"] * (len(tokens) - len(tags))
        out.append((tokens, tags))
    return out


def write_conll(path: Path, sentences, newline: str = "\n", docstart: bool = True,
                final_blank: bool = True) -> Path:
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for tokens, tags in sentences:
        lines += [f"{t} NN O {g}" for t, g in zip(tokens, tags)] + [""]
    if not final_blank:
        lines = lines[:-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join(lines).encode() + (newline.encode() if final_blank else b""))
    return path


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ner")
    write_conll(out / "train.txt", toy_sentences(96, 0), newline="\r\n")
    write_conll(out / "validation.txt", toy_sentences(24, 1))
    write_conll(out / "test.txt", toy_sentences(24, 2), final_blank=False)
    return out


def ner_recipe(tiny_model_dir, ner_data, strategy="full", **sections) -> dict:
    recipe = tiny_recipe_dict(tiny_model_dir, ner_data, strategy, **sections)
    recipe["task"] = {"type": "token-classification"}
    recipe["data"] = {"train": str(ner_data / "train.txt"),
                      "validation": str(ner_data / "validation.txt"),
                      "test": str(ner_data / "test.txt")}
    recipe["train"]["num_train_epochs"] = 3
    recipe["train"]["per_device_train_batch_size"] = 8
    return recipe


def task(**options):
    return get_task("token-classification")(
        get_task("token-classification").Options(**options))


# --------------------------------------------------------------------------- reading


def test_conll_reader_crlf_docstart_and_missing_final_blank(tmp_path):
    path = write_conll(tmp_path / "a.txt", toy_sentences(3, 0), newline="\r\n", final_blank=False)
    ds = task().read_split(str(path), "data.train", None)
    assert len(ds) == 3
    assert ds[0]["tokens"] == toy_sentences(3, 0)[0][0]
    assert ds[2]["tags"] == toy_sentences(3, 0)[2][1]  # the last sentence, no blank line after it


def test_iob1_becomes_iob2(tmp_path):
    path = tmp_path / "iob1.conll"
    path.write_text("John I-PER\nSmith I-PER\nmet O\nMary I-PER\nI-PER\tB-PER\n\n"
                    "in O\nNew I-LOC\nYork I-LOC\nI-ORG I-ORG\n", encoding="utf-8")
    ds = task().read_split(str(path), "data.train", None)
    assert ds[0]["tags"] == ["B-PER", "I-PER", "O", "B-PER", "B-PER"]
    assert ds[1]["tags"] == ["O", "B-LOC", "I-LOC", "B-ORG"]


def test_json_lists_and_hub_style_class_labels(tmp_path):
    import datasets

    rows = [{"tokens": t, "ner": g} for t, g in toy_sentences(5, 3)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ds = task(tags_column="ner").read_split(str(tmp_path / "a.jsonl"), "data.train", None)
    assert ds[0]["ner"] == rows[0]["ner"]

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    hub = datasets.Dataset.from_dict({"tokens": [r["tokens"] for r in rows],
                                      "ner_tags": [[names.index(t) for t in r["ner"]] for r in rows]},
                                     features=features)
    hub.to_parquet(str(tmp_path / "a.parquet"))
    ds = task(tags_column="ner_tags").read_split(str(tmp_path / "a.parquet"), "data.train", None)
    assert ds[1]["ner_tags"] == rows[1]["ner"]


def test_label_set_has_both_prefixes_of_every_type(ner_data):
    t = task()
    ds = t.read_split(str(ner_data / "train.txt"), "data.train", None)
    assert t.label_names(ds, "data.train") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_first_subword_carries_the_label(tiny_model_dir):
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    t = task()
    ds = datasets.Dataset.from_list([{"tokens": ["Huggingface", "visited", "Kathmandu"],
                                      "tags": ["B-ORG", "O", "B-LOC"]}])
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    enc = t.preprocess(ds, tokenizer, labels)[0]
    words = tokenizer(["Huggingface", "visited", "Kathmandu"], is_split_into_words=True).word_ids()
    assert len(words) > 5  # the words split into several sub-words
    expected, previous = [], None
    for word in words:
        expected.append(-100 if word is None or word == previous else
                        labels.index(["B-ORG", "O", "B-LOC"][word]))
        previous = word
    assert enc["labels"] == expected
    assert [x for x in enc["labels"] if x != -100] == [3, 0, 1]


def test_entity_level_metrics_follow_seqeval():
    import numpy as np

    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "I-LOC", "O", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-LOC", "I-LOC", "O", "B-PER"]]
    ids = lambda rows: np.array([[labels.index(t) for t in r] + [-100] for r in rows])  # noqa: E731
    logits = np.eye(len(labels))[ids(pred).clip(0)]
    from transformers import EvalPrediction

    out = task().compute_metrics(labels)(EvalPrediction(predictions=logits, label_ids=ids(gold)))
    # gold entities: PER(0-1), LOC(3), LOC(0-1); predicted: PER(0), LOC(3), LOC(0-1), PER(3)
    assert out["precision"] == pytest.approx(2 / 4)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 * (0.5 * 2 / 3) / (0.5 + 2 / 3))
    assert out["f1_LOC"] == pytest.approx(1.0)
    assert out["f1_PER"] == pytest.approx(0.0)
    assert out["accuracy"] == pytest.approx(6 / 8)


# --------------------------------------------------------------------------- training


STRATEGIES = {
    "full": {},
    "l2sp": {"name": "full", "regularization": {"type": "l2sp", "weight": 0.01}},
    "layer-lr-decay": {"name": "full", "layer_lr_decay": 0.8},
    "scratch": {"name": "scratch"},
    "partial-freeze": {"name": "partial-freeze", "freeze_layers": 1, "gradual_unfreeze": True},
    "lora": {"name": "lora"},
    "feature-extraction": {"name": "feature-extraction"},
}


@pytest.fixture(scope="module")
def ner_runs(tiny_model_dir, ner_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ner-runs")
    runs = {}
    for key, strategy in STRATEGIES.items():
        recipe = ner_recipe(tiny_model_dir, ner_data, strategy.get("name", key))
        recipe["strategy"] = {"name": key, **strategy}
        if key == "feature-extraction":
            recipe["train"]["num_train_epochs"] = 30
        runs[key] = train(recipe, output_dir=out / key)
    return runs


@pytest.mark.parametrize("key", list(STRATEGIES))
def test_every_strategy_trains_and_reports_entity_metrics(ner_runs, key):
    metrics = ner_runs[key].metrics
    assert metrics["task"] == "token-classification"
    for split in ("validation", "test"):
        assert {"precision", "recall", "f1", "accuracy", "f1_PER", "f1_LOC"} <= set(metrics[split])
    assert metrics["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_full_fine_tuning_learns_the_toy_entities(ner_runs):
    assert ner_runs["full"].metrics["test"]["f1"] >= 0.6


def test_predict_groups_entities_with_character_offsets(ner_runs, capsys):
    text = "peter smith visited new york again"
    rc, out, _ = run_cli(capsys, "predict", ner_runs["full"].run_dir, "--json", text)
    assert rc == 0
    [entities] = json.loads(out)
    for entity in entities:
        assert set(entity) == {"entity_group", "score", "word", "start", "end"}
        assert text[entity["start"]:entity["end"]] == entity["word"]
        assert entity["entity_group"] in {"PER", "LOC"}


@pytest.mark.parametrize("key", ["full", "lora", "feature-extraction", "partial-freeze"])
def test_runs_load_in_plain_transformers(ner_runs, key, tmp_path, capsys):
    run_dir = ner_runs[key].run_dir
    texts = ["john visited paris", "anna brown visited london today"]
    rc, out, _ = run_cli(capsys, "predict", run_dir, "--json", *texts)
    assert rc == 0
    kit = json.loads(out)
    if key == "lora":
        base = json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        load = (f"from peft import PeftModel\n"
                f"from transformers import AutoConfig, AutoModelForTokenClassification\n"
                f"cfg = AutoConfig.from_pretrained({str(run_dir)!r})\n"
                f"base = AutoModelForTokenClassification.from_pretrained({base!r}, config=cfg)\n"
                f"model = PeftModel.from_pretrained(base, {str(run_dir)!r}).merge_and_unload()\n")
    else:
        load = f"model = {str(run_dir)!r}\n"
    script = load + textwrap.dedent(f"""
        import json, sys
        from transformers import AutoTokenizer, pipeline
        pipe = pipeline("token-classification", model=model,
                        tokenizer=AutoTokenizer.from_pretrained({str(run_dir)!r}), aggregation_strategy="first")
        out = pipe({texts!r})
        print(json.dumps([[(e["entity_group"], e["start"], e["end"]) for e in s] for s in out]))
    """)
    plain = run_without_the_kit(script, tmp_path)
    assert plain == [[[e["entity_group"], e["start"], e["end"]] for e in s] for s in kit]


@pytest.mark.parametrize("key", ["full", "feature-extraction"])
def test_evaluate_reproduces_the_test_metrics(ner_runs, key, capsys):
    # For feature-extraction this checks the export: the saved model scores exactly what the
    # head scored on the cached token features.
    rc, out, _ = run_cli(capsys, "evaluate", ner_runs[key].run_dir, "--split", "test")
    assert rc == 0
    result, expected = json.loads(out), ner_runs[key].metrics["test"]
    assert result["f1"] == pytest.approx(expected["f1"], abs=1e-9)
    assert result["loss"] == pytest.approx(expected["loss"], abs=1e-4)


def test_sequence_classifier_run_is_a_source_for_ner(tiny_recipe, tiny_model_dir, ner_data, tmp_path):
    """A run of another task transfers its encoder; the head is new."""
    from hftransfer.recipe import load_recipe
    from hftransfer.registry import get_strategy

    source = train(tiny_recipe("full"), output_dir=tmp_path / "sentiment").run_dir
    recipe = load_recipe(ner_recipe(source, ner_data))
    t = get_task("token-classification")(recipe.task_options)
    strategy = get_strategy("full")(recipe.strategy_options, t)
    model = strategy.build_model(recipe.model, ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
    from transformers import AutoModelForSequenceClassification

    old = AutoModelForSequenceClassification.from_pretrained(source)
    import torch

    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight,
                       old.bert.encoder.layer[1].output.dense.weight)
    assert model.config.id2label[3] == "B-PER"
    assert any(n.startswith("classifier") for n in strategy.new_params)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("content,needles", [
    ("John NN B-PER\nSmith NN NNP I-PER\n", ("line 2", "4 columns", "have 3")),
    ("John\nSmith I-PER\n", ("line 1", "no tag")),
    ("John B-PERSON-X\nran XYZ\n", ("'XYZ'", "not IOB")),
    ("-DOCSTART- O\n\n", ("no sentences",)),
])
def test_bad_conll_files_give_one_error_line(content, needles, tiny_model_dir, tmp_path, capsys, work):
    bad = tmp_path / "bad.conll"
    bad.write_text(content, encoding="utf-8")
    recipe = tiny_recipe_dict(tiny_model_dir, tmp_path, "full")
    recipe["task"] = {"type": "token-classification"}
    recipe["data"] = {"train": str(bad)}
    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    rc, _, err = run_cli(capsys, "train", tmp_path / "r.yaml")
    assert_cli_error(rc, err, *needles)
    assert not (work / "runs").exists()


def test_tag_list_lengths_must_match_tokens(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"tokens": ["a", "b"], "tags": ["O", "O"]}) + "\n"
        + json.dumps({"tokens": ["a", "b", "c"], "tags": ["O", "B-PER"]}) + "\n", encoding="utf-8")
    user_error("row 2", "3 tokens but 2 tags",
               call=lambda: task().read_split(str(tmp_path / "a.jsonl"), "data.train", None))


def test_unseen_entity_type_in_validation_is_named(tiny_model_dir, ner_data, tmp_path):
    (tmp_path / "val.conll").write_text("Acme B-ORG\nwins O\n", encoding="utf-8")
    recipe = ner_recipe(tiny_model_dir, ner_data)
    recipe["data"]["validation"] = str(tmp_path / "val.conll")
    user_error("data.validation", "ORG", call=lambda: train(recipe, output_dir=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_card_carries_the_entity_metrics(ner_runs):
    from huggingface_hub import ModelCard

    run = ner_runs["lora"].run_dir
    card = ModelCard.load(run / "README.md")
    metrics = json.loads((run / "metrics.json").read_text())
    assert card.data.pipeline_tag == "token-classification"
    assert card.data.library_name == "peft"
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {(split, name): value for split in ("validation", "test")
                       for name, value in metrics[split].items() if name != "loss"}
