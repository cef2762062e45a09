"""Cross-architecture weight transfer: a network of another shape, filled from a trained one.

The target is the source's architecture with some config fields changed (its depth, width,
intermediate size, heads). Every target tensor is filled from the source tensor of the same
name, its layer index mapped, each of its dimensions through the map of the size it stands for:

* **depth**: whole layers by a layer map: ``bottom`` (the first k), ``uniform`` (evenly spaced,
  first and last kept), an explicit increasing list, or ``stack`` to grow deeper (layer i copies
  source layer i mod n: bert2BERT's stacking, not function-preserving). Embeddings, the pooler
  and the final norm are copied as they are.
* **narrower** (weight selection, Xu et al., ICLR 2024): evenly spaced indices, the same ones in
  every tensor that touches the residual width (embeddings, norms, projections), so the residual
  stream stays aligned. Attention keeps its head count and keeps evenly spaced dimensions inside
  every head: each of the source's attention patterns survives, in a narrower query/key space
  (dropping whole heads would lose patterns outright). A config that also lowers the head count
  keeps evenly spaced heads.
* **wider** (Net2Net / bert2BERT function-preserving growth) by an integer factor: each unit is
  copied, and weights that read copied units are divided by the copy count, so every layer
  computes what it did (LayerNorm sees the same mean and variance). Wider heads (same head
  count) get their query scaled by 1/sqrt(factor), so attention scores are unchanged.

Which dimension stands for what is read from its size (the source's hidden and intermediate
sizes) and, for the attention projections, from their names: the query/key/value outputs and the
attention output's input are the heads' dimension, laid out head by head.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import HFTransferError

LAYER_MAPS = ("bottom", "uniform", "stack")
WIDTHS = ("select", "grow")
WEIGHTS = ("source", "random")
# The options of model.init that are not config fields.
OPTIONS = ("layers", "width", "weights")
# Families whose tensors the mapper can change in width: those that name their sizes
# hidden_size / intermediate_size / num_attention_heads and their attention projections as below.
WIDTH_FAMILIES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "vit", "deit")
WIDTH_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads")

_QKV = re.compile(r"attention.*\.(query|key|value|q_proj|k_proj|v_proj|q_lin|k_lin|v_lin)\.(weight|bias)$")
_QUERY = re.compile(r"attention.*\.(query|q_proj|q_lin)\.(weight|bias)$")
_ATTENTION_OUT = re.compile(r"attention.*\.(output\.dense|o_proj|out_proj|out_lin)\.weight$")


@dataclass
class UnitMap:
    """Which source unit each target unit copies (``index``), and how many target units copy
    that source unit (``copies``: weights reading them are divided by it)."""

    index: torch.Tensor
    copies: torch.Tensor

    @property
    def identity(self) -> bool:
        return len(self.index) == len(self.copies) and bool((self.index == torch.arange(len(self.index))).all())


def unit_map(source: int, target: int, where: str, mode: str | None = None) -> UnitMap:
    """Evenly spaced selection (``target`` ≤ ``source``) or copies by an integer factor."""
    mode = mode or ("select" if target <= source else "grow")
    if mode == "select":
        if target > source:
            raise HFTransferError(
                f"model.init: {where} {target} is larger than the source's {source}; weight selection "
                "only narrows (use width: grow, by an integer factor)")
        index = torch.tensor([i * source // target for i in range(target)])
    else:
        if target % source:
            raise HFTransferError(
                f"model.init: {where} {target} is not a whole multiple of the source's {source}; growth "
                "copies every unit an integer number of times")
        index = torch.arange(target) // (target // source)
    return UnitMap(index, torch.bincount(index, minlength=source)[index].to(torch.float32))


def layer_map(source: int, target: int, how: Any) -> list[int]:
    """Which source layer each target layer copies."""
    if isinstance(how, list):
        if len(how) != target or not all(isinstance(i, int) and not isinstance(i, bool) for i in how):
            raise HFTransferError(
                f"model.init.layers: {how} must list {target} layer numbers (one per target layer)")
        if any(not 0 <= i < source for i in how):
            raise HFTransferError(f"model.init.layers: {how} is out of range; the source has layers "
                                  f"0 to {source - 1}")
        if any(b <= a for a, b in zip(how, how[1:])):
            raise HFTransferError(f"model.init.layers: {how} is not increasing; list the source layers "
                                  "in order, each once (use layers: stack to grow deeper)")
        return list(how)
    if how not in LAYER_MAPS:
        raise HFTransferError(f"model.init.layers: {how!r} is not a layer map; valid: "
                              f"{', '.join(LAYER_MAPS)}, or a list of source layer numbers")
    if how == "stack":
        return [i % source for i in range(target)]
    if target > source:
        raise HFTransferError(
            f"model.init: {target} layers from a source of {source} cannot be picked by layers: {how}; "
            "use layers: stack to grow deeper")
    if how == "bottom" or target == 1:
        return list(range(target))
    return [int(i * (source - 1) / (target - 1) + 0.5) for i in range(target)]


@dataclass
class Plan:
    """The target architecture and how it is filled from the source."""

    config: Any
    layers: list[int] | None
    width: str | None
    from_source: bool
    changed: dict[str, Any]


def plan(source_config: Any, init: dict[str, Any], target_config: Any | None = None) -> Plan:
    """The target config (the source's with ``init``'s config fields, or ``target_config`` of the
    same family) and the layer map, after checking everything the transfer needs."""
    options = {k: init[k] for k in OPTIONS if k in init}
    fields = {k: v for k, v in init.items() if k not in OPTIONS}
    width = options.get("width")
    if width is not None and width not in WIDTHS:
        raise HFTransferError(f"model.init.width: {width!r} is not valid; valid: {', '.join(WIDTHS)}")
    weights = options.get("weights", "source")
    if weights not in WEIGHTS:
        raise HFTransferError(f"model.init.weights: {weights!r} is not valid; valid: {', '.join(WEIGHTS)}")
    family = source_config.model_type
    if target_config is not None and target_config.model_type != family:
        raise HFTransferError(
            f"model.config is a {target_config.model_type!r} network but the source is {family!r}: weights "
            f"move between networks of one family (the mapper changes depth in any family with "
            f"num_hidden_layers, and width in {', '.join(WIDTH_FAMILIES)})")
    config = copy.deepcopy(target_config if target_config is not None else source_config)
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    for key, value in fields.items():
        if key not in known:
            raise HFTransferError(
                f"model.init.{key} is neither a field of the {family} config nor an option "
                f"({', '.join(OPTIONS)})")
        setattr(config, key, value)
    changed = {k: getattr(config, k) for k in sorted(known)
               if k not in ("architectures", "id2label", "label2id", "_name_or_path", "transformers_version",
                            "dtype", "torch_dtype")
               and getattr(config, k, None) != getattr(source_config, k, None)}
    source_depth = getattr(source_config, "num_hidden_layers", None)
    target_depth = getattr(config, "num_hidden_layers", None)
    layers = None
    if isinstance(source_depth, int) and isinstance(target_depth, int):
        how = options.get("layers", "uniform" if target_depth <= source_depth else "stack")
        if isinstance(how, list) and "num_hidden_layers" not in fields and target_config is None:
            config.num_hidden_layers = target_depth = len(how)
            changed["num_hidden_layers"] = target_depth
        if target_depth < 1:
            raise HFTransferError(f"model.init.num_hidden_layers must be at least 1, got {target_depth}")
        layers = layer_map(source_depth, target_depth, how)
    elif "layers" in options:
        raise HFTransferError(f"model.init.layers: a {family} config has no num_hidden_layers to map")
    widths = [k for k in WIDTH_FIELDS if k in changed]
    if widths and family not in WIDTH_FAMILIES:
        raise HFTransferError(
            f"model.init: changing {', '.join(widths)} of a {family} network is not something the mapper "
            f"can do (it changes width in {', '.join(WIDTH_FAMILIES)}; depth in any family)")
    if widths and weights == "source":
        _check_widths(source_config, config, width)
    return Plan(config, layers, width, weights == "source", changed)


def _check_widths(source: Any, target: Any, width: str | None) -> None:
    hidden, heads = target.hidden_size, target.num_attention_heads
    if hidden % heads:
        raise HFTransferError(f"model.init: hidden_size {hidden} is not divisible by num_attention_heads "
                              f"{heads}; each head takes an equal share of the width")
    unit_map(source.hidden_size, hidden, "hidden_size", width)
    unit_map(source.intermediate_size, target.intermediate_size, "intermediate_size", width)
    unit_map(source.num_attention_heads, heads, "num_attention_heads", width)
    unit_map(source.hidden_size // source.num_attention_heads, hidden // heads, "the head dimension", width)


class _Roles:
    """The unit map of every size the transfer changes: the residual width, the intermediate
    width, and the heads' dimension (head by head)."""

    def __init__(self, source: Any, target: Any, width: str | None):
        self.source, self.target = source, target
        self.maps: dict[str, UnitMap] = {}
        self.head_scale = 1.0
        if not hasattr(source, "hidden_size") or source.model_type not in WIDTH_FAMILIES:
            return
        self.maps["hidden"] = unit_map(source.hidden_size, target.hidden_size, "hidden_size", width)
        if hasattr(source, "intermediate_size"):
            self.maps["intermediate"] = unit_map(source.intermediate_size, target.intermediate_size,
                                                 "intermediate_size", width)
        heads = unit_map(source.num_attention_heads, target.num_attention_heads, "num_attention_heads", width)
        d_s = source.hidden_size // source.num_attention_heads
        d_t = target.hidden_size // target.num_attention_heads
        dims = unit_map(d_s, d_t, "the head dimension", width)
        index = (heads.index[:, None] * d_s + dims.index[None, :]).reshape(-1)
        copies = (heads.copies[:, None] * dims.copies[None, :]).reshape(-1)
        self.maps["heads"] = UnitMap(index, copies)
        # Each query·key product sums every copied dimension: scale queries back.
        self.head_scale = 1.0 / math.sqrt(float(dims.copies[0])) if d_t > d_s else 1.0

    def of(self, name: str, dim: int, size: int) -> str | None:
        if self.maps.get("heads") is not None and (
                _QKV.search(name) and dim == 0 or _ATTENTION_OUT.search(name) and dim == 1):
            return "heads"
        if "hidden" in self.maps and size == self.source.hidden_size:
            return "hidden"
        if "intermediate" in self.maps and size == self.source.intermediate_size:
            return "intermediate"
        return None


def layer_list(model: nn.Module, depth: int) -> str | None:
    """The dotted path of the model's stack of ``depth`` layers (``bert.encoder.layer``)."""
    found = [name for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) == depth and name]
    return min(found, key=len) if found else None


def transfer(source: nn.Module, target: nn.Module, chosen: Plan, fresh: set[str]) -> list[dict[str, Any]]:
    """Fill ``target`` from ``source`` (in place); one report row per target tensor: how it was
    filled (``copied | selected | grown | new``) and from which source tensor. Source tensors in
    ``fresh`` (a head the source did not have) are not knowledge: their targets stay new."""
    roles = _Roles(source.config, target.config, chosen.width)
    source_tensors = dict(source.state_dict())
    source_stack = target_stack = None
    if chosen.layers is not None:
        source_stack = layer_list(source, source.config.num_hidden_layers)
        target_stack = layer_list(target, target.config.num_hidden_layers)
    kinds = {f"{n}.weight": type(m) for n, m in target.named_modules()
             if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding))}
    report = []
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            origin = name
            if target_stack and name.startswith(target_stack + "."):
                index, rest = name[len(target_stack) + 1:].split(".", 1)
                origin = f"{source_stack}.{chosen.layers[int(index)]}.{rest}"
            row = {"tensor": name, "shape": list(tensor.shape), "from": origin}
            weight = source_tensors.get(origin)
            if not chosen.from_source or weight is None or origin in fresh:
                report.append({**row, "how": "new", "from": None})
                continue
            filled, how = _fill(name, weight, tuple(tensor.shape), roles, kinds.get(name))
            if filled is None:
                report.append({**row, "how": "new", "from": None})
                continue
            tensor.copy_(filled.to(tensor.dtype))
            report.append({**row, "how": how, "source_shape": list(weight.shape)})
    return report


def _width_dims(ndim: int, kind: type | None) -> tuple[int, ...]:
    """The dimensions of a tensor that can stand for a width: both of a linear layer's, a
    convolution's output channels, and otherwise the last (an embedding table's vectors, a norm,
    a bias, ViT's class token and position table); never a vocabulary or a position count."""
    if kind is nn.Linear:
        return (0, 1)
    if kind in (nn.Conv1d, nn.Conv2d):
        return (0,)
    return (ndim - 1,) if ndim else ()


def _fill(name: str, weight: torch.Tensor, shape: tuple[int, ...], roles: _Roles,
          kind: type | None) -> tuple[torch.Tensor | None, str]:
    """The source tensor mapped to ``shape``, and how; None when its sizes do not correspond."""
    if tuple(weight.shape) == shape and (not roles.maps or not weight.is_floating_point()):
        return weight.clone(), "copied"
    if weight.dim() != len(shape) or not weight.is_floating_point():
        return None, "new"
    out, hows, mappable = weight.float(), set(), _width_dims(weight.dim(), kind)
    for dim, size in enumerate(weight.shape):
        role = roles.of(name, dim, size) if dim in mappable else None
        units = roles.maps.get(role) if role else None
        if units is None or units.identity and len(units.index) == size:
            if shape[dim] != size:
                return None, "new"
            continue
        if len(units.index) != shape[dim]:
            return None, "new"
        out = out.index_select(dim, units.index)
        if kind is nn.Linear and dim == 1:  # a layer reading copied units shares their weight among the copies
            out = out / units.copies
        hows.add("grown" if len(units.index) > size else "selected")
    if roles.head_scale != 1.0 and _QUERY.search(name):
        out = out * roles.head_scale
    return out, "grown" if "grown" in hows else "selected" if hows else "copied"


def summary(report: list[dict[str, Any]], chosen: Plan) -> dict[str, Any]:
    """What metrics.json (and the card) record of a transfer."""
    counts: dict[str, int] = {}
    for row in report:
        counts[row["how"]] = counts.get(row["how"], 0) + 1
    return {"changed": chosen.changed, "layers": chosen.layers, "weights": "source" if chosen.from_source
            else "random", "tensors": counts}
