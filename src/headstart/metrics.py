"""Classification metrics on labelled predictions, as one JSON-ready dict."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(labels: np.ndarray, proba: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, top-k, per-class precision/recall/F1 and the confusion matrix with names."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    n = len(labels)
    if n == 0:
        return {"n_images": 0, "accuracy": None, "balanced_accuracy": None}
    predicted = proba.argmax(1)
    index = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=index,
                                                                     zero_division=0)
    present = np.unique(labels)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    result = {
        "n_images": int(n),
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)) if len(present) > 1 else None,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(class_names),
                             "matrix": confusion_matrix(labels, predicted, labels=index).tolist()},
        "log_loss": float(-np.log(np.clip(proba[np.arange(n), labels], 1e-12, 1)).mean()),
    }
    if len(class_names) > 5:
        top5 = np.argsort(-proba, 1)[:, :5]
        result["top5_accuracy"] = float((top5 == labels[:, None]).any(1).mean())
    return result
