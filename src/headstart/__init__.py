"""headstart: a folder of labelled images in, a classifier built on a pretrained network out."""

from .artifact import load
from .backbones import DEFAULT_MODEL, create_backbone
from .classifier import TransferClassifier
from .errors import ArtifactError, DataError, HeadstartError, ModelError

__all__ = ["DEFAULT_MODEL", "ArtifactError", "DataError", "HeadstartError", "ModelError", "TransferClassifier",
           "create_backbone", "load"]
