"""Token classification (named entities and other IOB tagging): CoNLL column files or token/tag
list columns, labels on the first sub-word of each word, entity-level metrics (seqeval).

A *word* is what a CoNLL file holds on one line: raw text given to ``predict`` is split the same
way (on whitespace, a byte-order mark counting as whitespace), so ``@mike_j,`` is one word in
training, evaluation and prediction alike. A word the tokenizer turns into no sub-word at all (a
lone U+FE0F variation selector, a zero-width space) is fed to the model as the unknown token, so
it is trained on, scored and predicted like any other word."""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import read_text, resolve_files
from ..errors import HFTransferError
from ..models import load_text_processor, position_limit
from ..registry import register_task
from .base import Task, check_columns, label_str, max_text_length

logger = logging.getLogger("hftransfer")

CONLL_EXTENSIONS = (".conll", ".conllu", ".txt", ".iob", ".iob2", ".bio")
_TAG = re.compile(r"^(O|[BI]-\S+)$")
_BOM = "\ufeff"
# Words are what whitespace separates; a byte-order mark (concatenated files leave one inside)
# is whitespace too, never part of a word.
_WORD = re.compile(r"[^\s\ufeff]+")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """The words of raw text as a CoNLL file would hold them, with character offsets:
    ``[(word, start, end)]`` (whitespace separates words; punctuation stays in its word)."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def read_conll(path: Path, where: str) -> list[dict[str, list[str]]]:
    """Sentences of a CoNLL column file: the token in the first column, the tag in the last;
    blank lines end sentences; ``-DOCSTART-`` lines are skipped; LF or CRLF; a byte-order mark
    anywhere is whitespace (a line holding only one is blank)."""
    sentences: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    width = None  # columns per line, fixed by the first token line

    def end_sentence():
        if tokens:
            sentences.append({"tokens": list(tokens), "tags": list(tags)})
            tokens.clear()
            tags.clear()

    for number, line in enumerate(read_text(path, where).splitlines(), start=1):
        fields = line.replace(_BOM, " ").split()
        if not fields:
            end_sentence()
            continue
        if fields[0] == "-DOCSTART-":
            end_sentence()
            continue
        if len(fields) < 2:
            raise HFTransferError(
                f"{where}: {str(path)!r} line {number} has no tag column ({line.strip()!r}); "
                "CoNLL lines are 'TOKEN ... TAG'"
            )
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise HFTransferError(
                f"{where}: {str(path)!r} line {number} has {len(fields)} columns where the file's "
                f"lines have {width} (a stray column, or a token with a space in it?)"
            )
        tokens.append(fields[0])
        tags.append(fields[-1])
    end_sentence()  # a file need not end with a blank line
    if not sentences:
        raise HFTransferError(f"{where}: {str(path)!r} holds no sentences")
    return sentences


def to_iob2(tags: list[str]) -> list[str]:
    """IOB1 (I- starts an entity unless it continues one) to IOB2 (every entity starts with B-);
    IOB2 input comes back unchanged."""
    out = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def entity_types(tags) -> set[str]:
    return {tag[2:] for tag in tags if tag != "O"}


@register_task("token-classification")
class TokenClassification(Task):
    """Tag every word of a sentence with IOB2 tags (B-PER I-PER O ...), e.g. named entities.

    Data: CoNLL column files (``.conll``/``.txt``/..., or ``data.format: conll``), or files and
    Hub datasets with a column of token lists and one of tag lists."""

    auto_class_name = "AutoModelForTokenClassification"
    pipeline_tag = "token-classification"
    peft_task_type = "TOKEN_CLS"
    primary_metric = "f1"
    features = "per-token"
    position_limit: int | None = None
    """How many tokens the model's position embeddings cover (set by load_processor)."""

    @dataclass
    class Options:
        tokens_column: str = "tokens"
        tags_column: str = "tags"
        max_length: int | None = None
        """Truncate sentences to this many sub-word tokens (default: the model's limit, at most 512)."""

        def __post_init__(self) -> None:
            check_columns(self, "tokens_column", "tags_column")
            if self.max_length is not None and self.max_length < 2:
                raise HFTransferError(f"task.max_length must be at least 2, got {self.max_length}")

    # --- data -------------------------------------------------------------------------------
    def read_split(self, entry, where, declared_format):
        import datasets

        fmt = (declared_format or "").lower()
        path = Path(entry).expanduser()
        if fmt and fmt != "conll":
            return super().read_split(entry, where, declared_format)
        files = resolve_files(entry, where, extensions=CONLL_EXTENSIONS if path.is_dir() else None)
        if fmt != "conll" and not all(f.suffix.lower() in CONLL_EXTENSIONS for f in files):
            return super().read_split(entry, where, declared_format)
        parts = []
        for file in files:
            ds = datasets.Dataset.from_list(read_conll(file, where))
            ds = ds.rename_columns({"tokens": self.options.tokens_column, "tags": self.options.tags_column}) \
                if (self.options.tokens_column, self.options.tags_column) != ("tokens", "tags") else ds
            parts.append(self.check_split(ds, f"{where} ({str(file)!r})" if len(files) > 1 else where))
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)

    def check_split(self, ds, where, labelled: bool = True):
        o = self.options
        columns = [("tokens_column", o.tokens_column)] + ([("tags_column", o.tags_column)] if labelled else [])
        for key, _ in columns:
            self.require_column(ds, key, where)
        if len(ds) == 0:
            raise HFTransferError(f"{where}: no rows")
        for row, tokens in enumerate(ds[o.tokens_column], start=1):
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
                raise HFTransferError(
                    f"{where}: row {row} of column {o.tokens_column!r} must be a non-empty list of "
                    f"words, got {str(tokens)[:60]!r}"
                )
        if not labelled:
            return ds
        names = self._tag_names(ds)
        tags_out = []
        for row, (tokens, tags) in enumerate(zip(ds[o.tokens_column], ds[o.tags_column]), start=1):
            if not isinstance(tags, list):
                raise HFTransferError(f"{where}: row {row} of column {o.tags_column!r} is not a list of tags")
            if len(tags) != len(tokens):
                raise HFTransferError(
                    f"{where}: row {row} has {len(tokens)} tokens but {len(tags)} tags; "
                    "give every token exactly one tag"
                )
            tags = [names[t] if names is not None and isinstance(t, int) else label_str(t) for t in tags]
            for tag in tags:
                if not _TAG.match(tag):
                    raise HFTransferError(
                        f"{where}: row {row} has tag {tag!r}, which is not IOB (O, B-TYPE, I-TYPE)"
                    )
            tags_out.append(to_iob2(tags))
        return ds.remove_columns(o.tags_column).add_column(o.tags_column, tags_out)

    def _tag_names(self, ds) -> list[str] | None:
        """Names of integer tags when the column is a sequence of ClassLabel (Hub datasets)."""
        feature = ds.features.get(self.options.tags_column)
        inner = getattr(feature, "feature", None)
        if isinstance(feature, list) and feature:
            inner = feature[0]
        return list(inner.names) if hasattr(inner, "names") else None

    def label_names(self, train, where):
        types = set()
        for tags in train[self.options.tags_column]:
            types |= entity_types(tags)
        if not types:
            raise HFTransferError(f"{where}: no entity tags (only O); token classification needs some")
        # Both B- and I- of every type, so any well-formed tagging of a seen type is predictable.
        return ["O"] + [f"{prefix}-{t}" for t in sorted(types) for prefix in ("B", "I")]

    def check_labels(self, ds, labels, where):
        if self.options.tags_column not in ds.column_names:
            return
        known = entity_types(labels)
        unseen = set()
        for tags in ds[self.options.tags_column]:
            unseen |= entity_types(tags) - known
        if unseen:
            raise HFTransferError(
                f"{where}: entity types not seen in train: {', '.join(sorted(unseen))}; "
                f"train has {', '.join(sorted(known))}"
            )

    # --- model inputs -----------------------------------------------------------------------
    def load_processor(self, location, spec, config):
        tokenizer = load_text_processor(location, spec, config)
        if not tokenizer.is_fast:
            raise HFTransferError(
                f"token-classification needs a fast tokenizer (word alignment), and "
                f"{spec.processor or spec.name_or_path!r} has only a slow one"
            )
        self.position_limit = position_limit(config)
        self._max_length(tokenizer)  # a max_length beyond the model's positions fails here
        return tokenizer

    def _max_length(self, tokenizer) -> int:
        return max_text_length(self.options.max_length, tokenizer, self.position_limit)

    def encode_words(self, processor, sentences: list[list[str]], windows: bool = False):
        """Tokenize sentences given as words (``is_split_into_words``). A word that comes out as
        no sub-word at all is replaced by the tokenizer's unknown token and encoded again, so
        every word has a first sub-word to carry its tag. ``windows``: overlapping windows of
        the model's length cover long sentences whole (offsets and the sample mapping returned);
        otherwise they are truncated."""
        limit = self._max_length(processor)
        extra = {"return_overflowing_tokens": True, "stride": limit // 4,
                 "return_offsets_mapping": True} if windows else {}

        def encode(words):
            return processor(words, is_split_into_words=True, truncation=True, max_length=limit, **extra)

        enc = encode(sentences)
        unk = processor.unk_token
        if not unk or not sentences:
            return enc
        seen: list[set[int]] = [set() for _ in sentences]
        cut = [False] * len(sentences)
        owners = enc["overflow_to_sample_mapping"] if windows else range(len(sentences))
        for i, owner in enumerate(owners):
            seen[owner].update(w for w in enc.word_ids(i) if w is not None)
            cut[owner] |= not windows and bool(enc.encodings[i].overflowing)
        fixed, changed = [], False
        for words, have, truncated in zip(sentences, seen, cut):
            # Past the last encoded word of a truncated sentence, words are cut off, not empty.
            end = max(have, default=-1) if truncated else len(words)
            empty = {w for w in range(end) if w not in have}
            changed |= bool(empty)
            fixed.append([unk if w in empty else word for w, word in enumerate(words)])
        return encode(fixed) if changed else enc

    def preprocess(self, ds, processor, labels, training=False):
        o = self.options
        label2id = {name: i for i, name in enumerate(labels)}
        labelled = o.tags_column in ds.column_names
        truncated = [0]

        def encode(batch):
            enc = self.encode_words(processor, batch[o.tokens_column])
            truncated[0] += sum(bool(e.overflowing) for e in enc.encodings)
            out = {key: enc[key] for key in enc.keys()}
            out["length"] = [len(ids) for ids in enc["input_ids"]]
            if labelled:
                aligned = []
                for i, tags in enumerate(batch[o.tags_column]):
                    ids, previous = [], None
                    for word in enc.word_ids(i):
                        # The first sub-word of each word carries its tag; the rest and the
                        # special tokens are ignored by the loss and the metrics.
                        ids.append(-100 if word is None or word == previous else label2id[tags[word]])
                        previous = word
                    aligned.append(ids)
                out["labels"] = aligned
            return out

        fingerprint = hashlib.sha256(
            f"{ds._fingerprint}|{processor.name_or_path}|{self.options}|{labels}|unk-words".encode()
        ).hexdigest()[:16]
        out = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="Tokenizing",
                     new_fingerprint=fingerprint)
        if truncated[0]:
            logger.warning("%d sentences were longer than %d sub-words and were truncated; their "
                           "last words are not scored", truncated[0], self._max_length(processor))
        return out

    def collator(self, processor):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(processor)

    # --- evaluation -------------------------------------------------------------------------
    def metric_names(self, labels):
        return ["precision", "recall", "f1", "accuracy"] + [f"f1_{t}" for t in sorted(entity_types(labels))]

    def compute_metrics(self, labels):
        from seqeval.metrics import accuracy_score, classification_report

        def compute(eval_pred):
            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            preds = np.asarray(logits).argmax(-1)
            refs = np.asarray(eval_pred.label_ids)
            true, pred = [], []
            for p_row, r_row in zip(preds, refs):
                keep = r_row != -100
                true.append([labels[i] for i in r_row[keep]])
                pred.append([labels[i] for i in p_row[keep]])
            report = classification_report(true, pred, output_dict=True, zero_division=0)
            out = {
                "precision": float(report["micro avg"]["precision"]),
                "recall": float(report["micro avg"]["recall"]),
                "f1": float(report["micro avg"]["f1-score"]),
                "accuracy": float(accuracy_score(true, pred)),
            }
            for entity in sorted(entity_types(labels)):
                out[f"f1_{entity}"] = float(report.get(entity, {}).get("f1-score", 0.0))
            return out

        return compute

    def tag_words(self, model, processor, texts: list[str], batch_size: int = 32) -> list[list[dict[str, Any]]]:
        """Per text, its words (split as CoNLL files are: on whitespace) with their predicted tags:
        ``[{"word", "start", "end", "tag", "score"}]``, character offsets into the text. Each
        word's tag is what evaluation scores for it: the label of its first sub-word. A long text
        is read in overlapping windows; a word takes its tag from the window where it sits
        farthest from an edge."""
        import torch

        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: adapters are in place
        device = next(base.parameters()).device
        id2label = base.config.id2label
        base.eval()
        out = []
        for first in range(0, len(texts), batch_size):
            spans = [split_words(str(text)) for text in texts[first:first + batch_size]]
            sentences = [[w for w, _, _ in words] for words in spans]
            best: list[dict[int, tuple[int, Any]]] = [{} for _ in spans]  # word -> (margin, probs)
            if any(sentences):
                present = [i for i, words in enumerate(sentences) if words]
                enc = self.encode_words(processor, [sentences[i] for i in present], windows=True)
                owners = [present[o] for o in enc["overflow_to_sample_mapping"]]
                # A word's first sub-word starts its earliest offset; a window that opens inside
                # a word must not pass a later sub-word off as its first.
                starts: list[dict[int, int]] = [{} for _ in spans]
                for j, owner in enumerate(owners):
                    for word, (begin, _) in zip(enc.word_ids(j), enc["offset_mapping"][j]):
                        if word is not None:
                            starts[owner][word] = min(begin, starts[owner].get(word, begin))
                keys = [k for k in enc.keys() if k not in ("offset_mapping", "overflow_to_sample_mapping")]
                for lo in range(0, len(owners), batch_size):
                    rows = [{k: enc[k][j] for k in keys} for j in range(lo, min(lo + batch_size, len(owners)))]
                    batch = processor.pad(rows, return_tensors="pt")
                    with torch.no_grad():
                        probs = base(**{k: v.to(device) for k, v in batch.items()}).logits.float().softmax(-1).cpu()
                    for j, row in zip(range(lo, lo + len(rows)), probs):
                        words = enc.word_ids(j)
                        content = [p for p, w in enumerate(words) if w is not None]
                        previous = None
                        for pos, word in enumerate(words):
                            if word is None or word == previous:
                                previous = word
                                continue
                            previous = word
                            if enc["offset_mapping"][j][pos][0] != starts[owners[j]][word]:
                                continue  # the window opens inside this word
                            margin = min(pos - content[0], content[-1] - pos)
                            if word not in best[owners[j]] or margin > best[owners[j]][word][0]:
                                best[owners[j]][word] = (margin, row[pos])
            for words, chosen in zip(spans, best):
                tagged = []
                for w, (word, start, end) in enumerate(words):
                    if w in chosen:
                        probs = chosen[w][1]
                        label = int(probs.argmax())
                        tag, score = id2label.get(label, str(label)), float(probs[label])
                    else:  # no sub-word even as the unknown token: nothing to tag it with
                        tag, score = "O", None
                    tagged.append({"word": word, "start": start, "end": end, "tag": tag, "score": score})
                out.append(tagged)
        return out

    def predict(self, model, processor, inputs, batch_size=32, top_k=None):
        """Inputs are sentences; returns, per sentence, its entities
        ``[{"entity_group", "score", "word", "start", "end"}]`` with character offsets. Words
        are whitespace-separated, as in training (see :meth:`tag_words`); consecutive words
        join an entity as the ``transformers`` pipeline joins them (an ``I-`` tag of the same
        type continues it), and its score is the mean of its words'."""
        if top_k is not None:
            raise HFTransferError("--top-k: a token-classification run tags words with entities; leave --top-k out")
        return [entities(text, words) for text, words in zip(inputs, self.tag_words(model, processor, inputs, batch_size))]

    def format_prediction(self, text: str, result: list[dict[str, Any]]) -> str:
        spans = ", ".join(f"{e['entity_group']} {e['word']!r} [{e['start']}:{e['end']}] {e['score']:.2f}"
                          for e in result)
        return f"{text}\t{spans or '(no entities)'}"


def entities(text: str, words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tagged words grouped into entities ``{"entity_group", "score", "word", "start", "end"}``
    the way the ``transformers`` pipeline groups them: a word joins the one before when it has the
    same type and no ``B-`` prefix; ``O`` groups are dropped."""
    groups: list[list[dict[str, Any]]] = []
    for word in words:
        bi, kind = (word["tag"][:1], word["tag"][2:]) if word["tag"][1:2] == "-" else ("I", word["tag"])
        if groups and groups[-1][0]["kind"] == kind and bi != "B":
            groups[-1].append({**word, "kind": kind})
        else:
            groups.append([{**word, "kind": kind}])
    out = []
    for group in groups:
        if group[0]["kind"] == "O":
            continue
        scores = [w["score"] for w in group if w["score"] is not None]
        start, end = group[0]["start"], group[-1]["end"]
        out.append({"entity_group": group[0]["kind"], "score": float(np.mean(scores)) if scores else 0.0,
                    "word": text[start:end], "start": start, "end": end})
    return out
