"""The ``feature-extraction`` strategy: a frozen encoder runs once over each split, its features
are cached on disk (keyed by the frozen weights, the model inputs, the labels and the pooling), and
only a new head (linear probe or MLP) trains on them — in seconds per epoch. A rerun on a warm cache
runs no encoder and, for text, no tokenizer: the cache knows a split by its raw rows.

The run is saved as a plain ``AutoModelFor...`` model that ``pipeline()`` loads and that
computes exactly what was trained: the trained head is written into the model's own layers
(see :mod:`hftransfer.surgery`). Where the features come from is the task's capability
``features``: ``pooled`` (the encoder's first-token output, through the model's own
classification head, with optional mean pooling), ``output-layer`` (what the model's output
layer receives) or ``per-token`` (that, for every labelled token).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import default_data_collator

from .. import cache, rundir
from ..errors import HFTransferError
from ..models import sentence_transformers_pooling
from ..progress import Lines, data_bars, quiet, show_bars
from ..registry import get_task, register_strategy
from ..surgery import (
    FeatureHead,
    OutputLayerHead,
    append_averaging_layer,
    can_average,
    head_pair,
    identity_projections,
    output_layer,
)
from .base import Strategy

logger = logging.getLogger("hftransfer")


def pad_token_features(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate per-sentence token features: pad with zeros, labels with -100."""
    longest = max(len(item["features"]) for item in items)
    hidden = items[0]["features"].shape[-1]
    features = torch.zeros(len(items), longest, hidden)
    labels = torch.full((len(items), longest), -100, dtype=torch.long)
    for i, item in enumerate(items):
        n = len(item["features"])
        features[i, :n] = item["features"]
        if "labels" in item:
            labels[i, :n] = item["labels"]
    batch = {"features": features}
    if "labels" in items[0]:
        batch["labels"] = labels
    return batch


def _inputs_digest(ds, labels: str | None = None) -> str:
    """A hash of the model inputs (token ids, pixels, samples): covers the data, the processor
    and its settings; with ``labels="mask"`` also which tokens carry a label, with ``"values"``
    the labels themselves."""
    digest = hashlib.sha256()
    for start in range(0, len(ds), 256):
        batch = ds[start:start + 256]
        for column in sorted(c for c in batch if c not in ("labels", "length")):
            for row in batch[column]:
                digest.update(np.asarray(row).tobytes())
                digest.update(b"|")
        for row in batch.get("labels", ()) if labels else ():
            digest.update((np.asarray(row) != -100).tobytes() if labels == "mask" else np.asarray(row).tobytes())
            digest.update(b"|")
    return digest.hexdigest()


def write_cache_entry(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write cached tensors (features, teacher outputs) under their final name only once whole,
    readable as the umask allows (safetensors writes -rw-------)."""
    tmp = cache.staging_name(path)
    save_file(tensors, str(tmp))
    rundir.readable_files(tmp)
    os.replace(tmp, path)  # readers never see a half-written file


class FeatureDataset(torch.utils.data.Dataset):
    """Cached features (and labels) as plain tensors: a training step costs microseconds.
    Token tasks keep one (tokens, hidden) block per sentence: ``offsets`` delimit them."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor | None,
                 offsets: torch.Tensor | None = None):
        self.features, self.labels, self.offsets = features, labels, offsets

    def __len__(self) -> int:
        return len(self.features) if self.offsets is None else len(self.offsets) - 1

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        span = slice(i, i + 1) if self.offsets is None else slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        item = {"features": self.features[span] if self.offsets is not None else self.features[i]}
        if self.labels is not None:
            item["labels"] = self.labels[span] if self.offsets is not None else self.labels[i]
        return item

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """The DataLoader's fetch of a whole batch: one row per example is one indexing of the
        stored tensors, returned as a single item that :func:`stack_rows` passes on (fetching
        and stacking rows one by one took as long as the head's training step)."""
        if self.offsets is not None:
            return [self[i] for i in indices]
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {"features": self.features[index]}
        if self.labels is not None:
            batch["labels"] = self.labels[index]
        return [batch]


def stack_rows(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate rows of one-row-per-example features: a batch ``FeatureDataset.__getitems__``
    already stacked (2-D features) as it is, single rows stacked."""
    if len(items) == 1 and items[0]["features"].dim() == 2:
        return items[0]
    return default_data_collator(items)


@register_strategy("feature-extraction")
class FeatureExtraction(Strategy):
    """Frozen source encoder; its pooled features are cached on disk and only a new head
    (``head: linear`` = linear probe, or ``mlp``) trains on them. ``pooling``: ``cls`` or
    ``mean`` (default: a sentence-transformers checkpoint's own, from its Pooling config, else cls)."""

    description = "frozen encoder, features cached on disk, only a new linear/MLP head trains"
    augments = False  # features are computed once, from the unaugmented inputs
    defaults = {"learning_rate": 5e-4, "num_train_epochs": 40, "warmup_steps": 0.0,
                "per_device_train_batch_size": 256, "per_device_eval_batch_size": 512,
                "weight_decay": 0.0, "train_sampling_strategy": "random",
                # The head retrains from the cache in seconds: checkpoints would cost more.
                "save_strategy": "no"}

    @dataclass
    class Options:
        pooling: str | None = None
        """cls or mean; default: a sentence-transformers checkpoint's own (its modules.json and
        Pooling config, in a local folder or the Hub repo; mean for one that pools otherwise), else cls."""
        head: str = "linear"
        """linear (a linear probe) or mlp (dense + tanh + linear)."""
        encode_batch_size: int = 64
        cache: bool = True

        def __post_init__(self) -> None:
            if self.pooling is not None and self.pooling not in ("cls", "mean"):
                raise HFTransferError(f"strategy.pooling must be cls or mean, got {self.pooling!r}")
            if self.head not in ("linear", "mlp"):
                raise HFTransferError(f"strategy.head must be linear or mlp, got {self.head!r}")
            if self.encode_batch_size < 1:
                raise HFTransferError(
                    f"strategy.encode_batch_size must be >= 1, got {self.encode_batch_size}"
                )

    @classmethod
    def validate_recipe(cls, recipe):
        if get_task(recipe.task_type).features != "pooled":
            o = recipe.strategy_options
            if o.head != "linear":
                raise HFTransferError(
                    f"strategy.head={o.head} applies to text-classification; for {recipe.task_type} "
                    "feature-extraction trains the model's own output layer (head: linear)"
                )
            if o.pooling is not None:
                raise HFTransferError(
                    f"strategy.pooling applies to text-classification; {recipe.task_type} uses the "
                    "model's own pooling"
                )

    @property
    def pooled(self) -> bool:
        """Features pooled by the encoder, through the model's tanh-dense head (else: what the
        model's output layer receives)."""
        return self.task.features == "pooled"

    @property
    def per_token(self) -> bool:
        return self.task.features == "per-token"

    def pooling_for(self, spec) -> str:
        """``strategy.pooling``; else a sentence-transformers checkpoint's own (its Pooling
        module's config, in a local folder or the Hub repo); else cls."""
        if self.options.pooling:
            return self.options.pooling
        if spec.random_weights:
            return "cls"
        own = sentence_transformers_pooling(spec)
        if own is None or own in ("cls", "mean"):
            return own or "cls"
        logger.warning("model %r pools with %s (its sentence-transformers Pooling config), which a "
                       "transformers model cannot hold; feature-extraction uses mean pooling (set "
                       "strategy.pooling to cls or mean to choose)", spec.name_or_path, own)
        return "mean"

    def check_model(self, config):
        with torch.device("meta"):
            skeleton = self.task.auto_class.from_config(config)
        if not self.pooled:
            if output_layer(skeleton, skeleton.config.num_labels) is None:
                raise HFTransferError(
                    f"feature-extraction trains the model's output layer, and model type "
                    f"{config.model_type!r} has no linear one; use partial-freeze or lora"
                )
            return
        if head_pair(skeleton) is None:
            raise HFTransferError(
                f"feature-extraction saves its head into the model's own classification head, and "
                f"model type {config.model_type!r} has none of the supported kind (BERT/RoBERTa-style "
                "dense + tanh + linear); use strategy partial-freeze with freeze_layers set to the depth"
            )

    def build_model(self, spec, labels):
        model = super().build_model(spec, labels)
        if not self.pooled:
            self.pooling = "model"
            # A new square layer before the output layer (wav2vec2's projector) passes the
            # pooled encoder output through unchanged: the probe sees the features themselves.
            identity_projections(model, self.new_params, keep=output_layer(model, len(labels)))
            return model
        self.pooling = self.pooling_for(spec)
        if self.pooling == "mean":
            if not can_average(model):
                raise HFTransferError(
                    f"strategy.pooling=mean is not available for model type {model.config.model_type!r}; "
                    "use pooling: cls"
                )
            append_averaging_layer(model)
        logger.info("feature-extraction: %s pooling, %s head", self.pooling, self.options.head)
        return model

    def config_overrides(self, config):
        if not self.pooled and getattr(config, "classifier_proj_size", None) is not None:
            return {"classifier_proj_size": config.hidden_size}  # room for the identity below
        return {}

    def prepare(self, model):
        self.full_model = model.eval()
        for param in model.parameters():
            param.requires_grad = False
        dropout = getattr(model.config, "hidden_dropout_prob", 0.1) or 0.0
        if not self.pooled:
            return OutputLayerHead(output_layer(model, model.config.num_labels), dropout)
        return FeatureHead(model.config.hidden_size, model.config.num_labels, self.options.head,
                           dropout=getattr(model.config, "hidden_dropout_prob", 0.1) or 0.0)

    def count_parameters(self, model) -> dict[str, int]:
        head = sum(p.numel() for p in model.parameters())
        return {"trainable": head, "total": sum(p.numel() for p in self.full_model.parameters())}

    def encode_splits(self, splits, processor):
        # Nothing yet: features() finds a split's features in the cache by its raw rows where the
        # task can name them, and preprocesses only what it must encode (or key) itself.
        return None, {}

    def prepare_data(self, train_ds, evals, collator, splits, processor):
        train = self.features(splits.train, "train", processor, splits.labels)
        evals = {name: self.features(ds, name, processor, splits.labels)
                 for name, ds in (("validation", splits.validation), ("test", splits.test)) if ds is not None}
        return train, evals, pad_token_features if self.per_token else stack_rows

    def features(self, raw, split: str, processor, labels: list[str]) -> FeatureDataset:
        """The features (and labels) of a split's raw rows, from the cache or computed (and
        cached); also what ``hftransfer rank`` scores (so a later run finds them in the cache)."""
        tensors = path = ds = None
        if self.options.cache:
            # The key covers every frozen weight the features depend on (the encoder, or the whole
            # model but its freshly initialised, retrained output layer), the pooling, the inputs
            # and the labels (stored with the features).
            if getattr(self, "model_key", None) is None:
                self.model_key = (cache.fingerprint(self.full_model.base_model) if self.pooled else
                                  cache.fingerprint(self.full_model, skip=output_layer(
                                      self.full_model, self.full_model.config.num_labels)))
            inputs = self.task.inputs_key(raw, processor, labels)  # no preprocessing where it can
            if inputs is None:
                ds = self._preprocessed(raw, processor, labels)
                inputs = f"preprocessed {_inputs_digest(ds, labels='values')}"
            else:
                inputs = f"rows {inputs}"
            key = hashlib.sha256(f"v3|{self.task.name}|{self.model_key}|{self.pooling}|{inputs}".encode())
            path = cache.entry(cache.FEATURES, f"{key.hexdigest()[:32]}.safetensors")
            tensors = self._cached(path, split)
        if tensors is None:
            ds = ds if ds is not None else self._preprocessed(raw, processor, labels)
            tensors = self.encode(ds, self.task.collator(processor), split)
            if path is not None:
                write_cache_entry(path, tensors)
        gold = tensors.get("labels")
        if gold is not None and gold.numel() and int(gold.max()) < 0:
            gold = None  # an unlabelled split
        return FeatureDataset(tensors["features"], gold, tensors.get("offsets"))

    def _preprocessed(self, raw, processor, labels: list[str]):
        with data_bars():
            return self.task.preprocess(raw, processor, labels)

    @staticmethod
    def _cached(path: Path, split: str) -> dict[str, torch.Tensor] | None:
        """A cache entry's features; None (computed again) for an entry that is missing or does
        not read back whole (a disk error, a hand edit)."""
        if not path.exists():
            return None
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own type for a damaged file
            logger.warning("%s: the cached features %s do not load (%s); computing them again",
                           split, path, type(exc).__name__)
            return None
        if "features" not in tensors:
            return None
        logger.info("%s: features from cache %s", split, path)
        return tensors

    @torch.no_grad()
    def encode(self, ds, collator, split: str, sort_by_length: bool = True) -> dict[str, torch.Tensor]:
        """Features (and labels) of every row of ``ds``, in its order; batches of similar
        length (almost no padding) where rows have a length, unless told otherwise."""
        from tqdm.auto import tqdm

        has_length = "length" in ds.column_names
        lengths = ds["length"] if has_length else None
        order = (np.argsort(lengths, kind="stable") if sort_by_length and has_length
                 else np.arange(len(ds)))
        size = self.options.encode_batch_size
        device = next(self.full_model.parameters()).device
        rows: list[torch.Tensor | None] = [None] * len(ds)
        labels: list[torch.Tensor | None] = [None] * len(ds)
        steps = range(0, len(order), size)
        bar = tqdm(steps, desc=f"Encoding {split}", leave=False, disable=not show_bars())
        lines = None if show_bars() or quiet() else Lines(f"encoding {split} ({len(ds)} examples)", len(steps))
        for start in bar:
            idx = order[start:start + size].tolist()
            items = [ds[i] for i in idx]
            for item in items:
                item.pop("length", None)
            batch = collator(items)
            gold = batch.pop("labels", None)
            feats = self._batch_features({k: v.to(device) for k, v in batch.items()})
            for j, i in enumerate(idx):
                if self.per_token:  # only the tokens that carry a label (first sub-words)
                    keep = gold[j] != -100
                    rows[i], labels[i] = feats[j][keep.to(feats.device)].float().cpu(), gold[j][keep]
                else:
                    rows[i] = feats[j].float().cpu()
                    labels[i] = gold[j] if gold is not None else torch.tensor(-100)
            if lines is not None:
                lines.update()
        if self.per_token:
            sizes = torch.tensor([0] + [len(r) for r in rows])
            return {"features": torch.cat(rows), "labels": torch.cat(labels).long(),
                    "offsets": sizes.cumsum(0)}
        return {"features": torch.stack(rows), "labels": torch.stack(labels).long()}

    def _batch_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.pooled:  # the first-token output of the (possibly averaging-extended) encoder
            return self.full_model.base_model(**batch).last_hidden_state[:, 0]
        captured = {}
        layer = output_layer(self.full_model, self.full_model.config.num_labels)
        hook = layer.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0]))
        try:
            self.full_model(**batch)
        finally:
            hook.remove()
        return captured["x"]

    def save(self, model, directory):
        if self.pooled:
            model.export_to(*head_pair(self.full_model))
        else:
            model.export_to(output_layer(self.full_model, self.full_model.config.num_labels))
        self.full_model.save_pretrained(directory)
