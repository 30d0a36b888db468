"""Multi-label heads: one logistic model per label on the codes, each with its own C and decision threshold.

The binary problems are solved together by the batched L-BFGS solver of :mod:`headstart.heads.linear` (every label,
fold and C in one solve), on folds made by iterative stratification. Each label's C is the one with the lowest
out-of-fold log loss for that label, and its threshold half the best out-of-fold F1 of that label (not 0.5: with
calibrated probabilities that threshold maximises F1, and rare labels are called too seldom at 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.splits import iterative_stratification
from .basis import Standardised
from .linear import (
    C_GRIDS,
    EXTEND_STEPS,
    FINAL_ITERATIONS,
    MAX_FOLDS,
    SEARCH_MAX_ROWS,
    LinearHead,
    fold_logits,
    search_rows,
)
from .solver import solve


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow warnings."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass
class SigmoidHead(LinearHead):
    """``sigmoid(codes @ weight.T + bias)`` per label, then a threshold per label. A row with no label above its
    threshold gets its most probable label when ``fill_empty`` (the training images always had one)."""

    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fill_empty: bool = False

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        """Each label's probability."""
        return sigmoid(self.logits(codes))

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """The 0/1 label matrix of ``proba`` rows (NaN rows stay all zero)."""
        return decide(proba, self.thresholds, self.fill_empty)


def decide(proba: np.ndarray, thresholds: np.ndarray, fill_empty: bool) -> np.ndarray:
    """Labels at or above their threshold; an empty row gets its most probable label when ``fill_empty``."""
    finite = np.nan_to_num(proba, nan=-1.0)
    chosen = (finite >= np.asarray(thresholds)[None, :]).astype(np.uint8)
    if fill_empty and len(chosen):
        empty = (chosen.sum(1) == 0) & ~np.isnan(proba).any(1)
        chosen[empty, finite[empty].argmax(1)] = 1
    return chosen


def best_thresholds(proba: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per label, half the best F1 that any threshold reaches on (out-of-fold) ``proba``.

    For calibrated probabilities the F1-optimal threshold is half the optimal F1 (Lipton, Elkan and Narayanaswamy
    2014, "Optimal thresholding of classifiers to maximize F1"). The best F1 itself is a stable figure; the threshold
    that reaches it on a few hundred out-of-fold images is not: on miml_scenes, folds that differed only in keeping
    duplicates together moved those thresholds by up to 0.2 and validation micro-F1 by 3 points, where half the best
    F1 moved by 0.01."""
    thresholds = np.full(proba.shape[1], 0.5)
    for j in range(proba.shape[1]):
        order = np.argsort(-proba[:, j], kind="stable")
        p, y = proba[order, j], targets[order, j].astype(np.float64)
        if not y.sum():
            continue
        f1 = 2 * np.cumsum(y) / (np.arange(1, len(y) + 1) + y.sum())
        f1[:-1][p[:-1] == p[1:]] = 0.0  # a cut must fall between distinct probabilities
        thresholds[j] = f1.max() / 2
    return thresholds


def binary_log_losses(proba: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(rows, labels) binary cross-entropy of each probability."""
    p = np.clip(proba, 1e-12, 1 - 1e-12)
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def label_folds(targets: np.ndarray, seed: int, groups: np.ndarray | None = None, max_folds: int = MAX_FOLDS
                ) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(train, test) indices of k-fold cross-validation by iterative stratification, k = min(max_folds, the fewest
    images with, or without, any label); None when a label is on (or off) fewer than two images."""
    counts = targets.sum(0)
    n_folds = int(min(max_folds, counts.min(), (len(targets) - counts).min()))
    if n_folds < 2:
        return None
    part = iterative_stratification(targets, [1.0 / n_folds] * n_folds, seed, groups)
    folds = [(np.flatnonzero(part != f), np.flatnonzero(part == f)) for f in range(n_folds)]
    return folds if all(len(test) and len(train) for train, test in folds) else None


@dataclass
class LabelSearch:
    """The cross-validated C search of a multi-label head: each label's C, its out-of-fold results and threshold."""

    grid: list[float]
    label_losses: list[list[float]]  # out-of-fold mean log loss, per C, per label
    best: list[int]  # per label: its C's index in grid
    folds: int
    rows: int
    sample_losses: np.ndarray  # per searched image: summed log loss over labels, each at its own C
    oof: np.ndarray | None = None  # out-of-fold probabilities at each label's C
    thresholds: list[float] = field(default_factory=list)
    accuracy: float = 0.0  # out-of-fold share of labels right at 0.5 (1 - Hamming loss)
    classifier: str = "logistic"
    rows_index: np.ndarray | None = None

    @property
    def C(self) -> list[float]:
        """Each label's chosen C."""
        return [self.grid[i] for i in self.best]

    @property
    def cv_log_loss(self) -> float:
        """Out-of-fold log loss per image, summed over labels, each at its own C."""
        return float(sum(losses[i] for losses, i in zip(self.label_losses, self.best)))

    @property
    def cv_accuracy(self) -> float:
        """Out-of-fold share of labels right at 0.5 (what fine-tuning's monitor measures too)."""
        return self.accuracy

    def info(self) -> dict[str, Any]:
        """The search as JSON-ready values (fit info's ``classifier``)."""
        return {"cv_folds": self.folds, "cv_metric": "log_loss per label", "cv_rows": self.rows,
                "cv_label_accuracy": round(self.accuracy, 5), "cv_log_loss": round(self.cv_log_loss, 5),
                "C_at_grid_edge": any(i in (0, len(self.grid) - 1) for i in self.best),
                "cv_scores": {f"{c:.3g}": [round(-losses[g], 5) for losses in self.label_losses]
                              for g, c in enumerate(self.grid)}}


def search_labels(codes: np.ndarray, targets: np.ndarray, seed: int = 0, data: Standardised | None = None,
                  grid: list[float] | None = None, groups: np.ndarray | None = None) -> LabelSearch | None:
    """Cross-validate every C of ``grid`` (default C_GRIDS["logistic"]) for every label at once, extending the
    default grid while some label's best C lies at an edge. None when a label cannot be held out in every fold."""
    from ..data.folders import label_strata

    targets = np.asarray(targets, np.uint8)
    keep = search_rows(label_strata(targets), seed)
    if keep is not None:
        codes, targets, data = codes[keep], targets[keep], None
        groups = None if groups is None else groups[keep]
    folds = label_folds(targets, seed, groups)
    if folds is None:
        return None
    data = data or Standardised(codes)
    n, k = targets.shape
    scores: dict[float, np.ndarray] = {}  # C -> out-of-fold logits (n, k)
    todo = list(grid or C_GRIDS["logistic"])
    for _ in range(EXTEND_STEPS + 1 if grid is None else 1):
        oof = fold_logits(data, targets, k, folds, todo, "sigmoid")[0]
        for g, c in enumerate(todo):
            scores[c] = sigmoid(oof[g])
        ordered = sorted(scores)
        losses = np.array([binary_log_losses(scores[c], targets).mean(0) for c in ordered])  # (C, k)
        best = losses.argmin(0)
        if (best == 0).any():
            todo = [ordered[0] / np.sqrt(10)]
        elif (best == len(ordered) - 1).any():
            todo = [ordered[-1] * np.sqrt(10)]
        else:
            break
    grid = sorted(scores)
    losses = np.array([binary_log_losses(scores[c], targets).mean(0) for c in grid])
    best = losses.argmin(0)
    oof = np.stack([scores[grid[i]][:, j] for j, i in enumerate(best)], 1)
    return LabelSearch(grid, losses.T.tolist(), [int(i) for i in best], len(folds), n,
                       binary_log_losses(oof, targets).sum(1), oof.astype(np.float32),
                       best_thresholds(oof, targets).tolist(), float(((oof >= 0.5) == targets).mean()),
                       rows_index=keep)


def fit_labels(codes: np.ndarray, targets: np.ndarray, C: float | None = None, seed: int = 0,
               search: LabelSearch | None = None, groups: np.ndarray | None = None) -> SigmoidHead:
    """One logistic model per label on standardised ``codes``: each C from ``search``, given, or searched; each
    threshold from the search's out-of-fold probabilities (0.5 when no label could be cross-validated)."""
    import torch

    targets = np.asarray(targets, np.uint8)
    n, k = targets.shape
    # searched on all the rows: standardised once for both; else on a sample, and all the rows standardised after
    own = Standardised(codes) if n <= SEARCH_MAX_ROWS else None
    if search is None:
        search = search_labels(codes, targets, seed, own, grid=None if C is None else [float(C)], groups=groups)
    info: dict[str, Any] = {"classifier": "logistic", "multilabel": True}
    if search is not None:
        Cs, thresholds = (search.C if C is None else [float(C)] * k), np.asarray(search.thresholds)
        info.update(search.info())
    else:
        Cs, thresholds = [1.0 if C is None else float(C)] * k, np.full(k, 0.5)
        info["cv_note"] = "no cross-validation: a label is on (or off) a single image; thresholds 0.5"
    data = own or Standardised(codes)
    penalties = torch.tensor([[1.0 / (c * n) for c in Cs]])
    w, b = solve(data, targets, k, torch.full((1, n), 1.0 / n), penalties, "sigmoid", FINAL_ITERATIONS)
    weight, bias = data.on_raw_codes(w[0], b[0])
    fill_empty = bool(targets.sum(1).min() > 0)
    info.update(C=Cs, thresholds=[round(float(t), 6) for t in thresholds], fill_empty=fill_empty)
    return SigmoidHead(weight.astype(np.float32), bias.astype(np.float32), info, thresholds.astype(np.float32),
                       fill_empty)
