"""Loading examples: local csv / json / jsonl / parquet (file, glob or folder) or a Hub dataset;
seeded stratified validation carving; label budgets.

Every check that can fail on user data fails here with one line naming the file (and row).
"""
from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import hubfiles
from .errors import HFTransferError

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger("hftransfer")

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet"}
TASK_FORMATS = ("conll",)
"""Formats that one task reads itself (token-classification: CoNLL column files)."""


@dataclass
class Splits:
    """The prepared raw splits of a run (before tokenisation) and the label names."""

    train: "datasets.Dataset"
    validation: "datasets.Dataset | None"
    test: "datasets.Dataset | None"
    labels: list[str]
    unlabeled: "datasets.Dataset | None" = None
    """Inputs without labels (``data.unlabeled``): a transfer set a teacher labels (distill), or
    the target domain's inputs (dann)."""
    unlabeled_dropped: int = 0
    """Inputs of ``data.unlabeled`` left out because they are also validation or test inputs."""

    def missing_validation(self) -> list[str]:
        """Recipe sections that have no validation split (model selection needs one)."""
        return ["data"] if self.validation is None else []

    def counts(self) -> dict[str, int]:
        counts = {role: len(ds) if ds is not None else 0
                  for role, ds in (("train", self.train), ("validation", self.validation), ("test", self.test))}
        if self.unlabeled is not None:
            counts["unlabeled"] = len(self.unlabeled)
        if self.unlabeled_dropped:
            counts["unlabeled_dropped"] = self.unlabeled_dropped
        return counts


def resolve_files(spec: str, where: str, extensions: tuple[str, ...] | None = None) -> list[Path]:
    """A file, a glob or a folder of files -> the sorted list of files it names."""
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            shown = "" if os.path.isabs(os.path.expanduser(spec)) else f" (relative to {os.getcwd()})"
            raise HFTransferError(f"{where}: no files match {spec!r}{shown}")
        return files
    path = Path(os.path.expanduser(spec))
    try:
        exists = path.exists()
    except OSError as exc:  # a name too long, a file used as a folder...
        raise HFTransferError(f"{where}: {spec[:80]!r}: {exc.strerror}") from None
    if not exists:
        # Relative paths resolve against the current directory (as on any command line): say
        # which one, since a recipe run from elsewhere is the usual cause.
        shown = "" if path.is_absolute() else f" (relative to the current directory {os.getcwd()})"
        raise HFTransferError(f"{where}: {spec!r} does not exist{shown}")
    if path.is_dir():
        exts = extensions or tuple(FORMATS)
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise HFTransferError(
                f"{where}: folder {spec!r} holds no data files ({', '.join(exts)})"
            )
        return files
    if not path.is_file():  # a FIFO or a device (/dev/zero) would be read forever
        raise HFTransferError(f"{where}: {spec!r} is not a regular file; give a data file, a glob or a folder")
    return [path]


def file_format(path: Path, declared: str | None, where: str) -> str:
    if declared:
        fmt = declared.lower()
        if fmt not in set(FORMATS.values()):
            raise HFTransferError(
                f"data.format {declared!r} is not supported; use one of "
                f"{', '.join(sorted(set(FORMATS.values())))}"
            )
        return fmt
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise HFTransferError(
            f"{where}: cannot tell the format of {str(path)!r} from its extension; "
            f"name it .csv/.tsv/.json/.jsonl/.parquet or set data.format"
        )
    return fmt


def read_text(path: Path, where: str) -> str:
    """The file's text, refusing what is unreadable, empty, binary or not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HFTransferError(f"{where}: cannot read {str(path)!r}: {exc.strerror}") from None
    if not raw.strip():
        raise HFTransferError(f"{where}: {str(path)!r} is empty")
    if b"\x00" in raw[:65536]:
        raise HFTransferError(f"{where}: {str(path)!r} is a binary file, not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise HFTransferError(
            f"{where}: {str(path)!r} is not UTF-8 (bad byte at line {line}); re-save it as UTF-8"
        ) from None


def _read_csv(path: Path, where: str, delimiter: str) -> list[dict[str, str]]:
    text = read_text(path, where)
    # strict: an unterminated quote is an error, not a field that swallows the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise HFTransferError(f"{where}: {str(path)!r} line 1: {exc}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise HFTransferError(f"{where}: {str(path)!r} has no header row")
    rows = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(header):
                raise HFTransferError(
                    f"{where}: {str(path)!r} line {reader.line_num}: expected {len(header)} "
                    f"fields ({', '.join(header)}), found {len(row)}; quote fields that contain "
                    f"{delimiter!r}"
                )
            rows.append(dict(zip(header, row)))
    except csv.Error as exc:
        raise HFTransferError(f"{where}: {str(path)!r} line {reader.line_num}: {exc}") from None
    return rows


def _read_jsonl(path: Path, where: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(read_text(path, where).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HFTransferError(
                f"{where}: {str(path)!r} line {number} is not valid JSON ({exc.msg})"
            ) from None
        if not isinstance(row, dict):
            raise HFTransferError(f"{where}: {str(path)!r} line {number} is not a JSON object")
        rows.append(row)
    return rows


def _read_json(path: Path, where: str) -> list[dict[str, Any]]:
    text = read_text(path, where)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # it is JSON Lines named .json
            return _read_jsonl(path, where)
        raise HFTransferError(
            f"{where}: {str(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]}
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise HFTransferError(f"{where}: {str(path)!r} has columns of different lengths")
        keys = list(data)
        return [dict(zip(keys, values)) for values in zip(*data.values())]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise HFTransferError(
            f"{where}: {str(path)!r} must hold a list of records (objects), or be JSON Lines"
        )
    return data


def _mixed_column(rows: list[dict[str, Any]]) -> str:
    """Name the first column whose values have different types, and where they change."""
    for column in rows[0]:
        kinds: dict[type, int] = {}
        for number, row in enumerate(rows, start=1):
            value = row.get(column)
            if value is not None:
                kinds.setdefault(type(value), number)
        if len(kinds) > 1:
            (first, _), (other, at) = sorted(kinds.items(), key=lambda kv: kv[1])[:2]
            return (f"column {column!r} holds {first.__name__} values and, from row {at}, "
                    f"{other.__name__} values")
    return "a column holds values of different types"


def replace_column(ds: "datasets.Dataset", column: str, values: list[Any]) -> "datasets.Dataset":
    """``ds`` with ``column``'s values replaced (also when it is the only column)."""
    import datasets

    rest = ds.remove_columns(column)
    if not rest.column_names:
        return datasets.Dataset.from_dict({column: values})
    return rest.add_column(column, values).select_columns(ds.column_names)


def read_files(spec: str, where: str, declared_format: str | None = None,
               check: Callable[["datasets.Dataset", str, Path], "datasets.Dataset"] | None = None,
               ) -> "datasets.Dataset":
    """Read a data entry (file, glob or folder) into one ``datasets.Dataset``.

    ``check(dataset, where, path)`` runs on each file before they are joined, so that a bad row
    is reported with its own file and row number (and relative paths in it can be resolved)."""
    import datasets

    parts = []
    paths = resolve_files(spec, where)
    for path in paths:
        fmt = file_format(path, declared_format, where)
        if fmt == "parquet":
            try:
                parts.append(datasets.Dataset.from_parquet(str(path)))
            except Exception as exc:  # pyarrow raises many types for a corrupt file
                raise HFTransferError(
                    f"{where}: {str(path)!r} is not a readable parquet file ({type(exc).__name__})"
                ) from None
            continue
        if fmt in ("csv", "tsv"):
            rows = _read_csv(path, where, "," if fmt == "csv" else "\t")
        elif fmt == "jsonl":
            rows = _read_jsonl(path, where)
        else:
            rows = _read_json(path, where)
        if not rows:
            raise HFTransferError(f"{where}: {str(path)!r} holds no rows")
        try:
            parts.append(datasets.Dataset.from_list(rows))
        except Exception:  # pyarrow cannot type a column whose values mix types
            raise HFTransferError(
                f"{where}: {str(path)!r}: {_mixed_column(rows)}; make them one type"
            ) from None
    if check is not None:
        file_where = (lambda p: f"{where} ({str(p)!r})") if len(parts) > 1 else (lambda p: where)
        parts = [check(part, file_where(path), path) for part, path in zip(parts, paths)]
    if len(parts) == 1:
        return parts[0]
    for part, path in zip(parts[1:], paths[1:]):
        if sorted(part.column_names) != sorted(parts[0].column_names):
            raise HFTransferError(
                f"{where}: the files have different columns: {str(path)!r} has "
                f"{', '.join(part.column_names)}, {str(paths[0])!r} has "
                f"{', '.join(parts[0].column_names)}; give every file the same columns"
            )
    try:
        return datasets.concatenate_datasets(parts)
    except ValueError as exc:
        raise HFTransferError(f"{where}: the files of {spec!r} cannot be joined ({exc})") from None


def load_hub_splits(spec: Any, where: str = "data") -> dict[str, "datasets.Dataset"]:
    """The named splits of a Hub dataset (needs the network or the local HF cache)."""
    import datasets

    if hubfiles.REPO_ID.match(spec.dataset) and not Path(os.path.expanduser(spec.dataset)).exists():
        hubfiles.check_available(
            spec.dataset, f"{where}.dataset", cached=hub_dataset_cached(spec.dataset), flags=("HF_DATASETS_OFFLINE",),
            fix=f"load it once on a machine with a network (datasets keeps it), or point {where}.train at local files")
    try:
        loaded = datasets.load_dataset(spec.dataset, spec.dataset_config)
    except Exception as exc:
        raise HFTransferError(
            f"{where}.dataset: cannot load Hub dataset {spec.dataset!r}"
            f"{f' (config {spec.dataset_config!r})' if spec.dataset_config else ''}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; check the id and "
            f"the network, or point data.train at local files"
        ) from None
    out = {}
    for role, name in (("train", spec.train_split), ("validation", spec.validation_split),
                       ("test", spec.test_split)):
        if name is None:
            continue
        if name in loaded:
            out[role] = loaded[name]
        elif role == "train":
            raise HFTransferError(
                f"{where}.train_split: {spec.dataset!r} has no split {name!r}; it has "
                f"{', '.join(loaded)}"
            )
    return out


def hub_dataset_cached(name: str) -> bool:
    """Whether ``datasets`` may load the Hub dataset ``name`` without the Hub: it prepared it
    before (its own cache, which it falls back to), or its card is in the Hub client's cache."""
    import datasets
    from datasets.naming import camelcase_to_snakecase

    parts = name.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])  # how datasets names the folder
    prepared = Path(os.path.expanduser(str(datasets.config.HF_DATASETS_CACHE))) / "___".join(parts)
    if any(p.is_dir() for p in prepared.glob("*/*/*")):
        return True
    return hubfiles.in_cache(name, ("README.md",), repo_type="dataset")


def stratified_split(labels: list[Any] | None, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (keep, held_out): ``fraction`` of each label held out, at least one per label
    with two or more examples."""
    rng = np.random.default_rng(seed)
    n = len(labels) if labels is not None else 0
    groups: dict[Any, list[int]] = {}
    for i, label in enumerate(labels if labels is not None else []):
        groups.setdefault(label, []).append(i)
    keep, held = [], []
    for key in sorted(groups, key=str):
        idx = np.array(groups[key])
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        if k == 0 and len(idx) >= 2:
            k = 1
        held.extend(idx[:k].tolist())
        keep.extend(idx[k:].tolist())
    assert len(keep) + len(held) == n
    return sorted(keep), sorted(held)


def random_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)
    k = max(1, int(round(fraction * n)))
    return sorted(idx[k:].tolist()), sorted(idx[:k].tolist())


def label_budget(labels: list[Any], per_label: int, seed: int) -> list[int]:
    """Indices of ``per_label`` seeded examples of each label (all of a label that has fewer)."""
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    chosen = []
    for key in sorted(groups, key=str):
        idx = np.array(groups[key])
        rng.shuffle(idx)
        if len(idx) < per_label:
            logger.warning("label %r has only %d training examples (budget %d)", key, len(idx), per_label)
        chosen.extend(idx[:per_label].tolist())
    return sorted(chosen)


def load_splits(spec: Any, task: Any, seed: int, where: str = "data") -> Splits:
    """Read, check and split the data of a recipe (``spec``: its ``data:`` section) for ``task``
    (which reads, checks and labels the rows); ``where`` names the recipe section in messages
    (``tasks.ner.data`` in a multi-task recipe)."""
    if spec.dataset is not None:
        raw = load_hub_splits(spec, where)
    else:
        raw = {}
        for role in ("train", "validation", "test"):
            entry = getattr(spec, role)
            if entry is not None:
                raw[role] = task.read_split(entry, f"{where}.{role}", spec.format)
    if spec.dataset is not None:
        for role, ds in raw.items():
            raw[role] = task.check_split(ds, f"{where}.{role}")
    labels = task.label_names(raw["train"], f"{where}.train")
    for role in ("validation", "test"):
        if role in raw:
            task.check_labels(raw[role], labels, f"{where}.{role}")

    train = raw["train"]
    validation = raw.get("validation")
    if validation is None and spec.validation_fraction > 0:
        if len(train) < 2:
            raise HFTransferError(f"{where}.train has too few rows to carve a validation split")
        stratify = task.stratify_keys(train)
        if stratify is not None:
            keep, held = stratified_split(stratify, spec.validation_fraction, seed)
        else:
            keep, held = random_split(len(train), spec.validation_fraction, seed)
        logger.info("no validation split: holding out %d of %d training rows (seed %d)",
                    len(held), len(train), seed)
        train, validation = train.select(keep), train.select(held)

    if spec.samples_per_label is not None:
        keys = task.stratify_keys(train)
        if keys is None:
            raise HFTransferError(
                f"{where}.samples_per_label does not apply to task {task.name!r}; use {where}.max_train_samples"
            )
        train = train.select(label_budget(keys, spec.samples_per_label, seed))
    if spec.max_train_samples is not None and spec.max_train_samples < len(train):
        rng = np.random.default_rng(seed)
        train = train.select(sorted(rng.permutation(len(train))[: spec.max_train_samples].tolist()))
    if len(train) == 0:
        raise HFTransferError(f"{where}.train has no rows left after budgets")
    unlabeled, dropped = None, 0
    if getattr(spec, "unlabeled", None) is not None:
        unlabeled = task.read_inputs(spec.unlabeled, f"{where}.unlabeled", spec.format)
        unlabeled, dropped = drop_evaluation_inputs(unlabeled, [validation, raw.get("test")],
                                                    task.input_columns(), f"{where}.unlabeled")
    return Splits(train=train, validation=validation, test=raw.get("test"), labels=labels, unlabeled=unlabeled,
                  unlabeled_dropped=dropped)


def drop_evaluation_inputs(unlabeled: "datasets.Dataset", evaluation: list["datasets.Dataset | None"],
                           columns: list[str], where: str) -> tuple["datasets.Dataset", int]:
    """The transfer set without the inputs that are also validation or test inputs: a student
    that learned the teacher's outputs on them would be scored on inputs it was trained on
    (public corpora overlap: a third of SST-2's test sentences are MR training sentences)."""
    seen = {_input_key(row, columns) for ds in evaluation if ds is not None
            for row in ds.select_columns([c for c in columns if c in ds.column_names])}
    keep = [i for i, row in enumerate(unlabeled.select_columns(columns)) if _input_key(row, columns) not in seen]
    dropped = len(unlabeled) - len(keep)
    if dropped:
        logger.info("%s: left out %d of %d inputs that are also validation or test inputs", where, dropped,
                    len(unlabeled))
    if not keep:
        raise HFTransferError(f"{where}: every input is also a validation or test input; a transfer set "
                              "must hold other inputs")
    return (unlabeled.select(keep) if dropped else unlabeled), dropped


def _input_key(row: dict[str, Any], columns: list[str]) -> str:
    """What identifies an input: its text (stripped), or the content of its file or bytes."""
    digest = hashlib.sha256()
    for column in columns:
        value = row.get(column)
        if isinstance(value, dict):  # datasets.Image / Audio: bytes, or a path to read
            data = value.get("bytes")
            if data is None and value.get("path"):
                try:
                    data = Path(value["path"]).read_bytes()
                except OSError:
                    data = str(value["path"]).encode()
            digest.update(data or b"")
        elif isinstance(value, str):
            digest.update(value.strip().encode())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=str).encode())
        digest.update(b"|")
    return digest.hexdigest()
