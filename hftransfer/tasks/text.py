"""Sentence (and sentence-pair) classification."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import read_files, read_text
from ..errors import HFTransferError
from ..models import load_text_processor, position_limit
from ..registry import register_task
from .base import ClassificationTask, check_columns, max_text_length, text_problem

logger = logging.getLogger("hftransfer")

PREPROCESS_VERSION = 1
"""Part of :meth:`TextClassification.inputs_key`: raise it when ``preprocess`` changes what it makes."""


@register_task("text-classification")
class TextClassification(ClassificationTask):
    """Classify a sentence, or a pair of sentences (``text_pair_column``), into labels."""

    auto_class_name = "AutoModelForSequenceClassification"
    pipeline_tag = "text-classification"
    peft_task_type = "SEQ_CLS"
    features = "pooled"
    position_limit: int | None = None
    """How many tokens the model's position embeddings cover (set by load_processor)."""

    @dataclass
    class Options:
        text_column: str = "text"
        text_pair_column: str | None = None
        label_column: str = "label"
        max_length: int | None = None
        """Truncate inputs to this many tokens (default: the model's limit, at most 512)."""

        def __post_init__(self) -> None:
            check_columns(self, "text_column", "text_pair_column", "label_column")
            if self.max_length is not None and self.max_length < 2:
                raise HFTransferError(f"task.max_length must be at least 2, got {self.max_length}")

    def _columns(self, labelled: bool = True) -> list[tuple[str, str]]:
        o = self.options
        cols = [("text_column", o.text_column)]
        if o.text_pair_column:
            cols.append(("text_pair_column", o.text_pair_column))
        if labelled:
            cols.append(("label_column", o.label_column))
        return cols

    def check_split(self, ds, where, labelled: bool = True):
        for key, _ in self._columns(labelled):
            self.require_column(ds, key, where)
        if len(ds) == 0:
            raise HFTransferError(f"{where}: no rows")
        for key, column in self._columns(labelled):
            if key == "label_column":
                self.check_label_column(ds, where)
                continue
            for row, value in enumerate(ds[column][:], start=1):
                problem = text_problem(value)
                if problem:
                    raise HFTransferError(
                        f"{where}: row {row} has {problem} in column {column!r}; "
                        "fill it in or remove the row"
                    )
        return ds

    def read_inputs(self, entry, where, declared_format):
        """A data file with the text column(s), or a ``.txt`` file of one text a line."""
        import datasets

        path = Path(os.path.expanduser(entry))
        if declared_format is None and path.suffix.lower() == ".txt" and path.is_file():
            if self.options.text_pair_column:
                raise HFTransferError(f"{where}: a .txt file holds single texts, but the task reads pairs "
                                      f"({self.options.text_column}, {self.options.text_pair_column}); "
                                      "give a csv/json file with both columns")
            lines = [line for line in read_text(path, where).splitlines() if line.strip()]
            return self.check_split(datasets.Dataset.from_dict({self.options.text_column: lines}), where,
                                    labelled=False)
        return read_files(entry, where, declared_format,
                          check=lambda ds, w, file: self.check_split(ds, w, labelled=False))

    def _max_length(self, tokenizer) -> int:
        return max_text_length(self.options.max_length, tokenizer, self.position_limit)

    def _encode(self, tokenizer, texts, pairs=None):
        return tokenizer(texts, pairs, truncation=True, max_length=self._max_length(tokenizer))

    def load_processor(self, location, spec, config):
        tokenizer = load_text_processor(location, spec, config)
        self.position_limit = position_limit(config)
        self._max_length(tokenizer)  # a max_length beyond the model's positions fails here
        return tokenizer

    def preprocess(self, ds, processor, labels, training=False):
        o = self.options

        def encode(batch):
            enc = self._encode(
                processor, batch[o.text_column], batch[o.text_pair_column] if o.text_pair_column else None
            )
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        label_ids = self.label_ids(ds, labels)
        # An explicit fingerprint: datasets would otherwise hash the tokenizer (~1 s) to name
        # a cache entry that in-memory datasets never use.
        fingerprint = hashlib.sha256(f"{ds._fingerprint}|{processor.name_or_path}|{self.options}".encode()).hexdigest()[:16]
        out = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="Tokenizing",
                     new_fingerprint=fingerprint)
        if label_ids is not None:
            out = out.add_column("labels", label_ids)
        return out

    def inputs_key(self, ds, processor, labels):
        """The texts, the label ids, the options and the tokenizer in full (its serialised
        pipeline with the vocabulary, its class and settings, the library versions): all that
        :meth:`preprocess` reads. None for a tokenizer without that serialisation (a slow one)."""
        tokenizer = self._tokenizer_key(processor)
        if tokenizer is None:
            return None
        digest = hashlib.sha256(json.dumps({
            "preprocess": PREPROCESS_VERSION, "options": vars(self.options),
            "max_length": self._max_length(processor), "tokenizer": tokenizer,
        }, sort_keys=True).encode())
        for column in (self.options.text_column, self.options.text_pair_column):
            digest.update(f"|{column}|".encode())
            for text in ds[column][:] if column else ():
                digest.update(text.encode() + b"\0")
        ids = self.label_ids(ds, labels)
        digest.update(b"unlabelled" if ids is None else np.asarray(ids, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def _tokenizer_key(self, processor) -> str | None:
        """A hash of all that makes a tokenizer's output (see :meth:`inputs_key`), computed once
        per tokenizer (its serialisation takes ~30 ms)."""
        known = getattr(self, "_tokenizer_keys", None)
        if known is not None and known[0] is processor:
            return known[1]
        backend = getattr(processor, "backend_tokenizer", None)
        key = None
        if backend is not None:
            import tokenizers
            import transformers

            pipeline = json.loads(backend.to_str())
            for per_call in ("truncation", "padding"):  # left by the last call; preprocess sets its own
                pipeline.pop(per_call, None)
            key = hashlib.sha256(json.dumps({
                "class": type(processor).__qualname__, "settings": processor.init_kwargs,
                "returns": processor.model_input_names, "pipeline": pipeline,
                "versions": [transformers.__version__, tokenizers.__version__],
            }, sort_keys=True, default=str).encode()).hexdigest()
        self._tokenizer_keys = (processor, key)
        return key

    def collator(self, processor):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(processor)

    def logits(self, model, processor, inputs, batch_size=32):
        """Inputs are strings, or (text, pair) tuples for pair tasks. Returns the logits
        [inputs, labels] in input order."""
        import torch

        device = next(model.parameters()).device
        model.eval()
        order = sorted(range(len(inputs)), key=lambda i: len(str(inputs[i])))  # less padding
        rows: list[Any] = [None] * len(inputs)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = [inputs[i] for i in idx]
            if self.options.text_pair_column:
                texts, pairs = [b[0] for b in batch], [b[1] for b in batch]
            else:
                texts, pairs = batch, None
            enc = self._encode(processor, texts, pairs)
            enc = processor.pad(enc, return_tensors="pt")
            with torch.no_grad():
                logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu()
            for i, row in zip(idx, logits):
                rows[i] = row
        return torch.stack(rows) if rows else torch.zeros(0, model.config.num_labels)
