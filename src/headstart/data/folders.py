"""Finding labelled images on disk: class folders, train/validation splits, prediction inputs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

VAL_NAMES = ("val", "valid", "validation")
TRAIN_NAME = "train"


@dataclass
class ImageSet:
    """Image paths with integer labels indexing ``class_names`` (sorted folder names).

    Multi-label images also carry ``targets``, an (images x labels) 0/1 matrix over ``class_names``; their ``labels``
    are then strata (:func:`label_strata`), so that every stratified sample and split keeps rare labels in it.
    """

    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    root: Path | None = None
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def multilabel(self) -> bool:
        """Whether each image carries a set of labels (``targets``) rather than one class."""
        return self.targets is not None

    @property
    def answers(self) -> np.ndarray:
        """What a network learns to give: class indices, or (multi-label) the 0/1 label matrix."""
        return self.labels if self.targets is None else self.targets

    def subset(self, index: np.ndarray) -> ImageSet:
        """The images at ``index``, same classes."""
        targets = None if self.targets is None else self.targets[index]
        return ImageSet([self.paths[i] for i in index], self.labels[index], self.class_names, self.root, targets)

    def counts(self) -> dict[str, int]:
        """Images per class name (multi-label: images carrying each label)."""
        if self.targets is not None:
            return {name: int(n) for name, n in zip(self.class_names, self.targets.sum(0))}
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}


def label_strata(targets: np.ndarray) -> np.ndarray:
    """One stratum per multi-label row: its rarest label, or one past the last label for a row with none."""
    targets = np.asarray(targets)
    rarity = np.where(targets > 0, targets.sum(0)[None, :], np.inf)
    strata = rarity.argmin(1).astype(np.int64)
    strata[targets.sum(1) == 0] = targets.shape[1]
    return strata


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in ("__MACOSX", "Thumbs.db", "desktop.ini")


def files_under(folder: Path) -> list[Path]:
    """Every visible regular file below ``folder``, recursively, in sorted order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _visible(f))
    return found


def existing_dir(path: str | os.PathLike, what: str) -> Path:
    """The folder ``path``, or a one-line error saying what it is instead."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{what} {str(path)!r} does not exist; check the path")
    if not path.is_dir():
        raise DataError(f"{what} {str(path)!r} is not a folder; give a folder with one subfolder per class")
    return path


def read_class_folders(root: str | os.PathLike, class_names: list[str] | None = None) -> ImageSet:
    """Read ``root/<class>/**/<file>``; with ``class_names`` given, labels follow that list."""
    root = existing_dir(root, "data folder")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p.name))
    if not folders:
        raise DataError(f"{str(root)!r} has no class folders; put each class's images in {root}/<class name>/")
    if class_names is None:
        if len(folders) < 2:
            raise DataError(f"{str(root)!r} has only one class folder ({folders[0]!r}); a classifier needs two or more")
        class_names = folders
    unknown = [f for f in folders if f not in class_names]
    if unknown:
        raise DataError(f"{str(root)!r} has classes the model does not know: {', '.join(unknown)}; "
                        f"known classes are {', '.join(class_names)}")
    paths, labels = [], []
    for name in folders:
        files = files_under(root / name)
        if not files:
            raise DataError(f"class folder {str(root / name)!r} is empty; add images or remove the folder")
        paths.extend(files)
        labels.extend([class_names.index(name)] * len(files))
    return ImageSet(paths, np.asarray(labels, dtype=np.int64), list(class_names), root)


def evaluation_set(data: str | os.PathLike, class_names: list[str]) -> ImageSet:
    """Labelled images to score: ``data`` holds class folders, or a val/ split holding them."""
    data = existing_dir(data, "data folder")
    subdirs = {p.name for p in data.iterdir() if p.is_dir()}
    if not subdirs & set(class_names):
        split = next((n for n in VAL_NAMES if n in subdirs), None)
        if split:
            data = data / split
    return read_class_folders(data, class_names)


def prediction_inputs(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively) into a list of files, in the order given."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            paths.extend(files_under(path))
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"{str(path)!r} does not exist; give image files or folders")
    if not paths:
        raise DataError("no files found in the given inputs")
    return paths
