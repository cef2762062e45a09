"""Knowledge fusion of a frozen source model and a trained target model, at their outputs.

The source (a run directory, Hub id or local model: a classifier of the same kind of inputs,
with its own label set) stays frozen; the target (the recipe's model) trains the way another
strategy trains it (``target: full``, ``lora``, ``partial-freeze``, with that strategy's
options). The two meet in a small trained fusion layer:

* ``combine: logits``: target logits + a learned linear map of the source's logits, initialised
  to the identity when the label sets match (the start is the sum of both models' votes) and
  to zero otherwise (the start is the target alone);
* ``combine: features``: the source's pooled features (what its classifying layer receives)
  concatenated with the target's, into a new head whose target part starts as the target's own
  classifier (the start is the target alone).

The source reads the inputs as the target does (same tokenizer or image processor). Its outputs
on each split are computed once and cached (as a distillation teacher's are), so an epoch costs
about what a target-only epoch costs; where training transforms inputs as it reads them (images,
audio) or outputs are per token, the source runs on each batch and the log says why.

The run directory holds the target (plain ``transformers`` model or adapter), ``fusion.safetensors``
(the fusion layer) and ``fusion.json`` (how to combine, and where the source is, with a hash of
its weights). ``evaluate``, ``predict`` and ``push`` use it with the kit, which runs the source
beside the target; a plain ``pipeline()`` of the target alone would not be the fused model, and
the card says so.
"""
from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from .. import rundir
from ..errors import HFTransferError
from ..models import load_config, load_pretrained, public_name, source_location
from ..recipe import ModelSpec, build
from ..registry import get_strategy, register_strategy
from . import frozen
from .base import ExtraModel, Strategy, label_names, trained_for

logger = logging.getLogger("hftransfer")

COMBINES = ("logits", "features")
TARGET_STRATEGIES = ("full", "partial-freeze", "lora")
FUSION_WEIGHTS = "fusion.safetensors"
FUSION_CONFIG = "fusion.json"
SOURCE_OUTPUTS = "source_outputs"


class FusedModel(nn.Module):
    """The target model and the fusion layer (both trained and saved), with the frozen source
    beside them (neither a submodule nor in the state dict, so never optimised or saved)."""

    accepts_loss_kwargs = False

    def __init__(self, target: nn.Module, source: nn.Module, combine: str, fusion: nn.Linear,
                 head_prefixes: tuple[str, ...]):
        super().__init__()
        self.target = target
        self.fusion = fusion
        self.combine = combine
        object.__setattr__(self, "source", source)
        plain = target.get_base_model() if hasattr(target, "get_base_model") else target
        self.config = plain.config  # the Trainer reads model.config
        self.num_labels = plain.config.num_labels
        self._target_tap = frozen.FeatureTap(frozen.final_layer(target, head_prefixes, self.num_labels)) \
            if combine == "features" else None
        self._source_tap = frozen.FeatureTap(frozen.final_layer(source, head_prefixes, source.config.num_labels)) \
            if combine == "features" else None
        # Inspectors of ``forward`` (the Trainer keeps only the columns it names) see the target's
        # inputs, plus the labels and the source's cached outputs; the class's own signature
        # (``labels`` first) tells the Trainer where the labels are.
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                  for name, p in inspect.signature(plain.forward).parameters.items()
                  if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
                  and name != "labels"]
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in ("labels", SOURCE_OUTPUTS)]
        signed = functools.partial(FusedModel.forward, self)
        signed.__signature__ = inspect.Signature(params)
        object.__setattr__(self, "forward", signed)

    def source_outputs(self, **inputs: Any) -> torch.Tensor:
        """The frozen source's outputs for a batch (when they were not cached)."""
        self.source.eval()
        device = next(iter(inputs.values())).device
        if next(self.source.parameters()).device != device:  # it is no submodule: moved here
            self.source.to(device)
        with torch.no_grad():
            logits = self.source(**inputs).logits
            return self._source_tap.take() if self.combine == "features" else logits

    def forward(self, labels: torch.Tensor | None = None, source_outputs: torch.Tensor | None = None,
                **inputs: Any) -> SequenceClassifierOutput:
        out = self.target(**inputs)
        if source_outputs is None:
            source_outputs = self.source_outputs(**inputs)
        source_outputs = source_outputs.to(out.logits.dtype)
        if self.combine == "logits":
            logits = out.logits + self.fusion(source_outputs)
        else:
            logits = self.fusion(torch.cat([self._target_tap.take(), source_outputs], dim=-1))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return SequenceClassifierOutput(loss=loss, logits=logits)


@register_strategy("fusion")
class Fusion(Strategy):
    """A frozen source model and a trained target model meet in a trained fusion layer (source
    logits mapped into the target's, or both models' features into one head). Options:
    ``source``, ``combine`` (logits | features), ``target`` (how the target trains: full,
    partial-freeze or lora, with that strategy's options) and ``cache``."""

    description = "a frozen source model's outputs fused with a trained target model's (logits or features)"
    defaults = Strategy.defaults

    @dataclass
    class Options:
        source: str | None = None
        """The frozen source: a run directory of the kit, a Hub id or a local model directory."""
        combine: str = "logits"
        """``logits`` (a learned map of the source's logits added to the target's) or ``features``."""
        target: str | dict[str, Any] = "full"
        """How the target trains: a strategy name, or ``{name: lora, peft: {r: 8}}`` with its options."""
        cache: bool = True
        """Keep the source's outputs on disk (``$HFTRANSFER_CACHE``), keyed by its weights and inputs."""

        def __post_init__(self) -> None:
            if not isinstance(self.source, str) or not self.source.strip():
                raise HFTransferError(
                    "strategy.source is missing: the frozen model to fuse with (a run directory, a Hub id "
                    "or a local classifier), e.g. strategy.source=runs/sst2-full")
            if self.combine not in COMBINES:
                raise HFTransferError(f"strategy.combine must be one of {', '.join(COMBINES)}, got {self.combine!r}")

    def __init__(self, options: Any, task: Any):
        super().__init__(options, task)
        name, inner_options = target_section(options.target)
        self.inner: Strategy = get_strategy(name)(inner_options, task)
        self.defaults = self.inner.defaults
        self.source_spec = ModelSpec(name_or_path=options.source)
        self.source_config: Any = None
        self.online: str | None = None  # why the source runs on each batch, when it does
        self.fusion: nn.Linear | None = None

    @classmethod
    def validate_recipe(cls, recipe):
        name, inner_options = target_section(recipe.strategy_options.target)
        view = copy.copy(recipe)
        view.strategy = {**recipe.strategy_options.target, "name": name} if isinstance(
            recipe.strategy_options.target, dict) else {"name": name}
        view.strategy_options = inner_options
        get_strategy(name).validate_recipe(view)

    # --- checks -------------------------------------------------------------------------------
    def check_model(self, config):
        self.inner.check_model(config)
        shown = self.options.source
        location = source_location(self.source_spec, "strategy.source")  # named so in its errors
        self.source_config = load_config(location, self.source_spec)
        if not trained_for(self.task, self.source_config):
            archs = getattr(self.source_config, "architectures", None) or []
            raise HFTransferError(
                f"strategy.source {shown!r} is not a {self.task.name} model (its architectures: "
                f"{', '.join(archs) or 'none given'}); a fusion source is a trained classifier of the same "
                f"kind of inputs and outputs as the target ({self.task.auto_class_name})")
        if self.options.combine == "logits" and label_names(self.source_config) is None:
            raise HFTransferError(f"strategy.source {shown!r} has no label names; combine: logits maps its labels")

    def check_labels(self, labels):
        self.inner.check_labels(labels)

    def extra_models(self):
        return {"source": ExtraModel(self.source_spec)}

    # --- the model ----------------------------------------------------------------------------
    def build_model(self, spec, labels):
        model = self.inner.build_model(spec, labels)
        self.new_params = self.inner.new_params
        self.transfer_report, self.transfer_summary = self.inner.transfer_report, self.inner.transfer_summary
        return model

    def prepare(self, model):
        target = self.inner.prepare(model)
        source = self.extras["source"]
        labels = len(self._target_labels(target))
        source_labels = label_names(source.config) or []
        if self.options.combine == "logits":
            fusion = nn.Linear(source.config.num_labels, labels)
            with torch.no_grad():
                fusion.bias.zero_()
                same = source_labels == self._target_labels(target)
                fusion.weight.copy_(torch.eye(labels) if same else torch.zeros(labels, source.config.num_labels))
        else:
            own = frozen.final_layer(target, self.task.head_prefixes, labels)
            width_s = frozen.final_layer(source, self.task.head_prefixes, source.config.num_labels).in_features
            fusion = nn.Linear(own.in_features + width_s, labels)
            with torch.no_grad():  # the start: the target's own head, the source's features unused
                fusion.weight.zero_()
                fusion.weight[:, :own.in_features].copy_(own.weight)
                fusion.bias.copy_(own.bias if own.bias is not None else torch.zeros(labels))
            own.requires_grad_(False)  # the fused head replaces it
        self.fusion = fusion
        return FusedModel(target, source, self.options.combine, fusion, self.task.head_prefixes)

    @staticmethod
    def _target_labels(target) -> list[str]:
        plain = target.get_base_model() if hasattr(target, "get_base_model") else target
        return [plain.config.id2label[i] for i in sorted(plain.config.id2label)]

    def parameter_groups(self, model):
        groups = self.inner.parameter_groups(model.target)
        fused = [(f"fusion.{n}", p) for n, p in model.fusion.named_parameters()]
        if groups is None:
            groups = [([(f"target.{n}", p) for n, p in model.target.named_parameters() if p.requires_grad], 1.0)]
        else:
            groups = [([(f"target.{n}", p) for n, p in named], scale) for named, scale in groups]
        return groups + [(fused, 1.0)]

    def extra_loss(self, model, inputs, outputs):
        return self.inner.extra_loss(model.target, inputs, outputs)

    def callbacks(self):
        return self.inner.callbacks()

    def count_parameters(self, model):
        counts = dict(self.inner.count_parameters(model.target))
        extra = sum(p.numel() for p in model.fusion.parameters())
        counts["trainable"] += extra
        counts["total"] += extra
        counts["source (frozen, not saved)"] = sum(p.numel() for p in model.source.parameters())
        return counts

    # --- the source's outputs -----------------------------------------------------------------
    def prepare_data(self, train_ds, evals, collator, splits, processor):
        theirs = type(self.task)(self.task.options).load_processor(
            source_location(self.source_spec), self.source_spec, self.source_config)
        if not frozen.same_inputs(theirs, processor):
            raise HFTransferError(
                f"strategy.source {self.options.source!r} reads its inputs with another processor "
                "(tokenizer or image processor) than the target; a fusion source runs on the target's "
                "inputs: use a source and target that share it")
        reason = self._online_reason(train_ds)
        if reason is not None:
            self.online = reason
            logger.info("fusion: the source runs on every batch: %s", reason)
            return train_ds, evals, collator
        source = self.extras["source"]
        out = self.options.combine
        train_ds = train_ds.add_column(SOURCE_OUTPUTS, self._outputs(source, train_ds, collator, "train"))
        evals = {name: ds.add_column(SOURCE_OUTPUTS, self._outputs(source, ds, collator, name))
                 for name, ds in evals.items()}
        logger.info("fusion: the source's %s are computed once and reused every epoch", out)
        return train_ds, evals, SourceCollator(collator)

    def _online_reason(self, train_ds) -> str | None:
        if self.task.features == "per-token":
            return "outputs are per token"
        if getattr(train_ds, "format", {}).get("type") == "custom":
            return f"{self.task.name} inputs are transformed (augmented) as they are read"
        return None

    def _outputs(self, source, ds, collator, split: str) -> list[Any]:
        return frozen.outputs(source, ds, collator, what=f"fusion: the source's {self.options.combine} for {split}",
                              per_word=False, output=self.options.combine, head_prefixes=self.task.head_prefixes,
                              use_cache=self.options.cache, key=f"fusion|{self.task.name}")

    def report(self, model):
        out = dict(self.inner.report(model.target))
        out.update({"source": public_name(self.source_spec), "combine": self.options.combine,
                    "target_strategy": self.inner.name,
                    "source_outputs": f"computed on every batch ({self.online})" if self.online
                    else "computed once" + (" and cached" if self.options.cache else "")})
        return out

    # --- saving and loading -------------------------------------------------------------------
    def save(self, model, directory: Path) -> None:
        self.inner.save(model.target, directory)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.fusion.state_dict().items()},
                  str(directory / FUSION_WEIGHTS))
        location = source_location(self.source_spec)
        local = Path(os.path.expanduser(location)).is_dir()
        rundir.write_json(directory / FUSION_CONFIG, {
            "combine": self.options.combine,
            "source": os.path.realpath(os.path.expanduser(location)) if local else location,
            "source_name": public_name(self.source_spec),
            "source_weights_sha256": rundir.model_files_digest(Path(os.path.expanduser(location))) if local else None,
            "target_strategy": self.inner.name,
        })

    def load_trained(self, run_dir: Path, spec: ModelSpec):
        run_dir = Path(run_dir)
        manifest = rundir.read_json(run_dir / FUSION_CONFIG)
        if not isinstance(manifest, dict) or manifest.get("combine") not in COMBINES or not isinstance(
                manifest.get("source"), str) or not (run_dir / FUSION_WEIGHTS).is_file():
            raise HFTransferError(f"{str(run_dir)!r} is a fusion run without its {FUSION_CONFIG} and "
                                  f"{FUSION_WEIGHTS}; retrain it or restore them")
        where = manifest["source"]
        if manifest.get("source_weights_sha256"):
            path = Path(where)
            if not path.is_dir():
                raise HFTransferError(
                    f"the fusion source {where!r} of {str(run_dir)!r} is not there any more; a fusion run "
                    "runs its source beside its target: put it back, or retrain the run")
            if rundir.model_files_digest(path) != manifest["source_weights_sha256"]:
                raise HFTransferError(
                    f"the fusion source {where!r} changed after {str(run_dir)!r} was trained; retrain the run")
        target = self.inner.load_trained(run_dir, spec)
        source_spec = ModelSpec(name_or_path=where)
        source = load_pretrained(self.task.auto_class, source_location(source_spec), source_spec).eval()
        source.requires_grad_(False)
        state = load_file(str(run_dir / FUSION_WEIGHTS))
        fusion = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        fusion.load_state_dict(state)
        return FusedModel(target, source, manifest["combine"], fusion, self.task.head_prefixes).eval()


class SourceCollator:
    """The task's collator, with the cached source outputs stacked beside the batch."""

    def __init__(self, collator: Any):
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if SOURCE_OUTPUTS not in features[0]:
            return self.collator(features)
        rows = [torch.as_tensor(np.asarray(f.pop(SOURCE_OUTPUTS), dtype=np.float32)) for f in features]
        batch = self.collator(features)
        batch[SOURCE_OUTPUTS] = torch.stack(rows)
        return batch


def target_section(target: str | dict[str, Any]) -> tuple[str, Any]:
    """``strategy.target`` as (strategy name, its options)."""
    section = {"name": target} if isinstance(target, str) else dict(target)
    name = section.pop("name", "full")
    if name not in TARGET_STRATEGIES:
        raise HFTransferError(
            f"strategy.target: {name!r} cannot train a fusion target; use one of {', '.join(TARGET_STRATEGIES)}")
    return name, build(get_strategy(name).Options, section, "strategy.target")
