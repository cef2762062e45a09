"""Architecture surgery: heads written into a model's own layers, and layers added or reset so
a model computes exactly what was trained on its features.

* A sentence classifier's head is a dense layer with tanh and an output layer (BERT's pooler +
  classifier, RoBERTa's classifier.dense + out_proj). A trained MLP head is that pair; a linear
  head is ``W·tanh(εz)/ε`` (the dense layer becomes ``εI``), trained as such, so exact.
* Mean pooling becomes one appended encoder layer whose attention is uniform over the real
  tokens (zero queries) and whose value projection is ``c·I``: its first-token output is the
  layer-normalised mean of the tokens (the residual first token is ``1/c`` of the sum and
  vanishes under LayerNorm).
* Any other head: the model's own output layer, trained on what it receives; a new square layer
  in front of it (wav2vec2's projector) becomes the identity.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

LINEAR_EPS = 1e-2  # linear head through the tanh dense layer: tanh(εz)/ε ≈ z, exact by training on it
MEAN_VALUE_SCALE = 1e4  # value projection c·I of the averaging layer: the residual weighs 1/c


def head_pair(model) -> tuple[nn.Linear, nn.Linear] | None:
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


def encoder_layers(model) -> nn.ModuleList | None:
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    return layers if isinstance(layers, nn.ModuleList) and len(layers) else None


_AVERAGING_PARTS = ("attention.self.query", "attention.self.key", "attention.self.value",
                    "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                    "output.dense", "output.LayerNorm")


def can_average(model) -> bool:
    layers = encoder_layers(model)
    if layers is None:
        return False
    names = {n for n, _ in layers[-1].named_modules()}
    return all(part in names for part in _AVERAGING_PARTS)


def append_averaging_layer(model) -> None:
    """Append an encoder layer whose first-token output is LayerNorm(mean of the tokens)."""
    layers = encoder_layers(model)
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


class CpuFastDropout(nn.Dropout):
    """Dropout whose keep mask, on the CPU, takes 16 bits per element from 64-bit random words.

    Why: torch's CPU dropout draws one 32-bit Mersenne-Twister number per element, which made
    dropout over half of each step of a head on cached features (0.6 ms against 0.2 ms for a
    256×384 batch here). The mask is still drawn from torch's seeded generator, so runs repeat;
    ``p`` is rounded to a multiple of 1/65536. Other devices use torch's own dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or not 0 < self.p < 1:
            return super().forward(x)
        dropped = round(self.p * 65536)
        # random_(-2**63, None) fills the whole int64 range: every one of the 64 bits is random.
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-2**63, None)
        keep = words.view(torch.int16)[: x.numel()].view(x.shape) >= dropped - 32768
        return x * (keep * (65536 / (65536 - dropped))).to(x.dtype)


class FeatureHead(nn.Module):
    """The trainable head on cached features: linear (through tanh(εz)/ε) or tanh MLP."""

    def __init__(self, hidden: int, num_labels: int, kind: str, dropout: float = 0.1):
        super().__init__()
        self.kind = kind
        self.dense = nn.Linear(hidden, hidden) if kind == "mlp" else None
        self.dropout = CpuFastDropout(dropout)
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
        self.dropout = CpuFastDropout(dropout)

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




def identity_projections(model, new_params: set[str], keep: nn.Linear) -> None:
    """Every new square linear layer of ``model`` but ``keep`` (wav2vec2's projector before its
    output layer) becomes the identity: a frozen random projection would throw information away."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module is not keep and f"{name}.weight" in new_params \
                and module.in_features == module.out_features:
            with torch.no_grad():
                module.weight.copy_(torch.eye(module.in_features))
                module.bias.zero_()
