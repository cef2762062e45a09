"""Tasks: what is predicted. A task knows its Auto model class, preprocessing, collator, metrics,
head, Hub pipeline tag and PEFT task type, so every strategy works with it unchanged.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .errors import HFTransferError
from .registry import register_task

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger("hftransfer")


class Task:
    """Base class of a task type. Subclasses register with ``@register_task(NAME)``."""

    name: ClassVar[str]
    auto_class_name: ClassVar[str]
    pipeline_tag: ClassVar[str]
    peft_task_type: ClassVar[str]
    head_prefixes: ClassVar[tuple[str, ...]] = ("classifier", "score", "pre_classifier")
    """Module names of the task head (newly initialised, always trained)."""

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any):
        self.options = options

    @property
    def auto_class(self):
        import transformers

        return getattr(transformers, self.auto_class_name)

    # --- data -------------------------------------------------------------------------------
    def check_split(self, ds: "datasets.Dataset", where: str) -> "datasets.Dataset":
        """Check columns and values; return the split, possibly normalised."""
        return ds

    def label_names(self, train: "datasets.Dataset", where: str) -> list[str]:
        raise NotImplementedError

    def check_labels(self, ds: "datasets.Dataset", labels: list[str], where: str) -> None:
        pass

    def stratify_keys(self, ds: "datasets.Dataset") -> list[Any] | None:
        """Per-row keys for stratified splits and label budgets; None if not applicable."""
        return None

    def preprocess(self, ds: "datasets.Dataset", processor: Any, labels: list[str]) -> "datasets.Dataset":
        """Model inputs + ``labels`` + a ``length`` column (for length-grouped batching)."""
        raise NotImplementedError

    def collator(self, processor: Any):
        raise NotImplementedError

    # --- evaluation -------------------------------------------------------------------------
    def compute_metrics(self, labels: list[str]):
        """A ``compute_metrics`` function for the Trainer."""
        raise NotImplementedError

    def predict(self, model: Any, processor: Any, inputs: list[Any], batch_size: int = 32) -> list[dict]:
        raise NotImplementedError

    # --- models -----------------------------------------------------------------------------
    def model_kwargs(self, labels: list[str]) -> dict[str, Any]:
        """Config overrides that size the head for the target labels."""
        return {
            "num_labels": len(labels),
            "id2label": {i: name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)},
        }


def _label_str(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _sort_key(name: str):
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


@register_task("text-classification")
class TextClassification(Task):
    """Classify a sentence, or a pair of sentences (``text_pair_column``), into labels."""

    auto_class_name = "AutoModelForSequenceClassification"
    pipeline_tag = "text-classification"
    peft_task_type = "SEQ_CLS"

    @dataclass
    class Options:
        text_column: str = "text"
        text_pair_column: str | None = None
        label_column: str = "label"
        max_length: int | None = None
        """Truncate inputs to this many tokens (default: the model's limit, at most 512)."""

        def __post_init__(self) -> None:
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
        for key, column in self._columns(labelled):
            if column not in ds.column_names:
                raise HFTransferError(
                    f"{where}: column {column!r} (task.{key}) not found; columns are "
                    f"{', '.join(ds.column_names)}; set task.{key} to one of them"
                )
        if len(ds) == 0:
            raise HFTransferError(f"{where}: no rows")
        for key, column in self._columns(labelled):
            values = ds[column]
            for row, value in enumerate(values, start=1):
                if value is None or (key == "label_column" and _label_str(value) == ""):
                    what = "label" if key == "label_column" else "text"
                    raise HFTransferError(
                        f"{where}: row {row} has an empty {what} in column {column!r}; "
                        "fill it in or remove the row"
                    )
                if key != "label_column" and not isinstance(value, str):
                    raise HFTransferError(
                        f"{where}: row {row} of column {column!r} is not text ({value!r})"
                    )
        return ds

    def _raw_labels(self, ds) -> list[str]:
        feature = ds.features.get(self.options.label_column)
        values = ds[self.options.label_column]
        if hasattr(feature, "int2str"):  # a ClassLabel: use its names
            return [feature.int2str(v) for v in values]
        return [_label_str(v) for v in values]

    def label_names(self, train, where):
        feature = train.features.get(self.options.label_column)
        if hasattr(feature, "names"):
            names = list(feature.names)
        else:
            names = sorted(set(self._raw_labels(train)), key=_sort_key)
        present = set(self._raw_labels(train))
        if len(present) < 2:
            raise HFTransferError(
                f"{where}: column {self.options.label_column!r} has a single class "
                f"({', '.join(sorted(present))}); classification needs at least two"
            )
        return names

    def check_labels(self, ds, labels, where):
        unseen = sorted(set(self._raw_labels(ds)) - set(labels))
        if unseen:
            raise HFTransferError(
                f"{where}: labels not seen in train: {', '.join(map(repr, unseen[:5]))}; "
                f"train has {', '.join(map(repr, labels))}"
            )

    def stratify_keys(self, ds):
        return self._raw_labels(ds)

    def _max_length(self, tokenizer) -> int:
        if self.options.max_length:
            return self.options.max_length
        limit = getattr(tokenizer, "model_max_length", 512) or 512
        return int(min(limit, 512))

    def _encode(self, tokenizer, texts, pairs=None):
        return tokenizer(texts, pairs, truncation=True, max_length=self._max_length(tokenizer))

    def preprocess(self, ds, processor, labels):
        label2id = {name: i for i, name in enumerate(labels)}
        o = self.options
        labelled = o.label_column in ds.column_names

        def encode(batch):
            enc = self._encode(
                processor, batch[o.text_column], batch[o.text_pair_column] if o.text_pair_column else None
            )
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        raw_labels = self._raw_labels(ds) if labelled else None
        # An explicit fingerprint: datasets would otherwise hash the tokenizer (~1 s) to name
        # a cache entry that in-memory datasets never use.
        fingerprint = hashlib.sha256(f"{ds._fingerprint}|{processor.name_or_path}|{self.options}".encode()).hexdigest()[:16]
        out = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="Tokenizing",
                     new_fingerprint=fingerprint)
        if raw_labels is not None:
            out = out.add_column("labels", [label2id[v] for v in raw_labels])
        return out

    def collator(self, processor):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(processor)

    def compute_metrics(self, labels):
        from sklearn.metrics import accuracy_score, f1_score

        def compute(eval_pred):
            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            preds = np.asarray(logits).argmax(-1)
            refs = np.asarray(eval_pred.label_ids)
            average = "binary" if len(labels) == 2 else "macro"
            return {
                "accuracy": float(accuracy_score(refs, preds)),
                "f1": float(f1_score(refs, preds, average=average, zero_division=0)),
            }

        return compute

    def predict(self, model, processor, inputs, batch_size=32):
        """Inputs are strings, or (text, pair) tuples for pair tasks. Returns
        ``[{"label": name, "score": p}]`` in input order."""
        import torch

        id2label = model.config.id2label
        device = next(model.parameters()).device
        model.eval()
        order = sorted(range(len(inputs)), key=lambda i: len(str(inputs[i])))  # less padding
        results: list[dict | None] = [None] * len(inputs)
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
                logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
            probs = logits.float().softmax(-1).cpu()
            for i, p in zip(idx, probs):
                best = int(p.argmax())
                results[i] = {"label": id2label.get(best, str(best)), "score": float(p[best])}
        return results  # type: ignore[return-value]
