"""Train/validation splits: a folder's own split folders, or a stratified split of one folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .folders import TRAIN_NAME, VAL_NAMES, ImageSet, existing_dir, read_class_folders


@dataclass
class Splits:
    """The training images, the validation images (or None), and how they were found."""

    train: ImageSet
    val: ImageSet | None
    how: str
    notes: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)  # images left out by ``without``, per split
    relabelled: dict[str, int] | None = None  # labels changed by ``relabel``, per split (None: never relabelled)

    def without(self, paths: list[Path]) -> Splits:
        """The same splits less the images at ``paths`` (compared as resolved paths)."""
        gone = {p.resolve() for p in paths}
        parts, excluded = {}, dict(self.excluded)
        for name, images in (("train", self.train), ("val", self.val)):
            if images is None:
                continue
            keep = np.array([p.resolve() not in gone for p in images.paths], bool)
            parts[name] = images.subset(np.flatnonzero(keep))
            if (~keep).any():
                excluded[name] = excluded.get(name, 0) + int((~keep).sum())
        return Splits(parts["train"], parts.get("val"), self.how, self.notes, excluded, self.relabelled)

    def relabel(self, labels: dict[Path, int]) -> Splits:
        """The same splits with the images at the keys of ``labels`` (resolved paths) given those class indices;
        the files stay where they are. Counts the labels that changed, per split."""
        parts, changed = {}, dict(self.relabelled or {})
        for name, images in (("train", self.train), ("val", self.val)):
            if images is None:
                continue
            new = np.array([labels.get(p.resolve(), old) for p, old in zip(images.paths, images.labels)], np.int64)
            parts[name] = ImageSet(images.paths, new, images.class_names, images.root, images.targets)
            if (new != images.labels).any():
                changed[name] = changed.get(name, 0) + int((new != images.labels).sum())
        return Splits(parts["train"], parts.get("val"), self.how, self.notes, self.excluded, changed)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with ``fraction`` of each class in val (at least one image of each class stays in train)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(index) * fraction))
        if fraction > 0 and len(index) >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(index) - 1)
        val.extend(index[:n_val])
        train.extend(index[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def iterative_stratification(targets: np.ndarray, proportions: list[float], seed: int,
                             groups: np.ndarray | None = None) -> np.ndarray:
    """The part (0 .. len(proportions)-1) of each multi-label row, by iterative stratification (Sechidis et al.
    2011, as scikit-multilearn does it): the label with the fewest rows left is dealt first, each of its rows to the
    part that still wants most of that label (then most rows; ties at random, seeded). ``groups``: rows sharing an
    id (duplicates) go to one part together."""
    targets = np.asarray(targets) > 0
    units = np.arange(len(targets)) if groups is None else np.unique(groups, return_inverse=True)[1]
    unit_targets = np.zeros((units.max() + 1, targets.shape[1]), bool)
    np.logical_or.at(unit_targets, units, targets)
    sizes = np.bincount(units).astype(np.float64)
    share = np.asarray(proportions, np.float64)
    wanted = share[:, None] * unit_targets.sum(0)[None, :]
    wanted_rows = share * len(targets)
    rng = np.random.default_rng(seed)
    part = np.full(len(unit_targets), -1)
    left = unit_targets.copy()
    while left.any():
        label = np.where(left.any(0), left.sum(0), np.inf).argmin()
        for unit in rng.permutation(np.flatnonzero(left[:, label])):
            best = np.flatnonzero(wanted[:, label] == wanted[:, label].max())
            best = best[wanted_rows[best] == wanted_rows[best].max()]
            p = int(rng.choice(best))
            part[unit], left[unit] = p, False
            wanted[p] -= unit_targets[unit]
            wanted_rows[p] -= sizes[unit]
    for unit in rng.permutation(np.flatnonzero(part < 0)):  # rows with no label: where most rows are wanted
        p = int(wanted_rows.argmax())
        part[unit], wanted_rows[p] = p, wanted_rows[p] - sizes[unit]
    return part[units]


def find_splits(data: str | os.PathLike, val: str | os.PathLike | None = None,
                val_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Locate the training and validation images for ``data``.

    ``data/train`` + ``data/val`` (or ``valid``/``validation``) are used as given; otherwise ``val`` names a
    separate validation folder, or a stratified ``val_fraction`` of the training images is held out with ``seed``.
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    data = existing_dir(data, "data folder")
    train_dir, val_dir, how = data, None, ""
    if (data / TRAIN_NAME).is_dir():
        train_dir = data / TRAIN_NAME
        val_dir = next((data / n for n in VAL_NAMES if (data / n).is_dir()), None)
        how = f"{train_dir.name}/ and {val_dir.name}/ folders" if val_dir else ""
    if val is not None:
        val_dir, how = existing_dir(val, "validation folder"), f"--val {val}"
    train = read_class_folders(train_dir)
    if val_dir is not None:
        return Splits(train, read_class_folders(val_dir, train.class_names), how or "given folders")
    if val_fraction == 0:
        return Splits(train, None, "no validation split (--val-fraction 0)")
    train_idx, val_idx = stratified_split(train.labels, val_fraction, seed)
    return Splits(train.subset(train_idx), train.subset(val_idx),
                  f"stratified {val_fraction:g} of {train_dir} held out (seed {seed})")


def find_label_splits(data: str | os.PathLike, labels: str | os.PathLike, val_labels: str | os.PathLike | None = None,
                      val_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Multi-label training and validation images from label CSVs (:mod:`headstart.data.labelfile`): ``val_labels``
    names the validation images, else ``val_fraction`` of ``labels`` is held out by iterative stratification."""
    from .labelfile import check_training_targets, labelled_images, unnamed_note

    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    images, unnamed = labelled_images(data, labels)
    sources = Path(labels).name
    if val_labels is not None:
        val, val_unnamed = labelled_images(data, val_labels, images.class_names, "--val-labels")
        shared = {p.resolve() for p in images.paths} & {p.resolve() for p in val.paths}
        unnamed = [p for p in unnamed if p in set(val_unnamed)]
        sources += f" or {Path(val_labels).name}"
        notes = unnamed_note(unnamed, images.root, sources)
        if shared:
            raise DataError(f"{len(shared)} image(s) are named by both --labels and --val-labels, e.g. "
                            f"{str(next(iter(shared)))!r}; an image is either for training or for validation")
        splits = Splits(images, val, f"--val-labels {val_labels}", notes)
    elif val_fraction == 0:
        splits = Splits(images, None, "no validation split (--val-fraction 0)", unnamed_note(unnamed, images.root,
                                                                                             sources))
    else:
        part = iterative_stratification(images.targets, [1 - val_fraction, val_fraction], seed)
        splits = Splits(images.subset(np.flatnonzero(part == 0)), images.subset(np.flatnonzero(part == 1)),
                        f"{val_fraction:g} of {sources} held out by iterative stratification (seed {seed})",
                        unnamed_note(unnamed, images.root, sources))
    check_training_targets(splits.train)
    return splits
