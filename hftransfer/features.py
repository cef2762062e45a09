"""Feature extraction: a frozen encoder runs once over each split, its pooled features are cached
on disk, and only a new head (linear probe or MLP) trains on them — in seconds per epoch.

The run is saved as a plain ``AutoModelFor...`` model that ``pipeline()`` loads and that
computes exactly what was trained. Sentence classification with a BERT/RoBERTa-style head:

* the head maps onto the architecture's own classification head, a dense layer with tanh and an
  output layer (BERT's pooler + classifier, RoBERTa's classifier.dense + out_proj): an MLP head is
  that pair; a linear head is ``W·tanh(εz)/ε`` (the dense layer is ``εI``), trained as such;
* mean pooling becomes one appended encoder layer whose attention is uniform over the real
  tokens (zero queries) and whose value projection is ``c·I``: its first-token output is the
  layer-normalised mean of the tokens (the residual first token is ``1/c`` of the sum and
  vanishes under LayerNorm). Features are read from that same layer, so nothing is approximated.

Every other task (tokens, images, audio): the features are what the model's own output layer
receives (captured with a hook, per labelled token for token tasks), the head is a copy of that
layer, trained on them and written back. A new linear layer in front of it (wav2vec2's
projector) becomes the identity, so the probe sees the pooled encoder output.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import HFTransferError
from .models import resolve
from .registry import register_strategy
from .strategies import Strategy

logger = logging.getLogger("hftransfer")

LINEAR_EPS = 1e-2  # linear head through the tanh dense layer: tanh(εz)/ε ≈ z, exact by training on it
MEAN_VALUE_SCALE = 1e4  # value projection c·I of the averaging layer: the residual weighs 1/c


def cache_root() -> Path:
    """``$HFTRANSFER_CACHE``, else ``<HF cache home>/hftransfer``."""
    if os.environ.get("HFTRANSFER_CACHE"):
        return Path(os.environ["HFTRANSFER_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hftransfer"


def _head_pair(model) -> tuple[nn.Linear, nn.Linear] | None:
    """(dense, output) of a tanh-dense + linear classification head, or None."""
    base = model.base_model
    pooler = getattr(base, "pooler", None)
    classifier = getattr(model, "classifier", None)
    if pooler is not None and isinstance(getattr(pooler, "dense", None), nn.Linear) \
            and isinstance(classifier, nn.Linear):
        return pooler.dense, classifier
    if classifier is not None and isinstance(getattr(classifier, "dense", None), nn.Linear) \
            and isinstance(getattr(classifier, "out_proj", None), nn.Linear):
        return classifier.dense, classifier.out_proj
    return None


def _layers(model) -> nn.ModuleList | None:
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    return layers if isinstance(layers, nn.ModuleList) and len(layers) else None


_AVERAGING_PARTS = ("attention.self.query", "attention.self.key", "attention.self.value",
                    "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                    "output.dense", "output.LayerNorm")


def _can_average(model) -> bool:
    layers = _layers(model)
    if layers is None:
        return False
    names = {n for n, _ in layers[-1].named_modules()}
    return all(part in names for part in _AVERAGING_PARTS)


def append_averaging_layer(model) -> None:
    """Append an encoder layer whose first-token output is LayerNorm(mean of the tokens)."""
    layers = _layers(model)
    layer = copy.deepcopy(layers[-1])
    parts = dict(layer.named_modules())
    hidden = model.config.hidden_size
    with torch.no_grad():
        for name in _AVERAGING_PARTS:
            module = parts[name]
            module.weight.zero_()
            if module.bias is not None:
                module.bias.zero_()
        parts["attention.self.value"].weight.copy_(torch.eye(hidden) * MEAN_VALUE_SCALE)
        parts["attention.output.dense"].weight.copy_(torch.eye(hidden))
        parts["attention.output.LayerNorm"].weight.fill_(1.0)
        parts["output.LayerNorm"].weight.fill_(1.0)
    layers.append(layer)
    model.config.num_hidden_layers = len(layers)


class FeatureHead(nn.Module):
    """The trainable head on cached features: linear (through tanh(εz)/ε) or tanh MLP."""

    def __init__(self, hidden: int, num_labels: int, kind: str, dropout: float = 0.1):
        super().__init__()
        self.kind = kind
        self.dense = nn.Linear(hidden, hidden) if kind == "mlp" else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if self.kind == "mlp":
            x = torch.tanh(self.dense(self.dropout(features)))
        else:
            x = torch.tanh(LINEAR_EPS * features) / LINEAR_EPS
        logits = self.out(self.dropout(x))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def export_to(self, dense: nn.Linear, out: nn.Linear) -> None:
        """Write this head into the model's own (dense, out) head, computing the same logits."""
        with torch.no_grad():
            if self.kind == "mlp":
                dense.weight.copy_(self.dense.weight)
                dense.bias.copy_(self.dense.bias)
                out.weight.copy_(self.out.weight)
            else:
                dense.weight.copy_(torch.eye(dense.weight.shape[0]) * LINEAR_EPS)
                dense.bias.zero_()
                out.weight.copy_(self.out.weight / LINEAR_EPS)
            out.bias.copy_(self.out.bias)


class OutputLayerHead(nn.Module):
    """A copy of the model's output layer, trained on the features it receives (a linear probe);
    per-token features come as (batch, tokens, hidden) with -100 labels on the padding."""

    def __init__(self, layer: nn.Linear, dropout: float = 0.1):
        super().__init__()
        self.layer = copy.deepcopy(layer).requires_grad_(True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import TokenClassifierOutput

        logits = self.layer(self.dropout(features))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits)

    def export_to(self, layer: nn.Linear) -> None:
        with torch.no_grad():
            layer.weight.copy_(self.layer.weight)
            layer.bias.copy_(self.layer.bias)


def output_layer(model, num_labels: int) -> nn.Linear | None:
    """The model's final Linear to ``num_labels`` outputs (its task head's output layer)."""
    found = [m for _, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    return found[-1] if found else None


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


def fingerprint(model: nn.Module, skip: nn.Module | None = None) -> str:
    """A hash of every weight of ``model`` but those of ``skip``: the cache key's model part."""
    skipped = {id(t) for t in skip.state_dict().values()} if skip is not None else set()
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if id(tensor) in skipped:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _inputs_digest(ds, token_labels: bool = False) -> str:
    """A hash of the model inputs (token ids, pixels, samples): covers the data, the processor
    and its settings; for token tasks also which tokens carry a label."""
    digest = hashlib.sha256()
    for start in range(0, len(ds), 256):
        batch = ds[start:start + 256]
        for column in sorted(c for c in batch if c not in ("labels", "length")):
            for row in batch[column]:
                digest.update(np.asarray(row).tobytes())
                digest.update(b"|")
        if token_labels and "labels" in batch:
            for row in batch["labels"]:
                digest.update((np.asarray(row) != -100).tobytes())
    return digest.hexdigest()


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


@register_strategy("feature-extraction")
class FeatureExtraction(Strategy):
    """Frozen source encoder; its pooled features are cached on disk and only a new head
    (``head: linear`` = linear probe, or ``mlp``) trains on them. ``pooling``: ``cls`` or
    ``mean`` (default: mean for sentence-transformers checkpoints, else cls)."""

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
        """cls or mean; default: mean for sentence-transformers checkpoints, else cls."""
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
        if recipe.task_type != "text-classification":
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
        """Sentence classification through the model's tanh-dense head (else: output layer)."""
        return self.task.name == "text-classification"

    @property
    def per_token(self) -> bool:
        return self.task.name == "token-classification"

    def pooling_for(self, spec) -> str:
        if self.options.pooling:
            return self.options.pooling
        if spec.config is not None:
            return "cls"
        location = Path(resolve(spec))
        is_sentence_transformer = location.is_dir() and (
            (location / "modules.json").exists() or (location / "sentence_bert_config.json").exists())
        return "mean" if is_sentence_transformer else "cls"

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
        if _head_pair(skeleton) is None:
            raise HFTransferError(
                f"feature-extraction saves its head into the model's own classification head, and "
                f"model type {config.model_type!r} has none of the supported kind (BERT/RoBERTa-style "
                "dense + tanh + linear); use strategy partial-freeze with freeze_layers set to the depth"
            )

    def build_model(self, spec, labels):
        model = super().build_model(spec, labels)
        if not self.pooled:
            self.pooling = "model"
            self._identity_projection(model, labels)
            return model
        self.pooling = self.pooling_for(spec)
        if self.pooling == "mean":
            if not _can_average(model):
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

    def _identity_projection(self, model, labels) -> None:
        """A new square linear layer before the output layer (wav2vec2's projector) becomes the
        identity: a frozen random projection would throw information away."""
        out = output_layer(model, len(labels))
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and module is not out and f"{name}.weight" in self.new_params \
                    and module.in_features == module.out_features:
                with torch.no_grad():
                    module.weight.copy_(torch.eye(module.in_features))
                    module.bias.zero_()

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

    def prepare_data(self, train_ds, evals, collator):
        from transformers import default_data_collator

        # The cache key covers every frozen weight the features depend on: the encoder, or the
        # whole model but its (freshly initialised, retrained) output layer.
        if self.pooled:
            self.model_key = fingerprint(self.full_model.base_model)
        else:
            self.model_key = fingerprint(self.full_model,
                                         skip=output_layer(self.full_model, self.full_model.config.num_labels))
        train = self.features(train_ds, collator, "train")
        evals = {name: self.features(ds, collator, name) for name, ds in evals.items()}
        return train, evals, pad_token_features if self.per_token else default_data_collator

    def features(self, ds, collator, split: str):
        """The features of a preprocessed split, from the cache or computed (and cached)."""
        from safetensors.torch import load_file, save_file

        key = hashlib.sha256(
            f"v2|{self.task.name}|{self.model_key}|{self.pooling}|"
            f"{_inputs_digest(ds, self.per_token)}".encode()).hexdigest()[:32]
        path = cache_root() / "features" / f"{key}.safetensors"
        if self.options.cache and path.exists():
            logger.info("%s: features from cache %s", split, path)
            tensors = load_file(str(path))
        else:
            tensors = self.encode(ds, collator, split)
            if self.options.cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                save_file(tensors, str(tmp))
                os.replace(tmp, path)  # readers never see a half-written file
        labels = tensors.get("labels")
        if labels is not None and labels.numel() and int(labels.max()) < 0:
            labels = None  # an unlabelled split
        return FeatureDataset(tensors["features"], labels, tensors.get("offsets"))

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
        for start in tqdm(range(0, len(order), size), desc=f"Encoding {split}", leave=False):
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
            model.export_to(*_head_pair(self.full_model))
        else:
            model.export_to(output_layer(self.full_model, self.full_model.config.num_labels))
        self.full_model.save_pretrained(directory)
