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


#: What fit takes, said by every error about it.
TAKES = ("give images: a folder of class folders, image paths, Pillow images or uint8 arrays (H x W, H x W x 3, or a "
         "batch N x H x W (x 3)) with labels y")


def memory_items(X: Any, y: Sequence[Any] | None) -> list[Any] | None:
    """The in-memory images of ``X`` (Pillow images and uint8 arrays, one per label), or None when ``X`` names
    files; a one-line error for what is no image: numbers of another type, or a feature matrix."""
    from PIL import Image

    if isinstance(X, (str, os.PathLike, ImageSet)):
        return None
    if isinstance(X, np.ndarray):
        if X.dtype != np.uint8:
            what = "a 2-D array of numbers (a feature matrix?)" if X.ndim == 2 else f"a {X.dtype} array"
            raise DataError(f"X is {what}; {TAKES}. Features of your own go to a scikit-learn classifier (CNNCodes "
                            "makes them from images in a Pipeline); 0-1 float images: (X * 255).astype('uint8')")
        if X.ndim == 2 or (X.ndim == 3 and X.shape[-1] in (3, 4) and (y is None or len(y) != len(X))):
            raise DataError(f"X is one image of shape {X.shape}; a classifier needs many: {TAKES}")
        if X.ndim not in (3, 4):
            raise DataError(f"X has shape {X.shape}; {TAKES}")
        return list(X)
    items = list(X)
    if items and all(isinstance(item, (Image.Image, np.ndarray)) for item in items):
        for item in items:
            if isinstance(item, np.ndarray) and (item.dtype != np.uint8 or item.ndim == 1):
                raise DataError(f"an item of X is a {item.dtype} array of shape {item.shape}; {TAKES}")
        return items
    if any(isinstance(item, (Image.Image, np.ndarray)) for item in items):
        raise DataError(f"X mixes in-memory images with other things; {TAKES}")
    if any(isinstance(item, (Sequence, np.ndarray)) and not isinstance(item, (str, bytes)) for item in items):
        raise DataError(f"X is a table of numbers (a feature matrix?); {TAKES}. Features of your own go to a "
                        "scikit-learn classifier (CNNCodes makes them from images in a Pipeline)")
    return None


_TEMPORARY: list[Any] = []  # where in-memory images go when nothing is cached: removed when the process ends


def images_folder(cache: Path | None) -> Path:
    """Where in-memory images are kept as files: the cache's ``images`` folder, else a temporary one."""
    if cache is not None:
        return cache / "images"
    if not _TEMPORARY:
        import tempfile

        _TEMPORARY.append(tempfile.TemporaryDirectory(prefix="headstart-images-"))
    return Path(_TEMPORARY[0].name)


def saved_images(items: list[Any], folder: Path) -> list[Path]:
    """Each in-memory image as an RGB PNG named by the digest of its pixels, in ``folder`` (written once, atomically):
    the same pixels are the same file, whose codes the cache then keeps as any file's."""
    import hashlib
    import io

    from ..disk import write_atomic
    from .decode import rgb_from_memory

    paths = []
    for item in items:
        image = rgb_from_memory(item)
        digest = hashlib.sha256(f"{image.width}x{image.height}".encode() + image.tobytes()).hexdigest()[:32]
        path = folder / f"{digest}.png"
        if not path.is_file():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            write_atomic(path, buffer.getvalue())
        paths.append(path)
    return paths


def as_image_set(X: Any, y: Sequence[Any] | None, class_names: list[str] | None = None,
                 memory: Path | None = None) -> ImageSet:
    """Accept a folder, an ImageSet, or images with labels (class names or indices): paths, or Pillow images and
    uint8 arrays, which are kept as PNG files in ``memory`` (:func:`saved_images`)."""
    if isinstance(X, ImageSet):
        return X
    if isinstance(X, (str, os.PathLike)):
        if y is not None:
            raise DataError("give either a folder of class folders, or a list of paths with labels y")
        return read_class_folders(X, class_names)
    items = memory_items(X, y)
    if items is not None:
        if memory is None:
            raise DataError(f"in-memory images are not taken here; {TAKES}")
        X = saved_images(items, memory)
    if y is None:
        raise DataError("labels y are required with a list of images")
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
