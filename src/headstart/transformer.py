"""CNNCodes: the CNN codes of images as a scikit-learn transformer, for any scikit-learn estimator after it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .codes.backbones import PENULTIMATE
from .codes.create import create_backbone
from .codes.extract import FeatureExtractor
from .data.decode import rgb_from_memory
from .data.inputs import prediction_items
from .defaults import DEFAULT_MODEL
from .disk import cache_folder
from .errors import DataError
from .sklearn_contract import TransformerEstimator
from .training.options import parse_layers


class CNNCodes(TransformerEstimator):
    """CNN codes of images as a scikit-learn transformer, for any scikit-learn classifier after it.

    >>> make_pipeline(CNNCodes(layer="blocks.5"), LogisticRegression()).fit(paths, labels)

    ``X``: image paths, a folder, Pillow images or uint8 arrays (as :meth:`TransferClassifier.predict`). Codes are
    cached on disk like the classifier's; an unusable image is an error here, since a transformer owes one row per
    sample.
    """

    def __init__(self, model: str = DEFAULT_MODEL, weights: str | None = None, layer: str | Sequence[str] = PENULTIMATE,
                 image_size: int | None = None, cache_dir: str | Path | None | bool = None, engine: str = "auto",
                 batch_size: int | None = None, progress: bool = False):
        self.model = model
        self.weights = weights
        self.layer = layer
        self.image_size = image_size
        self.cache_dir = cache_dir
        self.engine = engine
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X: Any = None, y: Any = None) -> CNNCodes:
        """Build the network (nothing is learned from ``X``: the codes come from pretrained weights)."""
        self.layers_ = parse_layers(self.layer)
        self.backbone_ = create_backbone(self.model, self.weights, image_size=self.image_size,
                                         cache_dir=cache_folder(self.cache_dir))
        self.extractor_ = FeatureExtractor(self.backbone_, self.layers_, self.cache_dir, self.engine, self.batch_size,
                                           progress=self.progress)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """One row of codes per image, the tapped layers side by side."""
        if not hasattr(self, "extractor_"):
            self.fit()
        items = prediction_items(X)
        rows: list[np.ndarray | None] = [None] * len(items)
        files = [i for i, item in enumerate(items) if isinstance(item, Path)]
        if files:
            codes = self.extractor_.transform([items[i] for i in files])
            if codes.skipped:
                path, reason = codes.skipped[0]
                raise DataError(f"{len(codes.skipped)} image(s) cannot be used, e.g. {path!r}: {reason}; "
                                "remove them before transforming")
            for i, row in zip(files, codes.codes):
                rows[i] = row
        images = [i for i, item in enumerate(items) if not isinstance(item, Path)]
        if images:
            batch = np.stack([self.backbone_.preprocess(rgb_from_memory(items[i])) for i in images])
            for i, row in zip(images, self.extractor_.transform_arrays(batch).codes):
                rows[i] = row
        return np.stack(rows)
