"""Several networks' linear probes as one head: the mean of their logits, each probe on its own network's codes.

Averaging logits is the geometric mean of the probes' probabilities, renormalised (a product of experts): one linear
layer on the networks' codes side by side, so a joint model predicts, exports and serves like any other (why it is
the default on small data, with the suite's figures: docs/explanation/auto.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .linear import LinearHead, Search

#: A single network replaces the joint probe only when its out-of-fold log loss is lower by more than this many
#: paired standard errors: the average hedges every tie and every lead short of overwhelming.
SINGLE_SE = 3.0


def mean_head(heads: list[LinearHead], names: list[str]) -> LinearHead:
    """One head whose logits are the mean of ``heads``' logits; its columns are the heads' columns side by side."""
    weight = np.concatenate([h.weight for h in heads], 1) / len(heads)
    bias = np.mean([h.bias for h in heads], 0)
    info: dict[str, Any] = {"classifier": heads[0].info.get("classifier"), "C": None,
                            "combined": "the mean of the networks' probe logits",
                            "members": [{"network": name, **head.info} for name, head in zip(names, heads)]}
    return LinearHead(weight.astype(np.float32), bias.astype(np.float32), info)


def _log_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]


def joint_evidence(searches: dict[str, Search], labels: np.ndarray) -> dict[str, Any]:
    """Each network's probe and their joint (mean logits) scored on the same out-of-fold rows: log loss, accuracy,
    and each network's paired difference from the joint with its standard error. ``searches``: network -> the C
    search of its chosen layer (same folds). Chooses the joint unless one network alone is better beyond
    SINGLE_SE standard errors (then the best such network)."""
    usable = {name: s for name, s in searches.items() if s is not None and s.oof_logits is not None
              and len(s.oof_logits) == len(labels)}
    if len(usable) < len(searches) or not usable:
        return {"chosen": "joint", "rule": "the joint probe (its members' out-of-fold logits are not all at hand)"}
    joint = np.mean([s.oof_logits.astype(np.float64) for s in usable.values()], 0)
    joint_losses = _log_losses(joint, labels)
    rows: dict[str, Any] = {"joint": {"cv_log_loss": round(float(joint_losses.mean()), 5),
                                      "cv_accuracy": round(float((joint.argmax(1) == labels).mean()), 5)}}
    better = {}
    for name, search in usable.items():
        losses = _log_losses(search.oof_logits.astype(np.float64), labels)
        diff = losses - joint_losses
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        rows[name] = {"cv_log_loss": round(float(losses.mean()), 5),
                      "cv_accuracy": round(float((search.oof_logits.argmax(1) == labels).mean()), 5),
                      "log_loss_above_joint": round(float(diff.mean()), 5), "standard_error": round(se, 5)}
        if diff.mean() < -SINGLE_SE * se:
            better[name] = float(diff.mean())
    chosen = min(better, key=better.get) if better else "joint"
    rule = (f"the networks' probes averaged (mean logits), unless one network alone has a lower 5-fold out-of-fold "
            f"log loss by more than {SINGLE_SE:g} paired standard errors")
    return {"chosen": chosen, "rule": rule, "images": int(len(labels)), "scores": rows}
