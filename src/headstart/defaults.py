"""Defaults and choices shared by the CLI and the library, importable without loading torch."""

from __future__ import annotations

DEFAULT_MODEL = "tf_efficientnet_lite0"
#: The networks auto compares when none is named, cheapest first (ranked at one layer on a stratified 500 training
#: images; a tie goes to the first on small data, to the last on large data, where fine-tuning is planned). Measured
#: cold with ``bench/auto.py networks`` and ``headstart fit``: dtd10 keeps Lite0 (0.9150) in 1.39x Lite0 alone's time;
#: cats_vs_dogs chooses Lite2 (0.9910 against 0.9940) in 1.71x; pneumoniamnist fine-tunes Lite2 to 0.9733 against
#: Lite0's 0.9656 in 1.35x; cifar10 fine-tunes Lite2 to 0.8632 against Lite0's 0.8568 within the same 600 s budget.
#: Lite1 as a third costs dtd10 1.89x and chose no better there.
AUTO_MODELS = ("tf_efficientnet_lite0", "tf_efficientnet_lite2")
ENGINES = ("auto", "onnx", "torch")
CLASSIFIERS = ("logistic", "svm")
STRATEGIES = ("feature-extractor", "fine-tune", "scratch")
FIT_STRATEGIES = ("auto", *STRATEGIES)
DEFAULT_BUDGET = 600.0
EXPORT_FORMATS = ("onnx", "torchscript")
PRECISIONS = ("fp32", "int8")
