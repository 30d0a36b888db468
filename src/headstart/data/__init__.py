"""Images on disk, before any network: folders and their labels, splits, decoding and preprocessing, each image's
figures, and the training images decoded once (``imagecache``).

Imports only ``headstart.errors`` and ``headstart.disk`` from the rest of the package (and torch only in
``imagecache``). The names users reach for most import from here.
"""

from .folders import (
           TRAIN_NAME,
           VAL_NAMES,
           ImageSet,
           evaluation_set,
           existing_dir,
           files_under,
           prediction_inputs,
           read_class_folders,
)
from .splits import Splits, find_splits, stratified_split

__all__ = ["TRAIN_NAME", "VAL_NAMES", "ImageSet", "Splits", "evaluation_set", "existing_dir", "files_under",
           "find_splits", "prediction_inputs", "read_class_folders", "stratified_split"]
