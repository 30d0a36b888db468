"""What users pass as images: folders, paths with labels, Pillow images and arrays, checked once at the boundary."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .folders import ImageSet, read_class_folders


def prediction_items(X: Any) -> list[Any]:
    """Paths (folders expanded to their files, sorted) and in-memory images, in the order given."""
    from PIL import Image

    from .folders import files_under

    if isinstance(X, (str, os.PathLike, Image.Image)) or (isinstance(X, np.ndarray) and X.ndim in (2, 3)):
        X = [X]
    elif isinstance(X, np.ndarray) and X.ndim == 4:
        X = list(X)
    elif isinstance(X, ImageSet):
        X = X.paths
    items: list[Any] = []
    for item in X:
        if isinstance(item, (str, os.PathLike)):
            path = Path(item).expanduser()
            if path.is_dir():
                found = files_under(path)
                if not found:
                    raise DataError(f"folder {str(path)!r} holds no files to predict")
                items.extend(found)
            else:
                items.append(path)  # a missing or unreadable file becomes a NaN row, with its reason in codes()
        elif isinstance(item, (Image.Image, np.ndarray)):
            items.append(item)
        else:
            raise DataError(f"cannot predict a {type(item).__name__}; give image paths, folders, Pillow images or "
                            "H x W x 3 uint8 arrays")
    if not items:
        raise DataError("nothing to predict: the input is empty")
    return items


def as_image_set(X: Any, y: Sequence[Any] | None, class_names: list[str] | None = None) -> ImageSet:
    """Accept a folder, an ImageSet, or paths with labels (class names or indices)."""
    if isinstance(X, ImageSet):
        return X
    if isinstance(X, (str, os.PathLike)):
        if y is not None:
            raise DataError("give either a folder of class folders, or a list of paths with labels y")
        return read_class_folders(X, class_names)
    if y is None:
        raise DataError("labels y are required with a list of paths")
    paths, values = [Path(p) for p in X], list(np.asarray(y).tolist())
    if len(paths) != len(values):
        raise DataError(f"{len(paths)} paths but {len(values)} labels")
    names = list(class_names) if class_names is not None else sorted(set(values))
    if len(names) < 2:
        raise DataError("a classifier needs two or more classes")
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({str(v) for v in values if v not in index})
    if unknown:
        raise DataError(f"unknown labels: {', '.join(unknown)}")
    return ImageSet(paths, np.asarray([index[v] for v in values], np.int64), names)
