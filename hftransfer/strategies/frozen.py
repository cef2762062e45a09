"""Outputs of a frozen second network (a distillation teacher, a fusion source), computed once
over a data set and cached on disk, keyed by its weights and the inputs, so later epochs and
reruns never run it again.

An output is the network's logits, or its *features*: what its final classifying layer
receives (the pooled representation, or per token for token classification).
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from .. import cache
from ..errors import HFTransferError
from .features import _inputs_digest, write_cache_entry

logger = logging.getLogger("hftransfer")

BATCH = 64
OUTPUTS = ("logits", "features")


def final_layer(model: torch.nn.Module, head_prefixes: tuple[str, ...], num_labels: int) -> torch.nn.Module:
    """The classifier's final layer: the last ``Linear`` under the head modules with one output
    per label (PEFT's trained copy of it, for an adapter model)."""
    found = [module for name, module in model.named_modules()
             if any(part in head_prefixes for part in name.split(".")) and isinstance(module, torch.nn.Linear)
             and module.out_features == num_labels and "original_module" not in name.split(".")]
    if not found:
        raise HFTransferError(
            f"{type(model).__name__} has no linear layer with {num_labels} outputs in its head "
            f"({', '.join(head_prefixes)}): its features (what that layer receives) cannot be read")
    return found[-1]


class FeatureTap:
    """Keeps what a layer receives on its last call (a forward pre-hook)."""

    def __init__(self, layer: torch.nn.Module):
        self.value: torch.Tensor | None = None
        self.handle = layer.register_forward_pre_hook(self._keep)

    def _keep(self, module: torch.nn.Module, args: tuple) -> None:
        self.value = args[0]

    def take(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise HFTransferError("the model's classifying layer did not run; its features cannot be read")
        return value


def outputs(model: torch.nn.Module, inputs: Any, collator: Any, *, what: str, per_word: bool,
            output: str = "logits", head_prefixes: tuple[str, ...] = (), use_cache: bool = True,
            key: str = "") -> list[Any]:
    """One row of ``model``'s outputs per row of the encoded data set ``inputs`` (per labelled
    word for token tasks): from the cache, or computed (and cached). ``what`` names the network
    and the split in the log; ``key`` adds what else the outputs depend on."""
    path = None
    if use_cache:
        labelled = _inputs_digest(inputs, "mask" if per_word else None)  # which words get outputs
        digest = hashlib.sha256(f"v2|{key}|{output}|{cache.fingerprint(model)}|{labelled}".encode()).hexdigest()[:32]
        path = cache.entry(cache.TEACHER, f"{digest}.safetensors")
        tensors = _read(path)
        if tensors is not None and len(tensors["counts"]) == len(inputs):
            logger.info("%s from the cache (%s)", what, path.name)
            return _split_rows(tensors, per_word)
    logger.info("computing %s: %d examples", what, len(inputs))
    tensors = compute(model, inputs, collator, per_word=per_word, output=output, head_prefixes=head_prefixes)
    if path is not None:
        write_cache_entry(path, tensors)
    return _split_rows(tensors, per_word)


@torch.no_grad()
def compute(model: torch.nn.Module, inputs: Any, collator: Any, *, per_word: bool, output: str = "logits",
            head_prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Outputs of every row (length-sorted batches), as a flat tensor and per-row counts."""
    device = model_device()
    model.to(device)
    tap = None
    if output == "features":
        tap = FeatureTap(final_layer(model, head_prefixes, model.config.num_labels))
    try:
        columns = [c for c in inputs.column_names if c != "length"]
        order = np.argsort([len(ids) for ids in inputs["input_ids"]], kind="stable") \
            if "input_ids" in columns else np.arange(len(inputs))
        rows: list[torch.Tensor | None] = [None] * len(inputs)
        for start in range(0, len(order), BATCH):
            idx = [int(i) for i in order[start:start + BATCH]]
            part = inputs.select_columns(columns)[idx]
            batch = collator([dict(zip(part, values)) for values in zip(*part.values())])
            labels = batch.pop("labels", None)
            out = model(**{k: v.to(device) for k, v in batch.items()}).logits
            values = (tap.take() if tap is not None else out).float().cpu()
            for j, i in enumerate(idx):
                rows[i] = values[j][labels[j] != -100] if per_word else values[j]
    finally:
        if tap is not None:
            tap.handle.remove()
    counts = torch.tensor([len(r) if per_word else 1 for r in rows])
    return {"logits": torch.cat([r.reshape(-1, r.shape[-1]) for r in rows]).contiguous(), "counts": counts}


def same_inputs(theirs: Any, ours: Any) -> bool:
    """Whether two processors turn raw inputs into the same model inputs (a tokenizer's
    vocabulary, an image processor's or feature extractor's settings)."""
    if hasattr(ours, "get_vocab") and hasattr(theirs, "get_vocab"):
        return theirs.get_vocab() == ours.get_vocab()
    return _settings(theirs) == _settings(ours)


def model_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0))
    return torch.device("cpu")


def _split_rows(tensors: dict[str, torch.Tensor], per_word: bool) -> list[Any]:
    logits, counts = tensors["logits"], tensors["counts"].tolist()
    if not per_word:
        return logits.tolist()
    out, start = [], 0
    for n in counts:
        out.append(logits[start:start + n].tolist())
        start += n
    return out


def _read(path) -> dict[str, torch.Tensor] | None:
    """A cache entry, or None when it is missing or does not read back whole."""
    if not path.exists():
        return None
    try:
        tensors = load_file(str(path))
    except Exception:  # safetensors raises its own type for a damaged file: compute again
        return None
    return tensors if {"logits", "counts"} <= set(tensors) else None


def _settings(processor) -> dict[str, Any]:
    settings = processor.to_dict() if hasattr(processor, "to_dict") else {}
    return {k: v for k, v in settings.items() if k not in ("processor_class", "_processor_class")}
