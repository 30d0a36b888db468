"""Classification metrics on labelled predictions, as one JSON-ready dict."""

from __future__ import annotations

from typing import Any

import numpy as np


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
