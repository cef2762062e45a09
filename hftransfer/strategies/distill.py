"""Knowledge distillation: a trained teacher teaches the student (the model being trained)
through its outputs (Hinton et al., 2015)::

    loss = (1 − α)·CE + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))

per example for classification and per labelled word for token classification, optionally
with the hidden states of chosen layers matched (MSE, through a learned projection when the
widths differ; the projection is not part of the student and is not saved).

The teacher reads the inputs through its own processor (its tokenizer may differ from the
student's): outputs are aligned per example, and per word for token classification. They are
computed once and cached on disk, keyed by the teacher's weights and its inputs, so later
epochs and reruns never run it. Where training transforms inputs as it reads them (images and
audio are augmented) or hidden states are matched token by token, the teacher instead runs on
each batch, on the student's inputs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HFTransferError
from ..models import load_config, public_name, source_location
from ..recipe import ModelSpec
from ..registry import register_strategy
from . import frozen
from .base import ExtraModel, label_names, trained_for
from .finetune import FullFineTune

logger = logging.getLogger("hftransfer")

TEACHER_LOGITS = "teacher_logits"
TEACHER_WORDS = "teacher_words"
TEACHER_BATCH = 64


@dataclass
class HiddenMatch:
    """``hidden: {layers: [[student, teacher], ...], weight: β}``: β·MSE between the hidden
    states of each pair of layers (0 = the embeddings' output, L = the last layer's)."""

    layers: list[Any]
    weight: float = 1.0

    def __post_init__(self) -> None:
        pairs = self.layers if isinstance(self.layers, list) else None
        if not pairs or not all(isinstance(p, list) and len(p) == 2 and all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in p) for p in pairs):
            raise HFTransferError(
                f"strategy.hidden.layers must list [student_layer, teacher_layer] pairs of layer numbers "
                f"(0 = the embeddings), e.g. [[3, 6]]; got {self.layers!r}")
        if self.weight < 0:
            raise HFTransferError(f"strategy.hidden.weight must be >= 0, got {self.weight}")


@register_strategy("distill")
class Distill(FullFineTune):
    """The student (the source model, often reshaped by ``model.init``) learns the labels and a
    teacher's softened outputs. Options: ``teacher`` (a run directory, Hub id or local model of
    the same task and labels), ``alpha``, ``temperature``, ``hidden`` (hidden-state matching),
    ``cache`` (keep the teacher's outputs on disk), and those of ``full``."""

    description = "the student learns the labels and a teacher's softened outputs (knowledge distillation)"
    defaults = FullFineTune.defaults
    reads_unlabeled = True
    batch_extras = (TEACHER_LOGITS, TEACHER_WORDS)

    @dataclass
    class Options(FullFineTune.Options):
        teacher: str | None = None
        """The teacher: a run directory of the kit, a Hub id or a local model directory."""
        alpha: float = 0.5
        """The weight of the teacher's term (0 = labels only, 1 = teacher only)."""
        temperature: float = 2.0
        """T: both distributions are softened by it; the term is scaled by T²."""
        hidden: HiddenMatch | None = None
        cache: bool = True
        """Keep the teacher's outputs on disk (``$HFTRANSFER_CACHE``), keyed by its weights and inputs."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if not isinstance(self.teacher, str) or not self.teacher.strip():
                raise HFTransferError(
                    "strategy.teacher is missing: a run directory, a Hub id or a local model of the same "
                    "task and label set (e.g. strategy.teacher=runs/sst2-full)")
            if not 0 <= self.alpha <= 1:
                raise HFTransferError(f"strategy.alpha must be in [0, 1], got {self.alpha}")
            if not self.temperature > 0:
                raise HFTransferError(f"strategy.temperature must be above 0, got {self.temperature}")

    def __init__(self, options: Any, task: Any):
        super().__init__(options, task)
        self.teacher_spec = ModelSpec(name_or_path=options.teacher)
        self.teacher_config: Any = None
        self.online: str | None = None  # why the teacher runs on each batch, when it does
        self.projections: torch.nn.ModuleList | None = None
        self.counts: dict[str, int] = {}

    @classmethod
    def validate_recipe(cls, recipe):
        if recipe.task_type == "token-classification" and recipe.data.unlabeled is not None:
            raise HFTransferError(
                "data.unlabeled: a token-classification teacher labels words of labelled sentences only "
                "in this version; remove data.unlabeled")

    # --- checks -------------------------------------------------------------------------------
    def check_model(self, config):
        shown = self.options.teacher
        location = source_location(self.teacher_spec, "strategy.teacher")  # named so in its errors
        self.teacher_config = load_config(location, self.teacher_spec)
        if not trained_for(self.task, self.teacher_config):
            archs = getattr(self.teacher_config, "architectures", None) or []
            raise HFTransferError(
                f"strategy.teacher {shown!r} is not a trained {self.task.name} model (its architectures: "
                f"{', '.join(archs) or 'none given'}); the teacher must be trained for the student's task "
                "and labels")
        if self.options.hidden is not None:
            depth_s, depth_t = config.num_hidden_layers, self.teacher_config.num_hidden_layers
            for s, t in self.options.hidden.layers:
                if s > depth_s or t > depth_t:
                    raise HFTransferError(
                        f"strategy.hidden.layers: [{s}, {t}] is out of range; the student has layers 0 to "
                        f"{depth_s}, the teacher 0 to {depth_t} (0 = the embeddings)")

    def check_labels(self, labels):
        theirs = label_names(self.teacher_config)
        if theirs != list(labels):
            raise HFTransferError(
                f"the teacher {self.options.teacher!r} predicts labels {theirs} but the student's data has "
                f"{list(labels)}; a teacher teaches the same label set, in the same order")

    def extra_models(self):
        return {"teacher": ExtraModel(self.teacher_spec)}

    # --- the teacher's outputs ----------------------------------------------------------------
    def prepare(self, model):
        model = super().prepare(model)
        hidden = self.options.hidden
        if hidden is not None:
            width_s = model.config.hidden_size
            width_t = self.teacher_config.hidden_size
            # Student widths that differ from the teacher's are projected onto it (trained with
            # the student, never saved with it).
            self.projections = torch.nn.ModuleList(
                torch.nn.Linear(width_s, width_t) if width_s != width_t else torch.nn.Identity()
                for _ in hidden.layers)
            self.extras["projections"] = self.projections
        return model

    def prepare_data(self, train_ds, evals, collator, splits, processor):
        teacher = self.extras["teacher"]
        reason = self._online_reason(train_ds)
        if reason is not None:
            self.online = reason
            self._check_same_inputs(processor)
            logger.info("distill: the teacher runs on every batch: %s", reason)
            if splits.unlabeled is not None:
                unlabeled = self.task.preprocess(splits.unlabeled, processor, splits.labels, training=True)
                train_ds = torch.utils.data.ConcatDataset([train_ds, _Unlabelled(unlabeled)])
            return train_ds, evals, collator
        teacher_task = type(self.task)(self.task.options)  # its processor, its position limit
        teacher_processor = teacher_task.load_processor(
            source_location(self.teacher_spec), self.teacher_spec, self.teacher_config)
        logits = self._outputs(teacher, teacher_task, teacher_task.preprocess(
            splits.train, teacher_processor, splits.labels), teacher_processor, "train")
        train_ds = train_ds.add_column(TEACHER_LOGITS, logits)
        if splits.unlabeled is not None:
            unlabeled = self._unlabeled(splits, processor)
            extra = self._outputs(teacher, teacher_task, teacher_task.preprocess(
                splits.unlabeled, teacher_processor, splits.labels), teacher_processor, "unlabeled")
            train_ds = _concatenate(train_ds, unlabeled.add_column(TEACHER_LOGITS, extra))
        return train_ds, evals, TeacherCollator(collator, per_word=self.per_word)

    @property
    def per_word(self) -> bool:
        return self.task.features == "per-token"

    def _online_reason(self, train_ds) -> str | None:
        if self.options.hidden is not None:
            return "hidden states are matched token by token"
        if getattr(train_ds, "format", {}).get("type") == "custom":
            return f"{self.task.name} inputs are transformed (augmented) as they are read"
        return None

    def _check_same_inputs(self, processor) -> None:
        """A teacher that runs on the student's batches must read inputs as the student does."""
        teacher_task = type(self.task)(self.task.options)
        theirs = teacher_task.load_processor(source_location(self.teacher_spec), self.teacher_spec,
                                             self.teacher_config)
        if not frozen.same_inputs(theirs, processor):
            raise HFTransferError(
                f"the teacher runs on the student's own inputs ({self.online}), so it must process inputs "
                f"as the student does, but the processor of {self.options.teacher!r} differs from the "
                "student's; use a teacher and student that share it")

    def _unlabeled(self, splits, processor):
        """The transfer set as student inputs, its labels marked as absent (-100)."""
        ds = self.task.preprocess(splits.unlabeled, processor, splits.labels)
        return ds.add_column("labels", [-100] * len(ds)) if "labels" not in ds.column_names else ds

    def _outputs(self, teacher, teacher_task, inputs, processor, split: str) -> list[Any]:
        """The teacher's logits for every row of ``inputs`` (per labelled word for token tasks),
        from the cache or computed (and cached)."""
        return frozen.outputs(teacher, inputs, teacher_task.collator(processor),
                              what=f"distill: the teacher's outputs for {split}", per_word=self.per_word,
                              use_cache=self.options.cache, key=self.task.name)

    # --- the loss -------------------------------------------------------------------------------
    def training_loss(self, model, inputs, outputs, task_loss):
        o = self.options
        labels = inputs.get("labels")
        student = outputs.logits
        teacher_out = None
        if TEACHER_LOGITS in inputs:
            teacher_logits = inputs[TEACHER_LOGITS].to(student.dtype)
        else:
            with torch.no_grad():
                model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", *self.batch_extras)}
                teacher_out = self.extras["teacher"](**model_inputs, output_hidden_states=o.hidden is not None)
            teacher_logits = teacher_out.logits.to(student.dtype)
        if self.per_word:
            student, teacher_logits = _words(student, labels, teacher_logits, inputs.get(TEACHER_WORDS))
        t = o.temperature
        kd = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                      log_target=True, reduction="batchmean") * t * t if len(student) else student.sum() * 0
        # An all-unlabelled batch (transfer set) has no label term (the model's own is NaN there).
        labelled = labels is not None and bool((labels != -100).any())
        ce = task_loss if labelled else kd * 0
        loss = (1 - o.alpha) * ce + o.alpha * kd
        if o.hidden is not None:
            loss = loss + o.hidden.weight * self._hidden_loss(model, inputs, outputs, teacher_out)
        extra = self.extra_loss(model, inputs, outputs)  # L2-SP, when asked for
        return loss if extra is None else loss + extra

    def _hidden_loss(self, model, inputs, outputs, teacher_out) -> torch.Tensor:
        hidden_s = outputs.hidden_states
        if hidden_s is None:  # the model was called without them: run the student's encoder again
            model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", *self.batch_extras)}
            hidden_s = model(**model_inputs, output_hidden_states=True).hidden_states
        mask = inputs.get("attention_mask")
        total = 0.0
        for (s, t), project in zip(self.options.hidden.layers, self.projections):
            diff = project(hidden_s[s]) - teacher_out.hidden_states[t]
            if mask is not None and diff.dim() == 3 and mask.shape == diff.shape[:2]:
                diff = diff[mask.bool()]
            total = total + (diff ** 2).mean()
        return total / len(self.options.hidden.layers)

    def parameter_groups(self, model):
        groups = super().parameter_groups(model)
        if self.projections is None or not any(True for _ in self.projections.parameters()):
            return groups
        if groups is None:
            groups = [([(n, p) for n, p in model.named_parameters() if p.requires_grad], 1.0)]
        return groups + [([(f"distill.projection.{n}", p) for n, p in self.projections.named_parameters()], 1.0)]

    def report(self, model):
        out = dict(super().report(model))
        out.update({"teacher": public_name(self.teacher_spec), "alpha": self.options.alpha,
                    "temperature": self.options.temperature,
                    "teacher_outputs": f"computed on every batch ({self.online})" if self.online
                    else "computed once" + (" and cached" if self.options.cache else "")})
        return out


class _Unlabelled(torch.utils.data.Dataset):
    """Transfer-set inputs whose transform runs as they are read, their label marked absent."""

    def __init__(self, ds: Any):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.ds[i], "labels": -100}


class TeacherCollator:
    """The task's collator, with the teacher's logits batched beside it: [batch, labels], or for
    token tasks [batch, words, labels] padded, with ``teacher_words`` counting the real words."""

    def __init__(self, collator: Any, per_word: bool):
        self.collator, self.per_word = collator, per_word

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if TEACHER_LOGITS not in features[0]:  # evaluation sets carry no teacher outputs
            return self.collator(features)
        logits = [torch.as_tensor(np.asarray(f.pop(TEACHER_LOGITS), dtype=np.float32)) for f in features]
        batch = self.collator(features)
        if not self.per_word:
            batch[TEACHER_LOGITS] = torch.stack(logits)
            return batch
        words = torch.tensor([len(x) for x in logits])
        padded = torch.zeros(len(logits), max(int(words.max()), 1), logits[0].shape[-1] if logits[0].dim() == 2 else 1)
        for i, x in enumerate(logits):
            if len(x):
                padded[i, :len(x)] = x
        batch[TEACHER_LOGITS], batch[TEACHER_WORDS] = padded, words
        return batch


def _words(student: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor,
           words: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's and the teacher's logits of every labelled word, aligned word by word.
    Cached teacher logits hold one row per word; a tokenizer that truncates earlier than the
    other leaves the later words of that sentence out of the term."""
    rows_s, rows_t = [], []
    for i in range(len(student)):
        at = (labels[i] != -100).nonzero(as_tuple=True)[0]
        if words is None:  # the teacher ran on the student's own tokens
            rows_s.append(student[i, at])
            rows_t.append(teacher[i, at])
            continue
        n = min(len(at), int(words[i]))
        rows_s.append(student[i, at[:n]])
        rows_t.append(teacher[i, :n])
    return torch.cat(rows_s), torch.cat(rows_t)


def _concatenate(train_ds, extra):
    import datasets

    extra = extra.cast(train_ds.features) if set(extra.column_names) == set(train_ds.column_names) else extra
    try:
        return datasets.concatenate_datasets([train_ds, extra.select_columns(train_ds.column_names)])
    except ValueError as exc:
        raise HFTransferError(f"data.unlabeled cannot join the training set ({exc})") from None
