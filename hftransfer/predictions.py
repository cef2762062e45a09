"""Prediction files: the inputs of ``predict --file`` (one a line, or a column of a data file)
and the predictions ``predict --output`` writes (JSON Lines or CSV, one row per input).

    inputs = read_inputs_file("reviews.csv", ["text"])
    write_predictions("predictions.jsonl", inputs, results)
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .data import FORMATS, read_files, read_text
from .errors import HFTransferError

LINE_FORMATS = ("", ".txt")
"""Extensions of files that hold one input a line (no extension: a plain list, as before)."""
OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def parse_top_k(value: Any, where: str = "--top-k") -> int | None:
    """How many label scores a prediction lists: None (the top label alone), a count, or 0 for
    every label (``0`` or ``"all"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return 0
        if not text.isdigit():
            raise HFTransferError(f"{where} must be a whole number of labels, or 0 or 'all' for every "
                                  f"label; got {value!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HFTransferError(f"{where} must be a whole number of labels, or 0 or 'all' for every label; "
                              f"got {value!r}")
    return value


def check_batch_size(value: Any, where: str = "--batch-size") -> int:
    """A batch size: a positive whole number."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HFTransferError(f"{where} must be a positive whole number, got {value!r}")
    return value


def output_format(path: str | os.PathLike, where: str = "--output") -> str:
    """``jsonl``, ``csv`` or ``tsv``, from the output file's extension."""
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise HFTransferError(f"{where}: cannot tell how to write {str(path)!r} from its extension; "
                              "name it .jsonl (JSON Lines) or .csv")
    return fmt


def check_inputs_file(path: str | os.PathLike | None, where: str = "--file") -> None:
    """What can be checked of ``--file`` before a model loads: it exists, its format is known."""
    if path is None or str(path) == "-":
        return
    suffix = Path(str(path)).suffix.lower()
    if suffix not in LINE_FORMATS and suffix not in FORMATS:
        raise HFTransferError(f"{where}: cannot tell the format of {str(path)!r} from its extension; use .txt "
                              f"(one input a line) or {'/'.join(sorted(set(FORMATS)))}")
    if not Path(os.path.expanduser(str(path))).is_file():
        raise HFTransferError(f"{where}: {str(path)!r} does not exist; give a text or data file")


def check_request(inputs: list[Any], file: str | os.PathLike | None, column: str | None) -> None:
    """What can be checked of predict's inputs before a model loads: some are given, ``--column``
    comes with ``--file``, and the file exists in a known format."""
    if column is not None and file is None:
        raise HFTransferError("--column names the input column of --file; give --file PATH too")
    if not inputs and file is None:
        raise HFTransferError("predict: give inputs (texts, or image/audio file paths) as arguments "
                              "or --file PATH (one per line or a data file; - reads stdin)")
    check_inputs_file(file)


def prediction_inputs(task: Any, inputs: list[Any] | None = None, file: str | os.PathLike | None = None,
                      column: str | None = None) -> list[Any]:
    """What ``predict`` reads: ``inputs``, then ``file``'s (in ``task``'s input columns, or
    ``column``); a pair task's ``"text<TAB>pair"`` strings become ``(text, pair)``."""
    check_request(list(inputs or []), file, column)
    out = list(inputs or []) + (read_inputs_file(file, task.predict_columns(column)) if file is not None else [])
    if not out:
        raise HFTransferError(f"--file: {str(file)!r} holds no inputs")
    if getattr(task.options, "text_pair_column", None):
        for i, item in enumerate(out):
            if isinstance(item, str):
                if "\t" not in item:
                    raise HFTransferError(f"predict: input {i + 1}: this run classifies sentence pairs; give "
                                          "each input as 'text<TAB>pair', or a data file with both columns")
                out[i] = tuple(item.split("\t", 1))
    return out


def read_inputs_file(path: str | os.PathLike, columns: list[str], where: str = "--file") -> list[Any]:
    """The inputs in a file: one per non-blank line of a ``.txt`` file (or one without an
    extension, or ``-`` for stdin), else the values of ``columns`` of a csv/tsv/jsonl/json/parquet
    file (a tuple per row when there are two columns: sentence pairs). A cell holding a list of
    words (token-classification data) is one input, its words joined by spaces."""
    path = str(path)
    check_inputs_file(path, where)
    if path == "-" or Path(path).suffix.lower() in LINE_FORMATS:
        text = sys.stdin.read() if path == "-" else read_text(Path(os.path.expanduser(path)), where)
        return [line for line in text.splitlines() if line.strip()]
    ds = read_files(os.path.expanduser(path), where)
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise HFTransferError(f"{where}: {path!r} has no column {missing[0]!r}; its columns are "
                              f"{', '.join(ds.column_names)}; name the input column with --column")
    values = [[_input_value(v, c, row, path, where) for row, v in enumerate(ds[c], start=1)] for c in columns]
    return list(values[0]) if len(columns) == 1 else [tuple(row) for row in zip(*values)]


def _input_value(value: Any, column: str, row: int, path: str, where: str) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return " ".join(value)
    if not isinstance(value, str) or not value.strip():
        shown = "an empty cell" if value is None or value == "" else f"{str(value)[:40]!r}, which is not text"
        raise HFTransferError(f"{where}: {path!r} row {row} has {shown} in column {column!r}; fill it in "
                              "or remove the row")
    return value


def prediction_rows(inputs: list[Any], results: list[Any]) -> list[dict[str, Any]]:
    """One record per input: ``input`` (``input_pair`` for pairs) and its prediction's fields
    (``entities`` for token classification, whose prediction is a list)."""
    rows = []
    for given, result in zip(inputs, results):
        row: dict[str, Any] = {"input": given[0], "input_pair": given[1]} if isinstance(given, tuple) \
            else {"input": str(given)}
        row.update(result if isinstance(result, dict) else {"entities": result})
        rows.append(row)
    return rows


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A record as CSV cells: ``scores`` (--top-k) as ``label_1, score_1, ...``; any other list
    or mapping as JSON text."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "scores" and isinstance(value, list):
            for rank, item in enumerate(value, start=1):
                out[f"label_{rank}"], out[f"score_{rank}"] = item["label"], item["score"]
        elif isinstance(value, (list, dict)):
            out[key] = json.dumps(value, ensure_ascii=False)
        else:
            out[key] = value
    return out


def write_predictions(path: str | os.PathLike, inputs: list[Any], results: list[Any],
                      where: str = "--output") -> Path:
    """Write one row per input with its prediction, as JSON Lines or CSV (by the extension);
    the file appears whole or not at all."""
    fmt = output_format(path, where)
    target = Path(os.path.expanduser(str(path)))
    rows = prediction_rows(inputs, results)
    if fmt == "jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        flat = [_flat(row) for row in rows]
        header: list[str] = []
        for row in flat:
            header += [key for key in row if key not in header]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=header, delimiter="," if fmt == "csv" else "\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
        text = buffer.getvalue()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", newline="", dir=target.parent,
                                         prefix=f".{target.name}.", delete=False) as tmp:
            tmp.write(text)
        os.replace(tmp.name, target)
    except OSError as exc:
        raise HFTransferError(f"{where}: cannot write {str(target)!r}: {exc.strerror or exc}") from None
    return target
