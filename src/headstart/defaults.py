"""Defaults and choices shared by the CLI and the library, importable without loading torch."""

from __future__ import annotations

DEFAULT_MODEL = "tf_efficientnet_lite0"
ENGINES = ("auto", "onnx", "torch")
CLASSIFIERS = ("logistic", "svm")
STRATEGIES = ("feature-extractor", "fine-tune", "scratch")
FIT_STRATEGIES = ("auto", *STRATEGIES)
DEFAULT_BUDGET = 600.0
EXPORT_FORMATS = ("onnx", "torchscript")
PRECISIONS = ("fp32", "int8")
