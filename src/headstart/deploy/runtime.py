"""Predicting from an exported ONNX file with ONNX Runtime, numpy and Pillow only (torch is never imported)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..codes.session import onnx_session
from ..data.decode import Preprocess, decoded_batches
from ..errors import ArtifactError
from ..results import Predictions

EXPORT_FORMAT = "headstart-onnx/1"


class OnnxClassifier:
    """A classifier exported by ``headstart export --format onnx``: images in, class probabilities out."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        path = self.path = Path(path).expanduser()
        if not path.is_file():
            raise ArtifactError(f"{str(path)!r} does not exist; give a file written by `headstart export`")
        try:
            self.session = onnx_session(path, threads)
        except Exception as exc:
            raise ArtifactError(f"cannot load {str(path)!r} as ONNX ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != EXPORT_FORMAT:
            raise ArtifactError(f"{str(path)!r} was not exported by headstart (no {EXPORT_FORMAT} metadata)")
        self.classes_ = json.loads(meta["class_names"])
        self.preprocess = Preprocess.from_dict(json.loads(meta["preprocess"]))
        self.metadata = meta
        self.familiarity_info = json.loads(meta["familiarity"]) if "familiarity" in meta else None
        self.thresholds = np.asarray(json.loads(meta["thresholds"]), np.float32) if "thresholds" in meta else None
        self.fill_empty = meta.get("fill_empty") == "true"
        self.outputs = ["probabilities"] + (["familiarity"] if self.familiarity_info else [])

    def predict_files(self, paths: list[Path], batch_size: int = 8) -> Predictions:
        """(probabilities of the usable files, their indices in ``paths``, skipped (path, reason)), with
        ``.familiarity`` when the exported model has it."""
        rows, familiar, kept, skipped = [], [], [], []
        for index, batch, failed in decoded_batches(paths, self.preprocess, batch_size, os.cpu_count() or 1):
            skipped += [(str(paths[i]), reason) for i, reason in failed]
            if batch is not None:
                out = self.session.run(self.outputs, {"images": batch})
                rows.append(out[0])
                familiar.append(out[-1])
                kept += index
        proba = np.concatenate(rows) if rows else np.zeros((0, len(self.classes_)), np.float32)
        familiarity = None
        if self.familiarity_info:
            familiarity = np.concatenate(familiar) if familiar else np.zeros(0, np.float32)
        return Predictions(proba, np.asarray(kept, np.int64), skipped, familiarity)

    @property
    def multilabel(self) -> bool:
        """Whether the model gives each image a set of labels (sigmoid outputs, a threshold per label)."""
        return self.thresholds is not None

    def decide(self, proba: np.ndarray) -> np.ndarray | None:
        """Multi-label: the 0/1 label matrix of ``proba`` (None for a one-class model)."""
        if self.thresholds is None:
            return None
        from ..heads.multilabel import decide

        return decide(proba, self.thresholds, self.fill_empty)

    @property
    def threshold(self) -> float | None:
        """Familiarity below which an image is unfamiliar (None without familiarity)."""
        return float(self.familiarity_info["threshold"]) if self.familiarity_info else None


def prediction_entry(classes: list[str], proba: np.ndarray, familiarity: float | None,
                     threshold: float | None, chosen: np.ndarray | None = None) -> dict:
    """One image's answer as ``predict --json`` and the server give it: the label (multi-label, with ``chosen``
    its 0/1 row: ``labels``, most probable first), every class's probability (most probable first), and familiarity
    with the unfamiliar flag where the model has them."""
    order = proba.argsort()[::-1]
    picked = {"label": classes[order[0]]} if chosen is None else {
        "labels": [classes[j] for j in order if chosen[j]]}
    entry = {**picked, "probabilities": {classes[j]: round(float(proba[j]), 6) for j in order}}
    if familiarity is not None and threshold is not None:
        entry.update(familiarity=round(float(familiarity), 4), unfamiliar=bool(familiarity < threshold))
    return entry
