"""headstart: a folder of labelled images in, a classifier built on a pretrained network out.

The package is laid out as the data flows (see the README's Layout): ``data`` -> ``codes`` -> ``heads`` and
``training`` -> ``auditing`` -> ``auto`` -> ``report`` and ``deploy``, with the estimator (``estimator``), the model
folder (``artifact``) and ``fit`` as one call (``workflow``) on top and the command line (``cli``) above them all.

Imports are lazy: ``headstart.deploy.runtime`` (predicting from an exported ONNX file) never loads torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import ArtifactError, DataError, HeadstartError, ModelError

__version__ = "0.2.0"  # pyproject.toml's version (tests/test_docs.py checks they agree)

_LAZY = {
    "TransferClassifier": "headstart.estimator",
    "CNNCodes": "headstart.transformer",
    "load": "headstart.estimator",
    "advise": "headstart.auto.advice",
    "Advice": "headstart.auto.advice",
    "audit": "headstart.auditing.run",
    "AuditResult": "headstart.auditing.findings",
    "fit_folder": "headstart.workflow",
    "find_splits": "headstart.data.splits",
    "ImageSet": "headstart.data.folders",
    "Splits": "headstart.data.splits",
    "create_backbone": "headstart.codes.create",
    "DEFAULT_MODEL": "headstart.defaults",
    "FineTuneConfig": "headstart.training.options",
    "FineTuner": "headstart.training.module",
    "ImageDataModule": "headstart.training.datamodule",
    "HeadFirst": "headstart.training.callbacks",
    "FitResult": "headstart.results",
    "FitInfo": "headstart.results",
    "AutoEvidence": "headstart.results",
    "TrainingInfo": "headstart.results",
    "DataSummary": "headstart.results",
    "SkippedFile": "headstart.results",
    "Predictions": "headstart.results",
}

__all__ = ["DEFAULT_MODEL", "Advice", "ArtifactError", "AuditResult", "AutoEvidence", "CNNCodes", "DataError",
           "DataSummary", "FineTuneConfig", "FineTuner", "FitInfo", "FitResult", "HeadFirst", "HeadstartError",
           "ImageDataModule", "ImageSet", "ModelError", "Predictions", "SkippedFile", "Splits", "TrainingInfo",
           "TransferClassifier", "advise", "audit", "create_backbone", "find_splits", "fit_folder", "load"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
