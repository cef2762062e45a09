"""Tasks: what is predicted. A task knows its Auto model class, how to read and preprocess its
data, its collator, metrics, head, Hub pipeline tag and PEFT task type, so every strategy works
with it unchanged. A new task is one class registered with ``@register_task(NAME)``.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from ..data import load_splits, read_files
from ..errors import HFTransferError
from ..recipe import ModelSpec

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger("hftransfer")


class Task:
    """Base class of a task type. Subclasses register with ``@register_task(NAME)``."""

    name: ClassVar[str]
    auto_class_name: ClassVar[str]
    pipeline_tag: ClassVar[str]
    peft_task_type: ClassVar[str | None] = None
    """PEFT's task type; None for tasks PEFT has none for (the head is then saved beside the adapter)."""
    head_prefixes: ClassVar[tuple[str, ...]] = ("classifier", "score", "pre_classifier")
    """Module names of the task head (newly initialised, always trained)."""
    training_defaults: ClassVar[dict[str, Any]] = {}
    """TrainingArguments this task needs (kit defaults < these < strategy defaults < recipe)."""
    input_kind: ClassVar[str] = "texts"
    """What ``predict`` takes, for messages: texts, image files, audio files."""
    primary_metric: ClassVar[str] = "accuracy"
    """The metric that sums the task up (a multi-task run's combined score averages them)."""
    features: ClassVar[str] = "output-layer"
    """Where feature-extraction reads this task's features: ``pooled`` (the encoder's first-token
    output, through the model's own classification head), ``output-layer`` (what the model's
    output layer receives) or ``per-token`` (that, for every labelled token)."""
    strategies: ClassVar[tuple[str, ...] | None] = None
    """The strategies that make sense for this task (None: every one); others fail at validation."""
    evaluates_before_training: ClassVar[bool] = False
    """Whether the engine also scores the model as built, before training, on the validation split
    (metrics.json ``before``): what training bought, on the same held-out inputs."""
    processor_auto_class: ClassVar[str] = "AutoTokenizer"
    pipeline_processor_arg: ClassVar[str] = "tokenizer"
    """How plain transformers loads the processor and hands it to ``pipeline()`` (model cards)."""

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
    def read_split(self, entry: str, where: str, declared_format: str | None) -> "datasets.Dataset":
        """Read one split's files (a file, glob or folder) and check them."""
        return read_files(entry, where, declared_format, check=lambda ds, w, path: self.check_split(ds, w))

    def load_splits(self, spec: Any, seed: int) -> Any:
        """The recipe's ``data:`` read, checked and split (``data.Splits``)."""
        return load_splits(spec, self, seed)

    def input_columns(self) -> list[str]:
        """The columns the model reads (every ``*_column`` option but the labels')."""
        return [value for key, value in vars(self.options).items()
                if key.endswith("_column") and key not in ("label_column", "tags_column") and value]

    def read_inputs(self, entry: str, where: str, declared_format: str | None) -> "datasets.Dataset":
        """Unlabelled inputs (``data.unlabeled``: a transfer set a teacher labels), checked as a
        split is but without labels."""
        raise HFTransferError(f"{where}: task {self.name} takes no unlabelled inputs; remove {where}")

    def encode_splits(self, splits: Any, processor: Any, augment: bool) -> tuple[Any, dict[str, Any]]:
        """(training set, {"validation": ..., "test": ...}) as model inputs; evaluation sets are
        sorted by length."""
        train = self.preprocess(splits.train, processor, splits.labels, training=augment)
        evals = {name: length_sorted(self.preprocess(ds, processor, splits.labels))
                 for name, ds in (("validation", splits.validation), ("test", splits.test))
                 if ds is not None}
        return train, evals

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the task."""
        return {"task": self.name}

    def shape_metrics(self, flat: dict[str, Any]) -> dict[str, Any]:
        """How one split's metrics appear in metrics.json (multi-task runs nest them per task)."""
        return flat

    def check_split(self, ds: "datasets.Dataset", where: str) -> "datasets.Dataset":
        """Check columns and values; return the split, possibly normalised."""
        return ds

    def require_column(self, ds: "datasets.Dataset", key: str, where: str) -> str:
        """The column named by option ``key``; an error listing the columns if it is missing."""
        column = getattr(self.options, key)
        if column not in ds.column_names:
            raise HFTransferError(
                f"{where}: column {column!r} (task.{key}) not found; columns are "
                f"{', '.join(ds.column_names)}; set task.{key} to one of them"
            )
        return column

    def label_names(self, train: "datasets.Dataset", where: str) -> list[str]:
        raise NotImplementedError

    def check_labels(self, ds: "datasets.Dataset", labels: list[str], where: str) -> None:
        pass

    def stratify_keys(self, ds: "datasets.Dataset") -> list[Any] | None:
        """Per-row keys for stratified splits and label budgets; None if not applicable."""
        return None

    def load_processor(self, location: str | None, spec: "ModelSpec", config: Any):
        """The tokenizer / image processor / feature extractor for the source model.

        ``location`` is where the source model lives (None for an inline ``model.config``);
        ``model.processor`` in the recipe, when set, names another place to load it from."""
        raise NotImplementedError

    def preprocess(self, ds: "datasets.Dataset", processor: Any, labels: list[str],
                   training: bool = False) -> "datasets.Dataset":
        """Model inputs + ``labels``; text tasks add a ``length`` column (length-grouped batches,
        length-sorted evaluation). ``training`` switches on augmentation where there is any."""
        raise NotImplementedError

    def collator(self, processor: Any) -> Callable:
        raise NotImplementedError

    def inputs_key(self, ds: "datasets.Dataset", processor: Any, labels: list[str]) -> str | None:
        """A key of everything :meth:`preprocess` makes of ``ds`` (model inputs and labels), found
        without preprocessing it; None where the task cannot name it so (a cache then keys the
        preprocessed split itself)."""
        return None

    # --- evaluation -------------------------------------------------------------------------
    def compute_metrics(self, labels: list[str]) -> Callable:
        """A ``compute_metrics`` function for the Trainer."""
        raise NotImplementedError

    def metric_names(self, labels: list[str]) -> list[str]:
        """The names :meth:`compute_metrics` reports (``metric_for_best_model`` picks one)."""
        raise NotImplementedError

    def preprocess_logits(self) -> Callable | None:
        """The Trainer's ``preprocess_logits_for_metrics``: what evaluation keeps of each batch's
        outputs for :meth:`compute_metrics` (None: the logits)."""
        return None

    def callbacks(self, strategy: Any) -> list:
        """TrainerCallbacks the task needs beside the strategy's (warming up a new head)."""
        return []

    def predict(self, model: Any, processor: Any, inputs: list[Any], batch_size: int = 32,
                top_k: int | None = None) -> list[Any]:
        """The prediction for each input, in order, ``batch_size`` inputs at a time; ``top_k``
        (classification): also list the ``top_k`` best labels' scores (0: every label's)."""
        raise NotImplementedError

    def predict_columns(self, column: str | None = None) -> list[str]:
        """The columns ``predict --file`` reads from a data file: ``column`` (comma-separated,
        one per input column), or the recipe's input columns."""
        own = self.input_columns()
        if column is None:
            return own
        names = [c.strip() for c in str(column).split(",")]
        if len(names) != len(own) or not all(names):
            raise HFTransferError(
                f"--column: this run reads {len(own)} input column(s) ({', '.join(own)}); give "
                f"{'one column name' if len(own) == 1 else f'{len(own)} names separated by commas'}, "
                f"got {column!r}")
        return names

    def format_prediction(self, shown: str, result: Any) -> str:
        """One line of ``hftransfer predict`` output (without --json)."""
        return f"{result['label']}\t{result['score']:.4f}\t{shown}"

    # --- models -----------------------------------------------------------------------------
    def check_model(self, config: Any, spec: "ModelSpec") -> None:
        """Checks of the source model's config for this task, before any weights load."""

    def model_kwargs(self, labels: list[str]) -> dict[str, Any]:
        """Config overrides that size the head for the target labels."""
        return {
            "num_labels": len(labels),
            "id2label": {i: name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)},
        }


def check_columns(options: Any, *keys: str) -> None:
    """The columns a task's options name (``task.<key>``) are given and all different: a label
    column that is also an input would let the model read the answer."""
    seen: dict[str, str] = {}
    for key in keys:
        column = getattr(options, key)
        if column is None:
            continue
        if not str(column).strip():
            raise HFTransferError(f"task.{key} must not be empty")
        if column in seen:
            raise HFTransferError(
                f"task.{seen[column]} and task.{key} are both {column!r}; they must name different columns")
        seen[column] = key


def length_sorted(ds: Any) -> Any:
    """Evaluation order does not change metrics; sorting text by length removes most padding."""
    if "length" not in getattr(ds, "column_names", ()):
        return ds
    with warnings.catch_warnings():  # datasets' call of a pyarrow option deprecated in pyarrow 25
        warnings.filterwarnings("ignore", category=FutureWarning, module="pyarrow")
        return ds.sort("length")


def label_str(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def label_problem(value: Any) -> str | None:
    """Why a cell is no usable label (empty, NaN, a list...), or None when it is one."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return "an empty label"
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} ({str(value)[:40]}) where a label belongs"
    if isinstance(value, float) and math.isinf(value):
        return f"the label {value}, which is no class"
    if not label_str(value):
        return "an empty label"
    return None


def text_problem(value: Any) -> str | None:
    """Why a cell is no usable text (missing, empty or blank, not a string), or None."""
    if value is None or isinstance(value, str) and not value.strip():
        return "an empty text"
    if not isinstance(value, str):
        return f"{str(value)[:40]!r}, which is not text"
    return None


def max_text_length(requested: int | None, tokenizer: Any, limit: int | None) -> int:
    """How many tokens an input keeps: ``task.max_length`` if set (never beyond the model's
    position limit: the run would fail on the first long input, mid-training), else the
    tokenizer's limit, at most 512 and at most the model's."""
    if requested:
        if limit is not None and requested > limit:
            raise HFTransferError(
                f"task.max_length is {requested}, but the model has position embeddings for "
                f"{limit} tokens; set task.max_length to at most {limit}")
        return requested
    default = min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
    return int(min(default, limit) if limit else default)


def accuracy_f1(refs: Any, preds: Any, binary: bool) -> dict[str, float]:
    """Accuracy and F1 as scikit-learn's ``accuracy_score`` and ``f1_score(average="binary" or
    "macro", zero_division=0)`` give them (F1 of label 1, or the mean over the labels found in
    either array), counted here: importing scikit-learn costs every run ~0.4 s."""
    def f1(label: Any) -> float:
        tp = np.sum((preds == label) & (refs == label))
        wrong = np.sum((preds == label) != (refs == label))  # false positives and false negatives
        return float(2 * tp / (2 * tp + wrong)) if tp or wrong else 0.0

    scores = [f1(1)] if binary else [f1(label) for label in np.union1d(refs, preds)]
    return {"accuracy": float(np.mean(preds == refs)), "f1": float(np.mean(scores))}


def sort_key(name: str):
    """Label order: numbers numerically, then names alphabetically."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


class ClassificationTask(Task):
    """One label per example, read from ``options.label_column`` (text, image and audio
    classification share this): label names, checks, stratification, accuracy/F1."""

    def raw_labels(self, ds) -> list[str]:
        feature = ds.features.get(self.options.label_column)
        values = ds[self.options.label_column][:]  # a list at once: row by row costs 5 ms per 1,000
        if hasattr(feature, "int2str"):  # a ClassLabel: use its names
            return [feature.int2str(v) for v in values]
        return [label_str(v) for v in values]

    def check_label_column(self, ds, where) -> None:
        column = self.require_column(ds, "label_column", where)
        for row, value in enumerate(ds[column][:], start=1):
            problem = label_problem(value)
            if problem:
                raise HFTransferError(
                    f"{where}: row {row} has {problem} in column {column!r}; "
                    "fill it in or remove the row"
                )

    def label_names(self, train, where):
        feature = train.features.get(self.options.label_column)
        if hasattr(feature, "names"):
            names = list(feature.names)
        else:
            names = sorted(set(self.raw_labels(train)), key=sort_key)
        present = set(self.raw_labels(train))
        if len(present) < 2:
            raise HFTransferError(
                f"{where}: column {self.options.label_column!r} has a single class "
                f"({', '.join(sorted(present))}); classification needs at least two"
            )
        return names

    def check_labels(self, ds, labels, where):
        unseen = sorted(set(self.raw_labels(ds)) - set(labels))
        if unseen:
            raise HFTransferError(
                f"{where}: labels not seen in train: {', '.join(map(repr, unseen[:5]))}; "
                f"train has {', '.join(map(repr, labels))}"
            )

    def stratify_keys(self, ds):
        return self.raw_labels(ds)

    def label_ids(self, ds, labels: list[str]) -> list[int] | None:
        """The label index of every row, or None for an unlabelled split."""
        if self.options.label_column not in ds.column_names:
            return None
        label2id = {name: i for i, name in enumerate(labels)}
        return [label2id[v] for v in self.raw_labels(ds)]

    def metric_names(self, labels):
        return ["accuracy", "f1"]

    def compute_metrics(self, labels):
        def compute(eval_pred):
            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            return accuracy_f1(np.asarray(eval_pred.label_ids), np.asarray(logits).argmax(-1), binary=len(labels) == 2)

        return compute

    def logits(self, model: Any, processor: Any, inputs: list[Any], batch_size: int = 32) -> Any:
        """The model's logits for raw inputs: a float tensor [inputs, labels], in input order."""
        raise NotImplementedError

    def predict(self, model, processor, inputs, batch_size=32, top_k=None):
        """``[{"label": name, "score": p}]`` per input, in input order; with ``top_k`` also
        ``"scores"``: the ``top_k`` best labels (0: all), best first, ``[{"label", "score"}]``."""
        logits = self.logits(model, processor, inputs, batch_size)
        return label_scores(logits.float().softmax(-1).cpu().numpy(), model.config.id2label, top_k)

    @staticmethod
    def top_label(model, logits) -> list[dict[str, Any]]:
        """``[{"label": name, "score": p}]`` for a batch of logits."""
        return label_scores(logits.float().softmax(-1).cpu().numpy(), model.config.id2label)


def label_scores(probs: Any, names: Any, top_k: int | None = None) -> list[dict[str, Any]]:
    """``{"label", "score"}`` of the best label of each row of probabilities [inputs, labels]
    (``names``: index -> label, a list or a mapping); with ``top_k``, also ``"scores"``: the
    ``top_k`` best (0: every label), best first."""
    name = (lambda i: names[i]) if isinstance(names, (list, tuple)) else (lambda i: names.get(i, str(i)))
    out = []
    for p in np.asarray(probs):
        order = np.argsort(-p, kind="stable")
        best = int(order[0])
        row: dict[str, Any] = {"label": name(best), "score": float(p[best])}
        if top_k is not None:
            row["scores"] = [{"label": name(int(i)), "score": float(p[i])} for i in order[:top_k or len(order)]]
        out.append(row)
    return out
