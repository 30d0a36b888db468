"""headstart: a folder of labelled images in, a classifier built on a pretrained network out.

Imports are lazy: ``headstart.runtime`` (predicting from an exported ONNX file) never loads torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import ArtifactError, DataError, HeadstartError, ModelError

_LAZY = {
    "TransferClassifier": "headstart.classifier",
    "CNNCodes": "headstart.classifier",
    "load": "headstart.classifier",
    "advise": "headstart.advisor",
    "audit": "headstart.auditing.run",
    "AuditResult": "headstart.auditing.findings",
    "fit_folder": "headstart.workflow",
    "create_backbone": "headstart.backbones",
    "DEFAULT_MODEL": "headstart.defaults",
}

__all__ = ["CNNCodes", "DEFAULT_MODEL", "ArtifactError", "AuditResult", "DataError", "HeadstartError", "ModelError",
           "TransferClassifier", "advise", "audit", "create_backbone", "fit_folder", "load"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
