"""A saved model folder run from its own ``model.onnx``: what ``evaluate`` and ``report`` read of a fitted
TransferClassifier, with ONNX Runtime, numpy and Pillow only (torch and timm are never imported)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .runtime import OnnxClassifier


class FolderModel(OnnxClassifier):
    """The folder ``path`` (config.json read as ``config``) scored by its ONNX file ``onnx``; it offers the fitted
    estimator's ``classes_``, ``multilabel_``, ``strategy_``, ``layers_``, ``backbone_`` (name, weights,
    preprocess), ``head_`` (decide, thresholds), ``familiarity_`` (threshold, flag rate, info), ``config_``,
    ``path_``, ``predict_files`` and ``evaluate``."""

    def __init__(self, path: str | os.PathLike, onnx: str | os.PathLike, config: dict[str, Any]):
        super().__init__(onnx)
        self.config_, self.path_ = config, Path(path)
        self.classes_ = list(config["class_names"])
        self.multilabel_, self.strategy_, self.layers_ = bool(config.get("multilabel")), config["strategy"], \
            list(config["layers"])
        self.backbone_ = SimpleNamespace(name=config["model"], weights=config["weights"], preprocess=self.preprocess)
        self.head_ = SimpleNamespace(decide=self.decide, thresholds=self.thresholds)
        info = self.familiarity_info
        self.familiarity_ = None if info is None else SimpleNamespace(
            threshold=float(info["threshold"]), flag_rate=float(info["flag_rate"]), info=lambda: dict(info))

    def evaluate(self, images: Any) -> dict[str, Any]:
        """Metrics on labelled ``images`` (an ImageSet), as ``TransferClassifier.evaluate`` gives them."""
        from ..report.metrics import evaluation

        return evaluation(self.predict_files(images.paths), images, self.classes_,
                          self.decide if self.multilabel_ else None, self.familiarity_info)
