"""predict: token tasks split words as training does (whitespace, CoNLL-style) and tag each the
way evaluation scores it; words with no sub-word; byte-order marks in CoNLL files; the predict
options (--batch-size, --top-k, --file with --column, --output) and their errors."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import assert_cli_error, run_cli, user_error
from test_token import ner_recipe, toy_sentences, write_conll

from hftransfer import train
from hftransfer.predictions import parse_top_k, prediction_inputs, write_predictions
from hftransfer.registry import get_task
from hftransfer.tasks.token import entities, read_conll, split_words

VS16 = "\ufe0f"  # a variation selector: the BERT tokenizer turns it into no sub-word at all


def token_task(**options):
    cls = get_task("token-classification")
    return cls(cls.Options(**options))


@pytest.fixture(scope="module")
def ner_run(tiny_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("ner-data")
    write_conll(data / "train.txt", toy_sentences(64, 0))
    write_conll(data / "validation.txt", toy_sentences(16, 1))
    recipe = ner_recipe(tiny_model_dir, data)
    del recipe["data"]["test"]
    recipe["train"]["num_train_epochs"] = 2
    return train(recipe, output_dir=tmp_path_factory.mktemp("ner-run") / "run").run_dir


@pytest.fixture(scope="module")
def text_run(tiny_model_dir, toy_data, tmp_path_factory):
    from helpers import tiny_recipe_dict

    recipe = tiny_recipe_dict(tiny_model_dir, toy_data, "full")
    recipe["train"]["num_train_epochs"] = 1
    return train(recipe, output_dir=tmp_path_factory.mktemp("text-run") / "run").run_dir


# --------------------------------------------------------------------------- words


def test_words_are_whitespace_separated_and_a_bom_is_whitespace():
    text = "hi @mike_j, see\ufeffyou  in\tNew-York!"
    assert split_words(text) == [("hi", 0, 2), ("@mike_j,", 3, 11), ("see", 12, 15), ("you", 16, 19),
                                 ("in", 21, 23), ("New-York!", 24, 33)]


def test_a_bom_inside_a_conll_file_is_whitespace(tmp_path):
    path = tmp_path / "joined.conll"
    # Two files concatenated: the second one's BOM lands at the start of a line, or alone on one.
    path.write_text("John B-PER\nran O\n\n\ufeff-DOCSTART- O\n\ufeff\n\ufeffMary B-PER\nsang O\n\ufeff\n"
                    "Anna\ufeff B-PER\n", encoding="utf-8")
    sentences = read_conll(path, "data.train")
    assert [s["tokens"] for s in sentences] == [["John", "ran"], ["Mary", "sang"], ["Anna"]]
    assert [s["tags"] for s in sentences] == [["B-PER", "O"], ["B-PER", "O"], ["B-PER"]]


def test_concatenated_conll2003_files_keep_every_sentence(shared_data, tmp_path):
    validation, test = shared_data / "conll2003" / "validation.txt", shared_data / "conll2003" / "test.txt"
    joined = tmp_path / "joined.txt"
    joined.write_bytes(validation.read_bytes() + "\ufeff".encode() + test.read_bytes())
    counts = [len(read_conll(p, "data.train")) for p in (validation, test, joined)]
    assert counts[2] == counts[0] + counts[1]


def test_every_conll2003_word_carries_a_label(shared_data, tiny_model_dir):
    """No word of the real validation data goes unscored (none has zero sub-words left)."""
    from transformers import AutoTokenizer

    t = token_task()
    t.position_limit = 512
    ds = t.read_split(str(shared_data / "conll2003" / "validation.txt"), "data.validation", None)
    labels = t.label_names(ds, "data.validation")
    encoded = t.preprocess(ds, AutoTokenizer.from_pretrained(tiny_model_dir), labels)
    scored = sum(sum(1 for x in row if x != -100) for row in encoded["labels"])
    assert scored == sum(len(tokens) for tokens in ds["tokens"])


def test_a_word_with_no_subword_is_scored_not_truncated(tiny_model_dir, caplog):
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer([VS16], is_split_into_words=True, add_special_tokens=False)["input_ids"] == []
    t = token_task()
    t.position_limit = 128
    labels = ["O", "B-PER", "I-PER"]
    ds = datasets.Dataset.from_list([{"tokens": ["john", VS16, "ran", VS16], "tags": ["B-PER", "B-PER", "O", "O"]}])
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        [row] = t.preprocess(ds, tokenizer, labels)
    assert "truncated" not in caplog.text
    # every word has its own first sub-word: the unknown token stands in for the empty ones
    assert [x for x in row["labels"] if x != -100] == [1, 1, 0, 0]
    assert tokenizer.convert_ids_to_tokens(row["input_ids"]).count(tokenizer.unk_token) == 2


def test_truncation_is_still_reported(tiny_model_dir, caplog):
    import datasets
    from transformers import AutoTokenizer

    t = token_task(max_length=6)
    t.position_limit = 128
    ds = datasets.Dataset.from_list([{"tokens": ["john", "visited", "new", "york", "again", "today"],
                                      "tags": ["B-PER", "O", "B-LOC", "I-LOC", "O", "O"]}])
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        t.preprocess(ds, AutoTokenizer.from_pretrained(tiny_model_dir), ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
    assert "1 sentences were longer than 6 sub-words" in caplog.text


def test_predict_tags_each_word_as_evaluation_scores_it(ner_run, tmp_path):
    """The acceptance check: the word-level tags predict gives a sentence are the per-word
    predictions of the evaluation path for the same words."""
    from hftransfer.engine import load_run, split_outputs

    sentences = ["john visited @mike_j, in paris " + VS16 + " today",
                 "anna brown visited new york with @mike_j, again " + VS16,
                 VS16 + " peter smith visited london"]
    words = [[w for w, _, _ in split_words(s)] for s in sentences]
    write_conll(tmp_path / "eval.txt", [(w, ["B-PER"] + ["O"] * (len(w) - 1)) for w in words], docstart=False)
    run = load_run(ner_run)
    outputs = split_outputs(run, data=str(tmp_path / "eval.txt"))
    assert list(outputs.words) == [len(w) for w in words]  # every word scored, the U+FE0F ones too
    labels = run.metrics["labels"]
    evaluated = [labels[i] for i in outputs.logits.argmax(-1)]
    tagged = run.task.tag_words(run.model, run.processor, sentences, batch_size=2)
    assert [w["tag"] for s in tagged for w in s] == evaluated
    assert [[w["word"] for w in s] for s in tagged] == words
    for sentence, words_tagged in zip(sentences, tagged):
        assert all(sentence[w["start"]:w["end"]] == w["word"] for w in words_tagged)
    # predict's entities are those words grouped: spans start and end on word boundaries
    predicted = run.task.predict(run.model, run.processor, sentences)
    expected = [entities(s, w) for s, w in zip(sentences, tagged)]
    # Batches of other sizes sum in another order: scores agree to float precision, not bit for bit.
    drop_score = lambda found: [[{k: v for k, v in e.items() if k != "score"} for e in s] for s in found]
    assert drop_score(predicted) == drop_score(expected)
    assert [e["score"] for s in predicted for e in s] == pytest.approx([e["score"] for s in expected for e in s],
                                                                      abs=1e-5)
    for sentence, found in zip(sentences, predicted):
        bounds = {b for _, start, end in split_words(sentence) for b in (start, end)}
        assert all(e["start"] in bounds and e["end"] in bounds for e in found)


def test_long_text_is_tagged_whole_in_windows(ner_run):
    from hftransfer.engine import load_run

    run = load_run(ner_run)
    text = " ".join(["john visited paris today"] * 60)  # ~240 sub-words; the model has 128 positions
    [tagged] = run.task.tag_words(run.model, run.processor, [text])
    assert len(tagged) == 240 and all(w["score"] is not None for w in tagged)
    short = run.task.tag_words(run.model, run.processor, ["john visited paris today"])[0]
    assert [w["tag"] for w in tagged[:4]] == [w["tag"] for w in short]


def test_entities_group_like_the_pipeline():
    text = "peter smith met @mike_j, in new york"
    tags = ["B-PER", "I-PER", "O", "B-PER", "O", "I-LOC", "I-LOC"]
    words = [{"word": w, "start": s, "end": e, "tag": t, "score": 0.5}
             for (w, s, e), t in zip(split_words(text), tags)]
    assert [(e["entity_group"], e["word"]) for e in entities(text, words)] == [
        ("PER", "peter smith"), ("PER", "@mike_j,"), ("LOC", "new york")]


def test_token_predict_has_no_top_k(ner_run, capsys):
    rc, _, err = run_cli(capsys, "predict", ner_run, "john visited paris", "--top-k", "2")
    assert_cli_error(rc, err, "--top-k", "token-classification")


# --------------------------------------------------------------------------- options


def test_top_k_lists_label_scores(text_run, capsys):
    rc, out, _ = run_cli(capsys, "predict", text_run, "--json", "a lovely film", "--top-k", "all")
    assert rc == 0
    [row] = json.loads(out)
    assert [s["label"] for s in row["scores"]][0] == row["label"]
    assert sorted(s["label"] for s in row["scores"]) == ["negative", "positive"]
    assert sum(s["score"] for s in row["scores"]) == pytest.approx(1.0)
    rc, out, _ = run_cli(capsys, "predict", text_run, "--json", "a lovely film", "--top-k", "1")
    assert [len(r["scores"]) for r in json.loads(out)] == [1]
    rc, out, _ = run_cli(capsys, "predict", text_run, "--json", "a lovely film", "--top-k", "0")
    assert [len(r["scores"]) for r in json.loads(out)] == [2]
    rc, out, _ = run_cli(capsys, "predict", text_run, "--json", "a lovely film")
    assert "scores" not in json.loads(out)[0]  # the default output is unchanged


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_bad_top_k(value, text_run, capsys):
    rc, _, err = run_cli(capsys, "predict", text_run, "a film", f"--top-k={value}")
    assert_cli_error(rc, err, "--top-k", "'all'")


def test_parse_top_k():
    assert [parse_top_k(v) for v in (None, 0, 3, "all", "ALL", "2")] == [None, 0, 3, 0, 0, 2]
    user_error("--top-k", call=lambda: parse_top_k(True))


def test_batch_size_does_not_change_predictions(text_run):
    import hftransfer

    texts = ["a lovely film", "an awful day", "the story was very dull", "quite a bright warm day"]
    one = hftransfer.predict(text_run, texts, batch_size=1)
    many = hftransfer.predict(text_run, texts, batch_size=3)
    assert [r["label"] for r in one] == [r["label"] for r in many]
    assert np.allclose([r["score"] for r in one], [r["score"] for r in many], atol=1e-5)
    user_error("--batch-size", call=lambda: hftransfer.predict(text_run, texts, batch_size=0))


def _write_table(path: Path, rows: list[dict]) -> Path:
    import datasets

    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_file_reads_the_recipes_input_column(suffix, text_run, tmp_path, capsys):
    import hftransfer

    rows = [{"id": 1, "text": "a lovely film, really", "review": "an awful day"},
            {"id": 2, "text": "an awful day", "review": "a lovely film, really"}]
    path = _write_table(tmp_path / f"inputs{suffix}", rows)
    expected = hftransfer.predict(text_run, [r["text"] for r in rows])
    rc, out, _ = run_cli(capsys, "predict", text_run, "--json", "--file", path)
    assert rc == 0 and json.loads(out) == expected
    rc, out, _ = run_cli(capsys, "predict", text_run, "--json", "--file", path, "--column", "review")
    assert rc == 0 and json.loads(out) == expected[::-1]


def test_text_file_stays_one_input_per_line(text_run, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("a lovely film, really\n\nan awful day\n", encoding="utf-8")
    rc, out, _ = run_cli(capsys, "predict", text_run, "--file", tmp_path / "in.txt")
    assert rc == 0
    assert [line.split("\t")[-1] for line in out.strip().splitlines()] == ["a lovely film, really", "an awful day"]


def test_output_writes_one_row_per_input(text_run, tmp_path, capsys):
    texts = ["a lovely film", "an awful, grim day"]
    rc, out, _ = run_cli(capsys, "predict", text_run, *texts, "--top-k", "all", "--output", tmp_path / "p.jsonl")
    assert rc == 0 and "2 predictions written to" in out
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == texts and all(len(r["scores"]) == 2 for r in rows)
    rc, out, _ = run_cli(capsys, "predict", text_run, *texts, "--top-k", "1", "--output", tmp_path / "out" / "p.csv")
    assert rc == 0
    with (tmp_path / "out" / "p.csv").open(newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["input"] for r in table] == texts
    assert set(table[0]) == {"input", "label", "score", "label_1", "score_1"}
    assert [r["label"] for r in table] == [r["label"] for r in rows]


def test_token_output_carries_the_entities(ner_run, tmp_path, capsys):
    text = "john visited paris with @mike_j,"
    rc, _, _ = run_cli(capsys, "predict", ner_run, text, "--output", tmp_path / "p.jsonl")
    assert rc == 0
    [row] = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert row["input"] == text and isinstance(row["entities"], list)
    write_predictions(tmp_path / "p.csv", [text], [row["entities"]])
    with (tmp_path / "p.csv").open(newline="", encoding="utf-8") as f:
        [cell] = list(csv.DictReader(f))
    assert json.loads(cell["entities"]) == row["entities"]


def test_token_file_reads_lists_of_words(ner_run, tmp_path):
    import hftransfer

    path = _write_table(tmp_path / "in.jsonl", [{"tokens": ["john", "visited", "@mike_j,"]}])
    assert hftransfer.predict(ner_run, file=path) == hftransfer.predict(ner_run, ["john visited @mike_j,"])


@pytest.mark.parametrize("argv,needles", [
    (["--file", "{tmp}/in.csv", "--column", "body"], ("--file", "no column 'body'", "text, label")),
    (["--file", "{tmp}/in.xlsx"], ("--file", "extension", ".txt")),
    (["--file", "{tmp}/missing.csv"], ("--file", "does not exist")),
    (["a film", "--output", "{tmp}/p.xml"], ("--output", ".jsonl", ".csv")),
    (["a film", "--column", "text"], ("--column", "--file")),
    (["--file", "{tmp}/in.csv", "--column", "text,label"], ("--column", "1 input column")),
    (["--file", "{tmp}/blank.csv"], ("row 2", "empty cell", "'text'")),
])
def test_option_errors_are_one_line(argv, needles, text_run, tmp_path, capsys):
    (tmp_path / "in.csv").write_text("text,label\na film,positive\n", encoding="utf-8")
    (tmp_path / "blank.csv").write_text('text,label\na film,positive\n"",negative\n', encoding="utf-8")
    (tmp_path / "in.xlsx").write_bytes(b"PK")
    rc, _, err = run_cli(capsys, "predict", text_run, *[a.format(tmp=tmp_path) for a in argv])
    assert_cli_error(rc, err, *needles)
    assert not (tmp_path / "p.xml").exists()


def test_pair_inputs_from_columns_and_tabs(tmp_path):
    task = SimpleNamespace(options=SimpleNamespace(text_pair_column="hypothesis"),
                           predict_columns=lambda column=None: (column or "premise,hypothesis").split(","))
    _write_table(tmp_path / "pairs.csv", [{"premise": "a man sleeps", "hypothesis": "nobody sleeps"}])
    assert prediction_inputs(task, ["a\tb"], tmp_path / "pairs.csv") == [("a", "b"), ("a man sleeps", "nobody sleeps")]
    user_error("input 1", "text<TAB>pair", call=lambda: prediction_inputs(task, ["no tab"]))
    rows = write_predictions(tmp_path / "p.jsonl", [("a", "b")], [{"label": "x", "score": 1.0}]).read_text()
    assert json.loads(rows) == {"input": "a", "input_pair": "b", "label": "x", "score": 1.0}
