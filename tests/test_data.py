"""Data loading: every bad file fails with one line naming the file (and row or line); good files
in every supported shape load; validation carving and label budgets are seeded and exact.

Unit tests call ``hftransfer.data`` directly with the text-classification task (no model); a few
CLI tests prove the same mistakes become one ``error:`` line, exit 2, and no run directory.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import assert_cli_error, run_cli, tree, user_error

from hftransfer.data import load_splits, read_files
from hftransfer.recipe import DataSpec
from hftransfer.registry import get_task

# --------------------------------------------------------------------------- helpers


def text_task(**options):
    cls = get_task("text-classification")
    return cls(cls.Options(**options))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def csv_rows(n_pos: int, n_neg: int, start: int = 0) -> str:
    """`id,text,label` rows: ids start at ``start`` so rows can be traced through splits."""
    lines = ["id,text,label"]
    for i in range(n_pos + n_neg):
        label = "pos" if i < n_pos else "neg"
        lines.append(f"{start + i},sentence number {start + i},{label}")
    return "\n".join(lines) + "\n"


def splits_for(tmp_path: Path, seed: int = 0, **data) -> "object":
    spec = DataSpec(**data)
    return load_splits(spec, text_task(), seed)


GOOD = "text,label\ngood film,pos\nbad film,neg\nfine day,pos\ngrim day,neg\n"


# --------------------------------------------------------------------------- files that cannot be read


def test_missing_file(tmp_path):
    user_error("data.train", str(tmp_path / "nope.csv"), "does not exist",
               call=lambda: read_files(str(tmp_path / "nope.csv"), "data.train"))


def test_glob_matching_nothing(tmp_path):
    user_error("data.train", "no files match", "*.csv",
               call=lambda: read_files(str(tmp_path / "*.csv"), "data.train"))


def test_folder_without_data_files(tmp_path):
    write(tmp_path / "folder" / "notes.txt", "hello")
    user_error("data.train", "folder", "no data files", ".csv",
               call=lambda: read_files(str(tmp_path / "folder"), "data.train"))


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path / "locked.csv", GOOD)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: simulate the permission error
        real = pathlib.Path.read_bytes

        def deny(self):
            if self.name == "locked.csv":
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(pathlib.Path, "read_bytes", deny)
    try:
        user_error("data.train", "locked.csv", "cannot read", "Permission denied",
                   call=lambda: read_files(str(path), "data.train"))
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("content", [b"", b"   \n\n", b"\r\n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path / "empty.csv", content)
    user_error("data.train", "empty.csv", "is empty",
               call=lambda: read_files(str(path), "data.train"))


@pytest.mark.parametrize("name", ["header.csv", "empty.jsonl", "empty_list.json"])
def test_file_without_rows(tmp_path, name):
    content = {"header.csv": "text,label\n", "empty.jsonl": "\n \n", "empty_list.json": "[]"}[name]
    path = write(tmp_path / name, content)
    msg = user_error("data.train", name, call=lambda: read_files(str(path), "data.train"))
    assert "no rows" in msg or "empty" in msg


def test_not_utf8_names_the_line(tmp_path):
    path = write(tmp_path / "latin1.csv",
                 "text,label\ngood,pos\ncaf\xe9 au lait,pos\n".encode("latin-1"))
    user_error("data.train", "latin1.csv", "not UTF-8", "line 3", "UTF-8",
               call=lambda: read_files(str(path), "data.train"))


def test_binary_file(tmp_path):
    path = write(tmp_path / "image.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    user_error("data.train", "image.csv", "binary",
               call=lambda: read_files(str(path), "data.train"))


def test_utf16_file_is_refused(tmp_path):
    # Excel's "Unicode text" export: UTF-16 with NUL bytes between characters.
    path = write(tmp_path / "utf16.csv", GOOD.encode("utf-16"))
    msg = user_error("data.train", "utf16.csv", call=lambda: read_files(str(path), "data.train"))
    assert "binary" in msg or "UTF-8" in msg


def test_corrupt_parquet(tmp_path):
    path = write(tmp_path / "broken.parquet", b"PAR1 this is not really parquet PAR1")
    user_error("data.train", "broken.parquet", "parquet",
               call=lambda: read_files(str(path), "data.train"))


def test_unknown_extension_says_how_to_fix(tmp_path):
    path = write(tmp_path / "data.txt", GOOD)
    user_error("data.train", "data.txt", "data.format",
               call=lambda: read_files(str(path), "data.train"))


def test_unsupported_declared_format(tmp_path):
    path = write(tmp_path / "data.csv", GOOD)
    user_error("data.format", "'xlsx'", "csv", "parquet",
               call=lambda: read_files(str(path), "data.train", "xlsx"))


# --------------------------------------------------------------------------- malformed rows


def test_csv_row_with_too_many_fields_names_the_line(tmp_path):
    path = write(tmp_path / "rows.csv",
                 'text,label\ngood film,pos\n"multi\nline, quoted",neg\nbad, sad film,neg\n')
    # line 5 of the file: the quoted field spans lines 3-4
    user_error("data.train", "rows.csv", "line 5", "expected 2 fields", "found 3", "quote",
               call=lambda: read_files(str(path), "data.train"))


def test_csv_row_with_too_few_fields(tmp_path):
    path = write(tmp_path / "rows.csv", "text,label\ngood film,pos\nno label here\n")
    user_error("data.train", "rows.csv", "line 3", "found 1",
               call=lambda: read_files(str(path), "data.train"))


def test_csv_unterminated_quote_names_the_line(tmp_path):
    # The quote opened on line 3 never closes: the rest of the file must not be swallowed into
    # one label (which then surfaces as a baffling multi-line "single class" error).
    path = write(tmp_path / "quote.csv",
                 'text,label\ngood film,pos\nbad film,"neg\nfine day,pos\ngrim day,neg\n')
    msg = user_error("data.train", "quote.csv", call=lambda: read_files(str(path), "data.train"))
    assert "line 3" in msg or "line 5" in msg
    assert "quote" in msg.lower() or "end of data" in msg


def test_jsonl_invalid_line(tmp_path):
    path = write(tmp_path / "rows.jsonl",
                 '{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": neg}\n')
    user_error("data.train", "rows.jsonl", "line 3", "not valid JSON",
               call=lambda: read_files(str(path), "data.train"))


def test_jsonl_line_not_an_object(tmp_path):
    path = write(tmp_path / "rows.jsonl", '{"text": "good", "label": "pos"}\n["bad", "neg"]\n')
    user_error("data.train", "rows.jsonl", "line 2", "JSON object",
               call=lambda: read_files(str(path), "data.train"))


def test_json_invalid(tmp_path):
    path = write(tmp_path / "rows.json", '[{"text": "good", "label": "pos"},\n {"text": "bad",]\n')
    user_error("data.train", "rows.json", "not valid JSON", "line 2",
               call=lambda: read_files(str(path), "data.train"))


@pytest.mark.parametrize("content", ['"just a string"', "42", '[1, 2, 3]', '{"a": 1, "b": 2}'])
def test_json_not_records(tmp_path, content):
    path = write(tmp_path / "rows.json", content)
    user_error("data.train", "rows.json", "list of records",
               call=lambda: read_files(str(path), "data.train"))


def test_json_columns_of_different_lengths(tmp_path):
    path = write(tmp_path / "cols.json", json.dumps({"text": ["a", "b"], "label": ["x"]}))
    user_error("data.train", "cols.json", "different lengths",
               call=lambda: read_files(str(path), "data.train"))


@pytest.mark.parametrize("rows, column", [
    ('{"text": "a", "label": 1}\n{"text": "b", "label": "x"}\n', "label"),
    ('{"text": "a", "label": "x"}\n{"text": 7, "label": "y"}\n', "text"),
])
def test_jsonl_mixed_types_in_a_column_names_the_column(tmp_path, rows, column):
    path = write(tmp_path / "mixed.jsonl", rows)
    user_error("data.train", "mixed.jsonl", f"'{column}'",
               call=lambda: read_files(str(path), "data.train"))


def test_folder_with_different_columns(tmp_path):
    write(tmp_path / "parts" / "a.csv", GOOD)
    write(tmp_path / "parts" / "b.csv", "sentence,label\nhello,pos\n")
    user_error("data.train", "different columns",
               call=lambda: read_files(str(tmp_path / "parts"), "data.train"))


# --------------------------------------------------------------------------- columns and labels


def test_missing_text_column_lists_columns_and_the_fix(tmp_path):
    write(tmp_path / "train.csv", "sentence,label\ngood,pos\nbad,neg\n")
    user_error("data.train", "'text'", "task.text_column", "sentence, label",
               call=lambda: splits_for(tmp_path, train=str(tmp_path / "train.csv")))


def test_missing_label_column(tmp_path):
    write(tmp_path / "train.csv", "text,sentiment\ngood,pos\nbad,neg\n")
    user_error("data.train", "'label'", "task.label_column", "sentiment",
               call=lambda: splits_for(tmp_path, train=str(tmp_path / "train.csv")))


def test_missing_column_in_validation_names_validation(tmp_path):
    write(tmp_path / "train.csv", GOOD)
    write(tmp_path / "dev.csv", "text,gold\ngood,pos\n")
    user_error("data.validation", "'label'", "gold",
               call=lambda: splits_for(tmp_path, train=str(tmp_path / "train.csv"),
                                       validation=str(tmp_path / "dev.csv")))


def test_missing_pair_column(tmp_path):
    write(tmp_path / "train.csv", GOOD)
    task = text_task(text_pair_column="hypothesis")
    user_error("data.train", "'hypothesis'", "task.text_pair_column",
               call=lambda: load_splits(DataSpec(train=str(tmp_path / "train.csv")), task, 0))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_empty_label_names_the_row(tmp_path, fmt):
    if fmt == "csv":
        write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\nmeh,\nfine,pos\n")
    else:
        write(tmp_path / "train.jsonl", '{"text": "good", "label": "pos"}\n'
              '{"text": "bad", "label": "neg"}\n{"text": "meh", "label": null}\n'
              '{"text": "fine", "label": "pos"}\n')
    msg = user_error("data.train", "empty label", "'label'",
                     call=lambda: splits_for(tmp_path, train=str(tmp_path / f"train.{fmt}")))
    # the third example: "row 3" (examples) or "line 4"/"line 3" (file lines) both locate it
    assert any(f in msg for f in ("row 3", "line 4" if fmt == "csv" else "line 3"))
    assert "fill it in or remove" in msg


def test_whitespace_label_is_empty(tmp_path):
    write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\nmeh,  \n")
    user_error("data.train", "empty label",
               call=lambda: splits_for(tmp_path, train=str(tmp_path / "train.csv")))


def test_empty_label_in_a_folder_names_the_file(tmp_path):
    # With several files, a row number alone cannot be found: the message must name the file.
    write(tmp_path / "parts" / "a.csv", GOOD)
    write(tmp_path / "parts" / "b.csv", "text,label\nnice,pos\nmeh,\n")
    msg = user_error("empty label",
                     call=lambda: splits_for(tmp_path, train=str(tmp_path / "parts")))
    assert "b.csv" in msg, msg


def test_text_that_is_not_text(tmp_path):
    write(tmp_path / "train.jsonl", '{"text": 3, "label": "pos"}\n{"text": 7, "label": "neg"}\n')
    user_error("data.train", "row 1", "'text'", "not text",
               call=lambda: splits_for(tmp_path, train=str(tmp_path / "train.jsonl")))


def test_single_class(tmp_path):
    write(tmp_path / "train.csv", "text,label\ngood,pos\nfine,pos\ngreat,pos\n")
    user_error("data.train", "single class", "pos", "at least two",
               call=lambda: splits_for(tmp_path, train=str(tmp_path / "train.csv")))


@pytest.mark.parametrize("role", ["validation", "test"])
def test_labels_unseen_in_train(tmp_path, role):
    write(tmp_path / "train.csv", GOOD)
    write(tmp_path / "other.csv", "text,label\nok,pos\nso so,neutral\n")
    user_error(f"data.{role}", "not seen in train", "'neutral'", "'neg'", "'pos'",
               call=lambda: splits_for(tmp_path, train=str(tmp_path / "train.csv"),
                                       **{role: str(tmp_path / "other.csv")}))


def test_too_few_rows_to_carve_validation(tmp_path):
    write(tmp_path / "train.csv", "text,label\ngood,pos\n")
    msg = user_error("data.train", call=lambda: splits_for(tmp_path, train=str(tmp_path / "train.csv")))
    assert "single class" in msg or "too few" in msg


# --------------------------------------------------------------------------- good files of every shape


def test_csv_with_quoted_commas_crlf_and_bom(tmp_path):
    text = ('\ufefftext,label\r\n"good, really good",pos\r\n"bad ""awful"" film",neg\r\n'
            '"two\r\nlines",pos\r\nplain,neg\r\n')
    path = write(tmp_path / "excel.csv", text)
    ds = read_files(str(path), "data.train")
    assert ds.column_names == ["text", "label"]  # no BOM glued to the first column name
    assert ds["text"][:2] == ["good, really good", 'bad "awful" film']
    assert ds["label"] == ["pos", "neg", "pos", "neg"]  # no stray \r in labels
    splits = splits_for(tmp_path, train=str(path), validation_fraction=0)
    assert splits.labels == ["neg", "pos"]


def test_tsv(tmp_path):
    path = write(tmp_path / "rows.tsv", "text\tlabel\ngood, fine\tpos\nbad\tneg\n")
    ds = read_files(str(path), "data.train")
    assert ds["text"] == ["good, fine", "bad"]


def test_csv_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path / "rows.csv", "text,label\n\ngood,pos\n\nbad,neg\n\n")
    assert len(read_files(str(path), "data.train")) == 2


RECORDS = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"},
           {"text": "fine", "label": "pos"}]


@pytest.mark.parametrize("name, content", [
    ("records.json", json.dumps(RECORDS)),
    ("wrapped.json", json.dumps({"data": RECORDS})),
    ("columns.json", json.dumps({"text": [r["text"] for r in RECORDS],
                                 "label": [r["label"] for r in RECORDS]})),
    ("lines.json", "\n".join(json.dumps(r) for r in RECORDS)),  # JSON Lines named .json
    ("rows.jsonl", "\n".join(json.dumps(r) for r in RECORDS) + "\n"),
    ("rows.ndjson", "\n".join(json.dumps(r) for r in RECORDS) + "\n"),
])
def test_json_shapes(tmp_path, name, content):
    ds = read_files(str(write(tmp_path / name, content)), "data.train")
    assert ds["text"] == ["good", "bad", "fine"]
    assert ds["label"] == ["pos", "neg", "pos"]


def test_parquet(tmp_path):
    import datasets

    path = tmp_path / "rows.parquet"
    datasets.Dataset.from_list(RECORDS).to_parquet(str(path))
    ds = read_files(str(path), "data.train")
    assert ds["text"] == ["good", "bad", "fine"]


def test_declared_format_for_odd_extension(tmp_path):
    path = write(tmp_path / "rows.txt", GOOD)
    assert len(read_files(str(path), "data.train", "csv")) == 4


def test_folder_and_glob_of_files(tmp_path):
    write(tmp_path / "parts" / "a.csv", csv_rows(3, 2, start=0))
    write(tmp_path / "parts" / "b.csv", csv_rows(2, 3, start=100))
    write(tmp_path / "parts" / "README.md", "not data")
    folder = read_files(str(tmp_path / "parts"), "data.train")
    glob_ = read_files(str(tmp_path / "parts" / "*.csv"), "data.train")
    assert len(folder) == len(glob_) == 10
    assert sorted(folder["id"]) == sorted(glob_["id"])
    assert {"0", "100"} <= set(folder["id"])


def test_folder_of_mixed_formats(tmp_path):
    write(tmp_path / "mixed" / "a.csv", GOOD)
    write(tmp_path / "mixed" / "b.jsonl", "\n".join(json.dumps(r) for r in RECORDS))
    ds = read_files(str(tmp_path / "mixed"), "data.train")
    assert len(ds) == 7


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "float-jsonl"])
def test_integer_labels_map_to_names(tmp_path, fmt):
    rows = [("good", 1), ("bad", 0), ("fine", 1), ("grim", 0)]
    if fmt == "csv":
        path = write(tmp_path / "train.csv", "text,label\n" + "".join(f"{t},{l}\n" for t, l in rows))
    elif fmt == "parquet":
        import datasets

        path = tmp_path / "train.parquet"
        datasets.Dataset.from_dict({"text": [t for t, _ in rows],
                                    "label": [l for _, l in rows]}).to_parquet(str(path))
    else:
        path = write(tmp_path / "train.jsonl", "".join(
            json.dumps({"text": t, "label": float(l) if fmt.startswith("float") else l}) + "\n"
            for t, l in rows))
    splits = splits_for(tmp_path, train=str(path), validation_fraction=0)
    assert splits.labels == ["0", "1"]


def test_integer_labels_sort_numerically_and_validate_across_formats(tmp_path):
    write(tmp_path / "train.jsonl", "".join(json.dumps({"text": f"t{i}", "label": l}) + "\n"
                                            for i, l in enumerate([2, 10, 2, 10, 1])))
    write(tmp_path / "dev.csv", "text,label\na,10\nb,1\n")  # strings "10"/"1" match ints 10/1
    splits = splits_for(tmp_path, train=str(tmp_path / "train.jsonl"),
                        validation=str(tmp_path / "dev.csv"))
    assert splits.labels == ["1", "2", "10"]


# --------------------------------------------------------------------------- carving and budgets


def ids(ds) -> list[str]:
    return sorted(ds["id"], key=int)


def test_validation_is_carved_seeded_and_stratified(tmp_path):
    path = write(tmp_path / "train.csv", csv_rows(30, 10))
    a = splits_for(tmp_path, seed=0, train=str(path), validation_fraction=0.2)
    b = splits_for(tmp_path, seed=0, train=str(path), validation_fraction=0.2)
    c = splits_for(tmp_path, seed=1, train=str(path), validation_fraction=0.2)
    assert Counter(a.validation["label"]) == {"pos": 6, "neg": 2}  # 20% of each label
    assert Counter(a.train["label"]) == {"pos": 24, "neg": 8}
    assert ids(a.validation) == ids(b.validation) and ids(a.train) == ids(b.train)
    assert ids(a.validation) != ids(c.validation)
    assert not set(a.train["id"]) & set(a.validation["id"])
    assert sorted(ids(a.train) + ids(a.validation), key=int) == [str(i) for i in range(40)]
    assert a.labels == ["neg", "pos"]


def test_validation_fraction_changes_the_carve(tmp_path):
    path = write(tmp_path / "train.csv", csv_rows(20, 20))
    splits = splits_for(tmp_path, train=str(path), validation_fraction=0.5)
    assert Counter(splits.validation["label"]) == {"pos": 10, "neg": 10}
    assert len(splits.train) == 20


def test_rare_label_keeps_one_example_in_validation(tmp_path):
    path = write(tmp_path / "train.csv", csv_rows(40, 2))
    splits = splits_for(tmp_path, train=str(path), validation_fraction=0.1)
    assert Counter(splits.validation["label"]) == {"pos": 4, "neg": 1}


def test_no_carving_when_fraction_is_zero_or_validation_given(tmp_path):
    path = write(tmp_path / "train.csv", csv_rows(10, 10))
    dev = write(tmp_path / "dev.csv", csv_rows(2, 2, start=100))
    assert splits_for(tmp_path, train=str(path), validation_fraction=0).validation is None
    given = splits_for(tmp_path, train=str(path), validation=str(dev))
    assert len(given.train) == 20 and ids(given.validation) == ["100", "101", "102", "103"]


def test_samples_per_label_budget(tmp_path):
    path = write(tmp_path / "train.csv", csv_rows(30, 20))
    dev = write(tmp_path / "dev.csv", csv_rows(2, 2, start=100))
    a = splits_for(tmp_path, seed=0, train=str(path), validation=str(dev), samples_per_label=5)
    b = splits_for(tmp_path, seed=0, train=str(path), validation=str(dev), samples_per_label=5)
    c = splits_for(tmp_path, seed=3, train=str(path), validation=str(dev), samples_per_label=5)
    assert Counter(a.train["label"]) == {"pos": 5, "neg": 5}
    assert ids(a.train) == ids(b.train)
    assert ids(a.train) != ids(c.train)
    assert len(a.validation) == 4  # budgets never touch validation


def test_samples_per_label_after_carving_keeps_validation_out(tmp_path):
    path = write(tmp_path / "train.csv", csv_rows(20, 20))
    splits = splits_for(tmp_path, train=str(path), validation_fraction=0.25, samples_per_label=4)
    assert Counter(splits.train["label"]) == {"pos": 4, "neg": 4}
    assert Counter(splits.validation["label"]) == {"pos": 5, "neg": 5}
    assert not set(splits.train["id"]) & set(splits.validation["id"])


def test_samples_per_label_larger_than_a_label(tmp_path):
    path = write(tmp_path / "train.csv", csv_rows(10, 3))
    splits = splits_for(tmp_path, train=str(path), validation_fraction=0, samples_per_label=5)
    assert Counter(splits.train["label"]) == {"pos": 5, "neg": 3}


def test_max_train_samples(tmp_path):
    path = write(tmp_path / "train.csv", csv_rows(25, 25))
    a = splits_for(tmp_path, seed=0, train=str(path), validation_fraction=0, max_train_samples=10)
    b = splits_for(tmp_path, seed=0, train=str(path), validation_fraction=0, max_train_samples=10)
    c = splits_for(tmp_path, seed=5, train=str(path), validation_fraction=0, max_train_samples=10)
    assert len(a.train) == 10
    assert ids(a.train) == ids(b.train) and ids(a.train) != ids(c.train)
    every = splits_for(tmp_path, train=str(path), validation_fraction=0, max_train_samples=500)
    assert len(every.train) == 50


def test_both_budgets(tmp_path):
    path = write(tmp_path / "train.csv", csv_rows(25, 25))
    splits = splits_for(tmp_path, train=str(path), validation_fraction=0,
                        samples_per_label=8, max_train_samples=10)
    assert len(splits.train) == 10


# --------------------------------------------------------------------------- the CLI: one line, nothing written


def cli_recipe(tmp_path: Path, model_dir: Path, **data) -> Path:
    recipe = {"name": "bad-data", "model": {"name_or_path": str(model_dir)},
              "data": data, "train": {"num_train_epochs": 1, "save_strategy": "no"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


BAD_DATA = {
    "missing": (None, ["data.train", "missing.csv", "does not exist"]),
    "empty": (b"", ["data.train", "empty.csv", "is empty"]),
    "latin1": ("text,label\ncaf\xe9,pos\n".encode("latin-1"), ["latin1.csv", "not UTF-8", "line 2"]),
    "binary": (b"\x00\x01\x02\x03" * 64, ["binary.csv", "binary"]),
    "ragged": (b"text,label\ngood,pos\nbad,film,neg\n", ["ragged.csv", "line 3", "expected 2 fields"]),
    "nolabel": (b"text,y\ngood,pos\nbad,neg\n", ["'label'", "task.label_column", "text, y"]),
    "oneclass": (b"text,label\ngood,pos\nfine,pos\n", ["single class", "pos"]),
    "emptylabel": (b"text,label\ngood,pos\nbad,\nfine,neg\n", ["empty label", "row 2"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_cli_bad_data_is_one_line_and_writes_nothing(tmp_path, work, capsys, tiny_model_dir, case):
    content, needles = BAD_DATA[case]
    name = "missing" if content is None else case
    train = tmp_path / f"{name}.csv"
    if content is not None:
        train.write_bytes(content)
    recipe = cli_recipe(tmp_path, tiny_model_dir, train=str(train))
    before = tree(tmp_path)
    rc, out, err = run_cli(capsys, "train", recipe)
    assert_cli_error(rc, err, *needles)
    assert tree(tmp_path) == before  # no runs/, no staging directory, inputs untouched


def test_cli_unseen_validation_label_with_explicit_output_dir(tmp_path, work, capsys, tiny_model_dir):
    write(tmp_path / "train.csv", GOOD)
    write(tmp_path / "dev.csv", "text,label\nok,pos\nhmm,neutral\n")
    recipe = cli_recipe(tmp_path, tiny_model_dir, train=str(tmp_path / "train.csv"),
                        validation=str(tmp_path / "dev.csv"))
    before = tree(tmp_path)
    rc, _, err = run_cli(capsys, "train", recipe, "--output-dir", tmp_path / "out" / "run")
    assert_cli_error(rc, err, "data.validation", "'neutral'", "not seen in train")
    assert tree(tmp_path) == before


def test_cli_unreadable_data(tmp_path, work, capsys, tiny_model_dir, monkeypatch):
    path = write(tmp_path / "locked.csv", GOOD)
    real = pathlib.Path.read_bytes

    def deny(self):
        if self.name == "locked.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", deny)
    rc, _, err = run_cli(capsys, "train", cli_recipe(tmp_path, tiny_model_dir, train=str(path)))
    assert_cli_error(rc, err, "data.train", "locked.csv", "Permission denied")
    assert not (work / "runs").exists()


def test_cli_integer_labels_train_and_name_classes(tmp_path, work, capsys, tiny_model_dir):
    """End to end: 0/1 labels in JSONL give a model whose classes are named "0" and "1"."""
    from conftest import toy_rows

    def jsonl(path, rows):
        write(path, "".join(json.dumps({"text": t, "label": int(l == "positive")}) + "\n"
                            for t, l in rows))

    jsonl(tmp_path / "train.jsonl", toy_rows(32, 0))
    jsonl(tmp_path / "dev.jsonl", toy_rows(8, 1))
    recipe = cli_recipe(tmp_path, tiny_model_dir, train=str(tmp_path / "train.jsonl"),
                        validation=str(tmp_path / "dev.jsonl"))
    rc, out, err = run_cli(capsys, "train", recipe, "--output-dir", tmp_path / "run",
                           "train.per_device_train_batch_size=16", "train.disable_tqdm=true")
    assert rc == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["labels"] == ["0", "1"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"}
    assert not (work / "runs").exists()
