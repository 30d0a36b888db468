"""What users pass as images: folders, paths with labels, Pillow images and arrays, checked once at the boundary."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .folders import ImageSet, label_strata, read_class_folders


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
    targets = label_matrix(y, class_names)
    if targets is not None:
        return multilabel_set([Path(p) for p in X], *targets)
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


def label_matrix(y: Any, class_names: list[str] | None = None) -> tuple[np.ndarray, list[str]] | None:
    """(0/1 matrix, label names) when ``y`` holds a set of labels per image, as scikit-learn's multi-label estimators
    take it: an indicator matrix (names ``class_names``, else "0", "1", ...) or one list of label names per image.
    None for one label per image."""
    if isinstance(y, np.ndarray) and y.ndim == 2 or (
            isinstance(y, Sequence) and len(y) and all(isinstance(v, (list, tuple, set, frozenset)) for v in y)):
        rows = [list(v) for v in y]
        numbers = all(isinstance(x, (int, float, np.number, np.bool_)) for row in rows for x in row)
        if numbers and len({len(r) for r in rows}) == 1:  # an indicator matrix, else label names
            matrix = np.asarray(rows)
            if not np.isin(matrix, (0, 1)).all():
                raise DataError("a label indicator matrix holds 0 or 1 only")
            names = list(class_names) if class_names is not None else [str(j) for j in range(matrix.shape[1])]
            if len(names) != matrix.shape[1]:
                raise DataError(f"the label matrix has {matrix.shape[1]} columns but the model has {len(names)} "
                                "labels")
            return matrix.astype(np.uint8), names
        names = list(class_names) if class_names is not None else sorted({str(x) for row in rows for x in row})
        index = {name: j for j, name in enumerate(names)}
        unknown = sorted({str(x) for row in rows for x in row if str(x) not in index})
        if unknown:
            raise DataError(f"unknown labels: {', '.join(unknown)}")
        matrix = np.zeros((len(rows), len(names)), np.uint8)
        for i, row in enumerate(rows):
            matrix[i, [index[str(x)] for x in row]] = 1
        return matrix, names
    return None


def multilabel_set(paths: list[Path], targets: np.ndarray, names: list[str]) -> ImageSet:
    """An ImageSet of images with several labels each."""
    if len(paths) != len(targets):
        raise DataError(f"{len(paths)} paths but {len(targets)} label rows")
    if len(names) < 2:
        raise DataError("multi-label data needs two or more labels")
    return ImageSet(paths, label_strata(targets), names, None, targets)
