"""Predicting from an exported ONNX file with ONNX Runtime, numpy and Pillow only (torch is never imported)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import ArtifactError
from .images import ImageSkipped, Preprocess

EXPORT_FORMAT = "headstart-onnx/1"


class Predictions(tuple):
    """``(proba, kept, skipped)`` for a list of files, unpacking as that triple, with ``familiarity`` of the usable
    files as an attribute (None where the model has no familiarity)."""

    def __new__(cls, proba: np.ndarray, kept: np.ndarray, skipped: list[tuple[str, str]],
                familiarity: np.ndarray | None = None) -> Predictions:
        self = super().__new__(cls, (proba, kept, skipped))
        self.familiarity = familiarity
        return self

    @property
    def proba(self) -> np.ndarray:
        return self[0]

    @property
    def kept(self) -> np.ndarray:
        return self[1]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self[2]


class OnnxClassifier:
    """A classifier exported by ``headstart export --format onnx``: images in, class probabilities out."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path).expanduser()
        if not path.is_file():
            raise ArtifactError(f"{str(path)!r} does not exist; give a file written by `headstart export`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ArtifactError(f"cannot load {str(path)!r} as ONNX ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != EXPORT_FORMAT:
            raise ArtifactError(f"{str(path)!r} was not exported by headstart (no {EXPORT_FORMAT} metadata)")
        self.classes_ = json.loads(meta["class_names"])
        self.preprocess = Preprocess.from_dict(json.loads(meta["preprocess"]))
        self.metadata = meta
        self.familiarity_info = json.loads(meta["familiarity"]) if "familiarity" in meta else None
        self.outputs = ["probabilities"] + (["familiarity"] if self.familiarity_info else [])

    def predict_files(self, paths: list[Path], batch_size: int = 8) -> Predictions:
        """(probabilities of the usable files, their indices in ``paths``, skipped (path, reason)), with
        ``.familiarity`` when the exported model has it."""

        def load(path: Path) -> np.ndarray | str:
            try:
                return self.preprocess.load(path)
            except ImageSkipped as exc:
                return str(exc)

        rows, familiar, kept, skipped = [], [], [], []
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for start in range(0, len(paths), batch_size):
                chunk = list(pool.map(load, paths[start:start + batch_size]))
                arrays = [(start + i, a) for i, a in enumerate(chunk) if not isinstance(a, str)]
                skipped += [(str(paths[start + i]), a) for i, a in enumerate(chunk) if isinstance(a, str)]
                if arrays:
                    out = self.session.run(self.outputs, {"images": np.stack([a for _, a in arrays])})
                    rows.append(out[0])
                    familiar.append(out[-1])
                    kept += [i for i, _ in arrays]
        proba = np.concatenate(rows) if rows else np.zeros((0, len(self.classes_)), np.float32)
        familiarity = None
        if self.familiarity_info:
            familiarity = np.concatenate(familiar) if familiar else np.zeros(0, np.float32)
        return Predictions(proba, np.asarray(kept, np.int64), skipped, familiarity)

    @property
    def threshold(self) -> float | None:
        """Familiarity below which an image is unfamiliar (None without familiarity)."""
        return float(self.familiarity_info["threshold"]) if self.familiarity_info else None
