"""The networks that compute CNN codes: the ONNX export of the tapped network (fp32 or int8), cached, and ONNX
Runtime to run it. torch is imported only to export (:mod:`headstart.codes.onnx_export`); eager PyTorch on a GPU is
:class:`headstart.codes.codesnet.TorchRunner`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.decode import Preprocess, decoded_batches
from ..disk import file_identity, key_of, write_atomic, write_cache
from ..errors import ModelError
from .session import onnx_session

if TYPE_CHECKING:
    from .backbones import Backbone


class OnnxRunner:
    """An exported CodesNet (fp32 or int8) run by ONNX Runtime on the CPU; outputs in the order of ``layers``."""

    def __init__(self, path: Path, layers: list[str], threads: int | None = None):
        self.path = path
        self.session = onnx_session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        computed = json.loads(meta["layers"]) if "layers" in meta else layers
        missing = [layer for layer in layers if layer not in computed]
        if missing:
            raise ModelError(f"{str(path)!r} computes no {', '.join(missing)}; it has {', '.join(computed)}")
        self.outputs = [f"codes_{computed.index(layer)}" for layer in layers]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {"images": batch})


#: ONNX files (path, size, modification time) that ONNX Runtime has opened in this process: not checked again
_OPENED: set[str] = set()


#: Where networks go when the cache cannot hold them (full, read-only): removed when the process ends.
_SPILL: list[tempfile.TemporaryDirectory] = []


def _write_network(path: Path, data: bytes) -> Path:
    """``data`` written to ``path``, or, when the cache refuses it, to a folder of this process's own (said once)."""
    if write_cache(path, data):
        return path
    if not _SPILL:
        _SPILL.append(tempfile.TemporaryDirectory(prefix="headstart-networks-"))
    spilled = Path(_SPILL[0].name) / path.name
    write_atomic(spilled, data)  # a second refusal is the run's end: one line, naming the folder and sizes
    return spilled


def _cached(path: Path, build: Callable[[], bytes]) -> Path:
    """``path``, built first when missing, or when ONNX Runtime cannot open it (a damaged file, rebuilt once)."""
    for attempt in range(2):
        spilled = Path(_SPILL[0].name) / path.name if _SPILL else None
        if not path.exists() and spilled is not None and spilled.exists():
            path = spilled
        if not path.exists():
            path = _write_network(path, build())
        identity = file_identity(path)
        if identity in _OPENED:
            return path
        try:
            onnx_session(path, 1)
        except Exception:
            if attempt:
                raise
            path.unlink(missing_ok=True)
            continue
        _OPENED.add(identity)
        return path
    return path


def fp32_network(backbone: Backbone, layers: list[str], cache_dir: Path) -> Path:
    """The ONNX export of CodesNet(backbone, layers), cached on disk by everything that shapes it."""
    key = key_of({"model": backbone.name, "weights": backbone.digest, "layers": layers,
                  "preprocess": backbone.preprocess.to_dict(), "torch": metadata.version("torch"), "v": 3})

    def build() -> bytes:
        from .codesnet import codes_net
        from .onnx_export import export_onnx

        return export_onnx(codes_net(backbone, layers), backbone.preprocess, len(layers),
                           {"layers": json.dumps(layers)})

    return _cached(cache_dir / "onnx" / f"{backbone.name}-{key}.onnx", build)


def int8_network(fp32: Path, calibration: list[Path], preprocess: Preprocess, workers: int) -> Path:
    """``fp32`` quantised to int8 with ranges from the ``calibration`` images, cached beside it."""
    import onnxruntime

    from .quantize import RECIPE, quantize

    recipe = {"recipe": RECIPE, "onnxruntime": onnxruntime.__version__}
    key = key_of({"network": fp32.stem, "calibration": [file_identity(p) for p in calibration], **recipe})

    def build() -> bytes:  # batches of 4: the ranges are the same (min and max over batches), in 0.45 s, not 0.8
        batches = [batch for _, batch, _ in decoded_batches(calibration, preprocess, 4, workers)
                   if batch is not None]
        return quantize(fp32, batches, fp32.with_name(f"{fp32.stem}-int8-weights-{key_of(recipe)}.npz"))

    return _cached(fp32.with_name(f"{fp32.stem}-int8-{key}.onnx"), build)

