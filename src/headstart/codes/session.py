"""ONNX Runtime sessions, torch-free: the one place that opens them (extraction, int8 calibration, the runtime)."""

from __future__ import annotations

import os


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session over ``path``, all graph optimisations on, ``threads`` (default: all cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
