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

    def predict_files(self, paths: list[Path], batch_size: int = 8
                      ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        """(probabilities of the usable files, their indices in ``paths``, skipped (path, reason))."""

        def load(path: Path) -> np.ndarray | str:
            try:
                return self.preprocess.load(path)
            except ImageSkipped as exc:
                return str(exc)

        rows, kept, skipped = [], [], []
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for start in range(0, len(paths), batch_size):
                chunk = list(pool.map(load, paths[start:start + batch_size]))
                arrays = [(start + i, a) for i, a in enumerate(chunk) if not isinstance(a, str)]
                skipped += [(str(paths[start + i]), a) for i, a in enumerate(chunk) if isinstance(a, str)]
                if arrays:
                    rows.append(self.session.run(["probabilities"], {"images": np.stack([a for _, a in arrays])})[0])
                    kept += [i for i, _ in arrays]
        proba = np.concatenate(rows) if rows else np.zeros((0, len(self.classes_)), np.float32)
        return proba, np.asarray(kept, np.int64), skipped
