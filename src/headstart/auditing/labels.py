"""Likely label errors, from out-of-fold probabilities: an image is flagged when the probability of its given label
is below chance (1/k of k classes) and another class is predicted.

The probabilities come from the same cross-validated linear classifier that ``fit`` searches C with, so each image is
judged by a model that never saw it (the audit averages those of several networks). One global threshold stays sane
however few images a class has: a flipped label is a random wrong class, which an out-of-fold model ranks far down
(on 136 handwritten characters with 14 images each, 10% flipped: median rank 68 of 136, against 0 for the rest).
Confident learning (Northcutt, Jiang and Chuang 2021, as cleanlab computes it: per-class thresholds, the calibrated
confident joint, pruning by noise rate) estimates those thresholds from each class's own images; with 14 a class it
flagged 2.2 images for each flipped one (F1 0.50 against 0.89 below chance, on the same probabilities; 0.70-0.80
against 0.79-0.86 on dtd10 and a cifar10 sample; the final figures: bench/audit.py labels). With two classes, where
chance is the decision boundary itself, its pruning is kept on top (0.5 point better on cats_vs_dogs); its confident
joint also names the classes most often confused.
Ranked by self-confidence: one minus the out-of-fold probability of the given label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LabelIssues:
    """Flagged rows, every row's score and suggestion, the calibrated confident joint, and the per-class thresholds."""

    flagged: np.ndarray  # bool per row
    score: np.ndarray  # 1 - p(given label): higher is surer
    suggested: np.ndarray  # argmax of the out-of-fold probabilities
    joint: np.ndarray  # (k, k) calibrated confident joint, rows: given label, columns: likely true label
    thresholds: np.ndarray
    proba: np.ndarray  # the out-of-fold probabilities judged


def confident_joint(proba: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated confident joint, per-class thresholds) of out-of-fold ``proba`` and given ``labels``."""
    k = proba.shape[1]
    counts = np.bincount(labels, minlength=k)
    thresholds = np.array([proba[labels == j, j].mean() if counts[j] else 1.0 for j in range(k)])
    above = proba >= thresholds[None, :] - 1e-6
    confident = np.where(above, proba, -np.inf).argmax(1)
    has_any = above.any(1)
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[has_any], confident[has_any]), 1)
    row_sums = joint.sum(1, keepdims=True)
    calibrated = np.divide(joint * counts[:, None], row_sums, out=np.zeros_like(joint), where=row_sums > 0)
    return calibrated, thresholds


def find_label_issues(proba: np.ndarray, labels: np.ndarray) -> LabelIssues:
    """Rows of out-of-fold ``proba`` whose given ``labels`` are less likely than chance and not predicted; with two
    classes, those that confident learning's ``prune_by_noise_rate`` also flags (see the module's docstring)."""
    k = proba.shape[1]
    joint, thresholds = confident_joint(proba, labels)
    suggested = proba.argmax(1)
    score = 1.0 - proba[np.arange(len(labels)), labels]
    flagged = (score > 1.0 - 1.0 / k) & (suggested != labels)
    if k == 2:
        flagged &= prune_by_noise_rate(proba, labels, joint)
    return LabelIssues(flagged, score, suggested, joint, thresholds, proba)


def prune_by_noise_rate(proba: np.ndarray, labels: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """Confident learning's flags: for each off-diagonal cell of the calibrated confident ``joint``, that many images
    of the given label with the largest margin of the other class over their own."""
    k = proba.shape[1]
    flagged = np.zeros(len(labels), bool)
    for given in range(k):
        members = np.flatnonzero(labels == given)
        for other in range(k):
            n = int(round(joint[given, other]))
            if other == given or n == 0 or not len(members):
                continue
            margin = proba[members, other] - proba[members, given]
            flagged[members[np.argsort(-margin)[:n]]] = True
    return flagged


def neighbour_agreement(neighbour_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Share of each image's nearest neighbours (rows of ``neighbour_labels``) that carry its given label."""
    if neighbour_labels.shape[1] == 0:
        return np.ones(len(labels))
    return (neighbour_labels == labels[:, None]).mean(1)


def confused_pairs(joint: np.ndarray, class_names: list[str], top: int = 5) -> list[dict]:
    """The class pairs most often confused: off-diagonal confident-joint counts, both directions added."""
    pairs = []
    k = len(class_names)
    for a in range(k):
        for b in range(a + 1, k):
            count = joint[a, b] + joint[b, a]
            if count >= 0.5:
                pairs.append({"classes": [class_names[a], class_names[b]], "images": round(float(count), 1),
                              f"labelled {class_names[a]}, look like {class_names[b]}": round(float(joint[a, b]), 1),
                              f"labelled {class_names[b]}, look like {class_names[a]}": round(float(joint[b, a]), 1)})
    return sorted(pairs, key=lambda p: -p["images"])[:top]
