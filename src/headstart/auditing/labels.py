"""Likely label errors: confident learning (Northcutt, Jiang and Chuang 2021) on out-of-fold probabilities.

The probabilities come from the same cross-validated linear classifier that ``fit`` searches C with, so each image is
judged by a model that never saw it. As cleanlab computes it: per-class thresholds (the mean probability of class j
among images labelled j), the confident joint (images counted under their given label and the class they confidently
belong to), calibrated to the label counts, then pruning by noise rate (for each off-diagonal cell, that many images
of the given label with the largest margin of the other class over their own), never flagging an image whose given
label is also its prediction. Ranked by self-confidence: one minus the out-of-fold probability of the given label.
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
    """Confident learning's ``prune_by_noise_rate`` on out-of-fold ``proba`` (rows) for the given ``labels``."""
    k = proba.shape[1]
    joint, thresholds = confident_joint(proba, labels)
    flagged = np.zeros(len(labels), bool)
    for given in range(k):
        members = np.flatnonzero(labels == given)
        for other in range(k):
            n = int(round(joint[given, other]))
            if other == given or n == 0 or not len(members):
                continue
            margin = proba[members, other] - proba[members, given]
            flagged[members[np.argsort(-margin)[:n]]] = True
    suggested = proba.argmax(1)
    flagged &= suggested != labels
    score = 1.0 - proba[np.arange(len(labels)), labels]
    return LabelIssues(flagged, score, suggested, joint, thresholds, proba)


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
