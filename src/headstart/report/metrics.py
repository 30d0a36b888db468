"""Classification metrics on labelled predictions, as one JSON-ready dict."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError


def classification_metrics(labels: np.ndarray, proba: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, top-k, per-class precision/recall/F1 and the confusion matrix with names.

    Computed from the confusion matrix in numpy (as scikit-learn defines them, zero where undefined), so scoring a
    model does not import scikit-learn.
    """
    n = len(labels)
    if n == 0:
        return {"n_images": 0, "accuracy": None, "balanced_accuracy": None}
    predicted = proba.argmax(1)
    k = len(class_names)
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    support, called, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(called > 0, hits / np.maximum(called, 1), 0.0)
        recall = np.where(support > 0, hits / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = np.unique(labels)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    result = {
        "n_images": int(n),
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(recall[present].mean()) if len(present) > 1 else None,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(class_names),
                             "matrix": matrix.tolist()},
        "log_loss": float(-np.log(np.clip(proba[np.arange(n), labels], 1e-12, 1)).mean()),
    }
    if len(class_names) > 5:
        top5 = np.argsort(-proba, 1)[:, :5]
        result["top5_accuracy"] = float((top5 == labels[:, None]).any(1).mean())
    return result


def average_precision(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as scikit-learn's ``average_precision_score`` computes it (steps at
    each distinct score); NaN when ``truth`` has no positive."""
    positives = truth.sum()
    if not positives:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], truth[order].astype(np.float64)
    last = np.r_[s[1:] != s[:-1], True]  # the last row of each run of tied scores
    tp = np.cumsum(t)[last]
    called = np.flatnonzero(last) + 1
    precision, recall = tp / called, tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_metrics(targets: np.ndarray, proba: np.ndarray, predicted: np.ndarray, names: list[str]
                       ) -> dict[str, Any]:
    """Mean average precision, micro and macro F1, subset accuracy (also as ``accuracy``, as scikit-learn's
    ``accuracy_score`` defines it for label sets), Hamming loss, and per label precision, recall, F1, AP, support."""
    n = len(targets)
    if n == 0:
        return {"n_images": 0, "multilabel": True, "accuracy": None, "map": None}
    truth, called = targets.astype(bool), predicted.astype(bool)
    tp, fp, fn = (truth & called).sum(0), (~truth & called).sum(0), (truth & ~called).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    ap = np.array([average_precision(truth[:, j], proba[:, j]) for j in range(len(names))])
    micro = 2 * tp.sum() / max(1, 2 * tp.sum() + fp.sum() + fn.sum())
    subset = float((truth == called).all(1).mean())
    per_label = {name: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                        "ap": None if np.isnan(ap[j]) else float(ap[j]), "support": int(truth[:, j].sum())}
                 for j, name in enumerate(names)}
    return {"n_images": int(n), "multilabel": True,
            "map": float(np.nanmean(ap)) if not np.isnan(ap).all() else None,
            "micro_f1": float(micro), "macro_f1": float(f1.mean()), "subset_accuracy": subset, "accuracy": subset,
            "hamming_loss": float((truth != called).mean()), "per_label": per_label,
            "log_loss": float(-(np.log(np.clip(np.where(truth, proba, 1 - proba), 1e-12, 1))).sum(1).mean())}


def evaluation(found: Any, images: Any, class_names: list[str], decide: Any = None,
               familiarity: dict[str, Any] | None = None) -> dict[str, Any]:
    """``evaluate``'s result from predictions ``found`` (a :class:`headstart.results.Predictions` of ``images``'
    paths), by the library or by a torch-free ONNX file alike. ``decide``: a multi-label model's rule turning
    probabilities into a 0/1 label matrix (None for one class per image); ``familiarity``: the model's familiarity
    info (its ``threshold`` flags unfamiliar images)."""
    if decide is not None:
        if images.targets is None:
            raise DataError("this model gives each image a set of labels: evaluate it on label sets (--labels)")
        result = multilabel_metrics(images.targets[found.kept], found.proba, decide(found.proba), class_names)
    else:
        if images.targets is not None:
            raise DataError("this model gives each image one class: evaluate it on class folders, not label sets")
        result = classification_metrics(images.labels[found.kept], found.proba, class_names)
    result["n_skipped"] = len(found.skipped)
    result["skipped"] = [{"path": p, "reason": r} for p, r in found.skipped]
    if found.familiarity is not None and familiarity is not None:
        flagged = int((found.familiarity < float(familiarity["threshold"])).sum())
        result.update(n_unfamiliar=flagged, unfamiliar_rate=round(flagged / max(1, len(found.kept)), 4),
                      familiarity=familiarity)
    return result
