"""Masked language modelling on unlabelled text: domain- and task-adaptive pretraining.

The run's model is a masked-LM whose encoder a later recipe fine-tunes (``model.name_or_path:
RUN_DIR`` of a classification recipe loads the encoder and adds a fresh head). Training masks
anew every batch (``DataCollatorForLanguageModeling``: 15 % of the tokens, 80 % of them
``[MASK]``, 10 % a random token, 10 % unchanged); validation and test are masked once with a
fixed seed, so every evaluation (before training, after it, ``hftransfer evaluate``) scores the
same positions and the perplexities compare. A source without a masked-LM head (a plain
``BertModel``) gets one, its decoder tied to the word embeddings, and the new head warms up on
the frozen encoder before the encoder trains.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..data import read_files, read_text, resolve_files
from ..errors import HFTransferError
from ..models import load_text_processor, position_limit, public_name
from ..registry import register_task
from .base import Task, check_columns, max_text_length, text_problem

logger = logging.getLogger("hftransfer")

EVAL_MASK_SEED = 0
"""Held-out splits are masked once with this seed: the same positions in every run and every
evaluation, whatever train.seed is, so runs and before/after numbers compare."""
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")
MASKING_KEYS = ("special_tokens_mask", "offset_mapping")
STRATEGIES = ("full", "partial-freeze", "scratch")
"""What adaptive pretraining can use: the whole model trains (or its top), from the source or
from random weights."""


@register_task("masked-lm")
class MaskedLM(Task):
    """Masked-LM pretraining (fill-mask) on unlabelled text, to adapt an encoder to a domain.

    The texts are ``text_column`` of csv/json/jsonl/parquet files, or ``.txt`` files of one text a
    line (blank lines skipped)."""

    auto_class_name = "AutoModelForMaskedLM"
    pipeline_tag = "fill-mask"
    peft_task_type = None
    head_prefixes = ("cls", "lm_head", "predictions", "generator_predictions", "generator_lm_head",
                     "vocab_transform", "vocab_layer_norm", "vocab_projector", "head")
    # The collator reads special_tokens_mask / offset_mapping (not model inputs); evaluation
    # batches hold vocabulary-sized logits, so they stay small; the head warm-up leaves the
    # encoder without gradients for a while (DDP must expect that).
    training_defaults: ClassVar[dict[str, Any]] = {
        "remove_unused_columns": False, "label_names": ["labels"], "per_device_eval_batch_size": 16,
        "ddp_find_unused_parameters": True}
    primary_metric = "perplexity"
    strategies = STRATEGIES
    evaluates_before_training = True
    position_limit: int | None = None

    @dataclass
    class Options:
        text_column: str = "text"
        mlm_probability: float = 0.15
        """The share of tokens masked (BERT: 0.15); 80 % of them become [MASK], 10 % a random token."""
        whole_word_mask: bool = False
        """Mask every sub-token of a chosen word together (then all of them become [MASK])."""
        max_length: int | None = None
        """Truncate texts to this many tokens (default: the model's limit, at most 512)."""
        head_warmup_steps: int | None = None
        """Steps that train a new masked-LM head alone on the frozen encoder (default: the first
        10 % of the training steps; 0: none). Only when the source has no masked-LM head."""
        head_warmup_epochs: float | None = None
        """The same, in epochs (set one of the two)."""

        def __post_init__(self) -> None:
            check_columns(self, "text_column")
            if not 0 < self.mlm_probability < 1:
                raise HFTransferError(
                    f"task.mlm_probability must be between 0 and 1 (BERT: 0.15), got {self.mlm_probability}")
            if self.max_length is not None and self.max_length < 3:
                raise HFTransferError(f"task.max_length must be at least 3, got {self.max_length}")
            if self.head_warmup_steps is not None and self.head_warmup_epochs is not None:
                raise HFTransferError("task.head_warmup_steps and task.head_warmup_epochs are both set; "
                                      "set one of them")
            for key in ("head_warmup_steps", "head_warmup_epochs"):
                if (getattr(self, key) or 0) < 0:
                    raise HFTransferError(f"task.{key} must be >= 0, got {getattr(self, key)}")

    # --- data -------------------------------------------------------------------------------
    def read_split(self, entry, where, declared_format):
        """A ``.txt`` file (or a glob of them): one text a line; else a data file's text column."""
        import datasets

        if declared_format is None and str(entry).lower().endswith(".txt"):
            lines = []
            for path in resolve_files(str(entry), where, (".txt",)):
                lines += [line.strip() for line in read_text(path, where).splitlines() if line.strip()]
            return self.check_split(datasets.Dataset.from_dict({self.options.text_column: lines}), where)
        return read_files(entry, where, declared_format, check=lambda ds, w, path: self.check_split(ds, w))

    def check_split(self, ds, where):
        column = self.require_column(ds, "text_column", where)
        if len(ds) == 0:
            raise HFTransferError(f"{where}: no texts")
        for row, value in enumerate(ds[column], start=1):
            problem = text_problem(value)
            if problem:
                raise HFTransferError(f"{where}: row {row} has {problem} in column {column!r}; "
                                      "fill it in or remove the row")
        return ds.select_columns([column])

    def label_names(self, train, where):
        return []  # unlabelled text: the tokens are the targets

    def model_kwargs(self, labels):
        return {}

    def check_model(self, config, spec) -> None:
        """A text model with a vocabulary and a masked-LM class (not an image or audio model)."""
        from transformers import AutoModelForMaskedLM

        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        known = type(config) in AutoModelForMaskedLM._model_mapping
        if not known or not getattr(text, "vocab_size", None) or getattr(config, "model_type", "") in AUDIO_TYPES:
            raise HFTransferError(
                f"model {public_name(spec)!r} is a {getattr(config, 'model_type', '?')} model, not a text "
                "encoder with a vocabulary; task masked-lm needs one with a masked-LM class (BERT, "
                "RoBERTa, DistilBERT, DeBERTa, ModernBERT, ...)")

    def load_processor(self, location, spec, config):
        tokenizer = load_text_processor(location, spec, config)
        if tokenizer.mask_token is None:
            raise HFTransferError(f"model {spec.name_or_path!r}: its tokenizer has no mask token; task "
                                  "masked-lm needs one (BERT-style tokenizers have [MASK])")
        if self.options.whole_word_mask and not tokenizer.is_fast:
            raise HFTransferError("task.whole_word_mask needs a fast tokenizer (word boundaries come from "
                                  "its offsets); set task.whole_word_mask=false")
        self.position_limit = position_limit(config)
        self._max_length(tokenizer)
        return tokenizer

    def _max_length(self, tokenizer) -> int:
        return max_text_length(self.options.max_length, tokenizer, self.position_limit)

    def encode_splits(self, splits, processor, augment):
        """Training texts stay unmasked (the collator masks every batch anew); held-out ones are
        masked once, here."""
        train = self.preprocess(splits.train, processor, splits.labels, training=True)
        evals = {name: self.preprocess(ds, processor, splits.labels)
                 for name, ds in (("validation", splits.validation), ("test", splits.test)) if ds is not None}
        return train, evals

    def preprocess(self, ds, processor, labels, training=False):
        """Token ids (+ what masking needs); ``training=False``: masked once, with labels."""
        column = self.options.text_column
        words = self.options.whole_word_mask

        def encode(batch):
            enc = processor(batch[column], truncation=True, max_length=self._max_length(processor),
                            return_special_tokens_mask=True, return_offsets_mapping=words)
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        key = f"{ds._fingerprint}|{processor.name_or_path}|{self.options}|{training}"
        out = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="Tokenizing",
                     new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16])
        return out if training else self._mask_once(out, processor)

    def _mask_once(self, ds, processor):
        import datasets
        import torch

        masker = self._masker(processor, seed=EVAL_MASK_SEED)
        rows: dict[str, list[Any]] = {}
        for start in range(0, len(ds), 256):
            part = ds.select(range(start, min(start + 256, len(ds))))
            lengths = part["length"]
            batch = masker([{k: r[k] for k in (*MODEL_KEYS, *MASKING_KEYS) if k in r} for r in part])
            right = processor.padding_side == "right"
            for i, n in enumerate(lengths):
                cut = slice(0, n) if right else slice(batch["input_ids"].shape[1] - n, None)
                for key, value in batch.items():
                    if isinstance(value, torch.Tensor):
                        rows.setdefault(key, []).append(value[i, cut].tolist())
            rows.setdefault("length", []).extend(lengths)
        return datasets.Dataset.from_dict(rows)

    def _masker(self, processor, seed: int | None = None):
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(processor, mlm_probability=self.options.mlm_probability,
                                               whole_word_mask=self.options.whole_word_mask, seed=seed)

    def collator(self, processor):
        return MaskedLMCollator(processor, self._masker(processor))

    # --- training and evaluation ------------------------------------------------------------
    def callbacks(self, strategy) -> list:
        from transformers import TrainerCallback

        warmup = HeadWarmup(self.options, strategy, self)

        class HeadWarmupCallback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                warmup.begin(state, model)

            def on_step_begin(self, args, state, control, **kwargs):
                warmup._update(state)

        return [HeadWarmupCallback()]

    def preprocess_logits(self):
        """Per example: (sum of the masked tokens' NLL, their count) instead of the logits, so
        evaluation never gathers vocabulary-sized logits over a split."""
        import torch

        def token_nll(logits, labels):
            logits = logits[0] if isinstance(logits, tuple) else logits
            nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels,
                                                    ignore_index=-100, reduction="none")
            counted = labels != -100
            return torch.stack([(nll * counted).sum(1), counted.sum(1).float()], dim=1)

        return token_nll

    def compute_metrics(self, labels):
        def compute(eval_pred):
            sums = np.asarray(eval_pred.predictions, dtype=np.float64).reshape(-1, 2)
            count = sums[:, 1].sum()
            if count == 0:
                raise HFTransferError("the held-out texts are too short to mask any token; give longer "
                                      "or more texts, or a larger task.mlm_probability")
            return {"perplexity": float(math.exp(min(sums[:, 0].sum() / count, 700.0)))}

        return compute

    def metric_names(self, labels):
        return ["perplexity"]

    def predict(self, model, processor, inputs, batch_size=32, top_k=None):
        """Fill-mask: the ``top_k`` (default 5) best tokens for each mask token of each input."""
        import torch

        if top_k == 0:
            raise HFTransferError("--top-k: a masked-lm run fills masks from its whole vocabulary; give a "
                                  "number of candidates, not 0 or 'all'")
        top_k = top_k or 5

        mask = processor.mask_token
        missing = [i for i, text in enumerate(inputs, start=1) if mask not in str(text)]
        if missing:
            raise HFTransferError(f"predict: input {missing[0]} has no {mask} token; a masked-lm run fills "
                                  f"in {mask} (e.g. 'the film was {mask}.'), or fine-tune it in a later stage")
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(inputs), batch_size):
            texts = [str(t) for t in inputs[start:start + batch_size]]
            enc = processor(texts, truncation=True, max_length=self._max_length(processor), padding=True,
                            return_tensors="pt")
            with torch.no_grad():
                logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu()
            for row, ids in zip(logits, enc["input_ids"]):
                masks = []
                for pos in (ids == processor.mask_token_id).nonzero().flatten().tolist():
                    probs = row[pos].softmax(-1)
                    top = probs.topk(min(top_k, probs.numel()))
                    masks.append([{"token": processor.convert_ids_to_tokens(int(t)), "score": float(p)}
                                  for p, t in zip(top.values, top.indices)])
                if not masks:
                    raise HFTransferError(f"predict: the {mask} token of input {len(out) + 1} lies past "
                                          f"task.max_length ({self._max_length(processor)} tokens)")
                out.append({"label": masks[0][0]["token"], "score": masks[0][0]["score"], "masks": masks})
        return out

    def format_prediction(self, shown, result):
        fills = " | ".join(", ".join(f"{c['token']} {c['score']:.3f}" for c in mask) for mask in result["masks"])
        return f"{fills}\t{shown}"


AUDIO_TYPES = ("wav2vec2", "wav2vec2-conformer", "wav2vec2-bert", "hubert", "sew", "sew-d", "unispeech",
               "unispeech-sat", "wavlm", "data2vec-audio", "whisper", "speech_to_text")
"""Speech models whose configs carry a vocabulary (a CTC alphabet): no text encoder."""


class MaskedLMCollator:
    """Masks training batches anew (the ``transformers`` collator); pads held-out batches,
    which were masked once and carry their labels, as they are."""

    def __init__(self, tokenizer, masker):
        self.tokenizer, self.masker = tokenizer, masker

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if "labels" not in rows[0]:
            return self.masker([{k: r[k] for k in (*MODEL_KEYS, *MASKING_KEYS) if k in r} for r in rows])
        batch = self.tokenizer.pad([{k: r[k] for k in MODEL_KEYS if k in r} for r in rows], return_tensors="pt")
        width = batch["input_ids"].shape[1]
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["labels"])
            if self.tokenizer.padding_side == "right":
                labels[i, :n] = torch.tensor(r["labels"])
            else:
                labels[i, width - n:] = torch.tensor(r["labels"])
        batch["labels"] = labels
        return batch


class HeadWarmup:
    """Train a new masked-LM head alone on the frozen encoder first: its random transform would
    otherwise send large, meaningless gradients into the pretrained encoder. Stateless (the step
    or epoch decides), so a resumed run freezes as the first did; skipped when the checkpoint had
    a masked-LM head, or when the encoder is random too. The optimizer was built before
    ``on_train_begin`` with every trainable parameter, so the encoder trains once thawed."""

    def __init__(self, options: Any, strategy: Any, task: Task):
        self.options, self.strategy, self.task = options, strategy, task
        self.frozen: list[Any] = []
        self.active: bool | None = None

    def _length(self, state) -> tuple[float, float]:
        """(warm-up length, where training is) in the option's unit."""
        o = self.options
        if o.head_warmup_epochs is not None:
            return o.head_warmup_epochs, state.epoch or 0.0
        if o.head_warmup_steps is not None:
            return o.head_warmup_steps, state.global_step
        return max(1, round(0.1 * state.max_steps)), state.global_step

    def begin(self, state, model) -> None:
        new = self.strategy.new_params
        names = [n for n, _ in model.named_parameters()]
        head = {n for n in names if n.split(".")[0] in self.task.head_prefixes}
        self.active = bool(head & new) and not set(names) <= new
        if self.active:
            self.body = [p for n, p in model.named_parameters() if n not in head]
            logger.info("masked-lm: the new head trains alone on the frozen encoder for %g %s",
                        self._length(state)[0],
                        "epochs" if self.options.head_warmup_epochs is not None else "steps")
        self._update(state)

    def _update(self, state) -> None:
        if not self.active:
            return
        length, done = self._length(state)
        if done < length:
            for p in self.body:  # every step: a strategy's own unfreezing runs before this
                if p.requires_grad:
                    p.requires_grad = False
                    self.frozen.append(p)
        elif self.frozen:
            for p in self.frozen:
                p.requires_grad = True
            self.frozen = []
            logger.info("masked-lm: head warm-up done; the encoder trains from step %d", state.global_step)

