"""Scores of probabilistic predictions and the fits fusion makes on validation outputs.

Everything here works on plain arrays of logits (float64 inside), with no model: the fits are
small convex (or one-dimensional) problems solved exactly enough by L-BFGS or a grid.
"""
from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error (Guo et al., 2017)."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the reference labels."""
    logp = log_softmax(logits)
    return float(-logp[np.arange(len(labels)), labels].mean())


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(-1) == labels).mean())


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin ((lo, hi], the first bin closed): examples, mean confidence, accuracy."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for lo, hi in pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        n = int(inside.sum())
        out.append({"lo": float(lo), "hi": float(hi), "count": n,
                    "confidence": float(confidence[inside].mean()) if n else 0.0,
                    "accuracy": float(correct[inside].mean()) if n else 0.0})
    return out


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the example-weighted mean |accuracy − confidence| over bins."""
    table = reliability(probs, labels, bins)
    total = sum(b["count"] for b in table)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table) / max(total, 1))


def probabilities(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def summary(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """accuracy, nll and ece of one set of logits."""
    return {"accuracy": accuracy(logits, labels), "nll": nll(logits, labels),
            "ece": ece(probabilities(logits), labels)}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) (the NLL is convex in
    1/T, so L-BFGS on log T from T = 1 finds the optimum)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, tolerance_grad=1e-10,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())
