"""Out-of-fold scores of linear heads: each row's softmax log loss, and the temperature that calibrates a linear SVM's
decision values into probabilities."""

from __future__ import annotations

import numpy as np


def fit_temperature(decision: np.ndarray, labels: np.ndarray, low: float = -5.0, high: float = 8.0) -> float:
    """The factor on SVM decision values that minimises the log loss of their softmax (golden-section search on its
    logarithm; the loss is convex in the factor)."""

    def nll(log_t: float) -> float:
        return float(log_losses(decision * np.exp(log_t), labels).mean())

    ratio = (np.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    while b - a > 1e-3:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return float(np.exp((a + b) / 2))


def log_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's softmax cross-entropy at its label."""
    z = logits - logits.max(1, keepdims=True)
    return np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]
