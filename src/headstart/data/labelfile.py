"""Multi-label images: a folder of images and a CSV naming each image's labels, read and checked before any image is.

Two layouts of the CSV are read, told apart by their values:

- one 0/1 column per label after the file name (``Filenames,desert,mountains,...``, as miml_scenes);
- ``filename,labels`` with a row's labels separated by spaces, ``;`` or ``|`` (fastai's and Kaggle Planet's).

File names are relative to the data folder, or to its ``images/``. A row naming a missing file, two rows giving one
file different labels, a label no row carries: each a one-line error. Images in the folder that no row names are
left out and listed (a folder often holds more than was tagged).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .folders import ImageSet, existing_dir, files_under, label_strata

SEPARATORS = re.compile(r"[\s;|]+")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Images with no row in the CSV, named in the note that says they were left out.
EXAMPLES = 3


@dataclass
class LabelTable:
    """A label CSV: file names as written, their 0/1 label matrix, the label names, and where it came from."""

    files: list[str]
    targets: np.ndarray  # (rows, labels) uint8
    names: list[str]
    source: Path
    layout: str  # "indicator" (a 0/1 column per label) or "list" (labels in one column)


def label_file(path: str | os.PathLike, data: str | os.PathLike | None = None, option: str = "--labels") -> Path:
    """The CSV ``path``, as given or relative to ``data``; a one-line error when it is neither."""
    given = Path(path).expanduser()
    for candidate in [given] + ([Path(data).expanduser() / given] if data is not None and not given.is_absolute()
                                else []):
        if candidate.is_file():
            return candidate
    where = f" (looked here and in {str(data)!r})" if data is not None else ""
    raise DataError(f"{option} {str(path)!r} is not a file{where}; give the CSV of file names and labels")


def _rows(path: Path, option: str) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            table = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {option} {str(path)!r} as a CSV ({exc}); save it as UTF-8 text") from None
    if len(table) < 2:
        raise DataError(f"{option} {str(path)!r} has no rows under its header; give a header, then one row per image")
    header = [cell.strip() for cell in table[0]]
    if len(header) < 2:
        raise DataError(f"{option} {str(path)!r} has one column; give 'filename,labels' or a 0/1 column per label")
    for number, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{option} {str(path)!r} row {number} has {len(row)} cells where the header has "
                            f"{len(header)}; fix that row")
    return header, [[cell.strip() for cell in row] for row in table[1:]]


def read_label_table(path: str | os.PathLike, option: str = "--labels", names: list[str] | None = None
                     ) -> LabelTable:
    """Read and check a label CSV; with ``names`` (a model's labels), its labels must be among them."""
    path = Path(path)
    header, rows = _rows(path, option)
    values = {cell for row in rows for cell in row[1:]}
    indicator = len(header) > 2 or values <= {"0", "1"}
    if indicator:
        found = header[1:]
        blank = [i + 2 for i, name in enumerate(found) if not name]
        if blank:
            raise DataError(f"{option} {str(path)!r}: column {blank[0]} has no name; name every label column")
        if len(set(found)) < len(found):
            twice = sorted({n for n in found if found.count(n) > 1})
            raise DataError(f"{option} {str(path)!r} names the column {twice[0]!r} twice; merge or rename it")
        for number, row in enumerate(rows, start=2):
            bad = next((c for c in row[1:] if c not in ("0", "1")), None)
            if bad is not None:
                raise DataError(f"{option} {str(path)!r} row {number} holds {bad!r} in a label column; label "
                                "columns hold 0 or 1")
        targets = np.asarray([[int(c) for c in row[1:]] for row in rows], np.uint8)
    else:
        sets = [{t for t in SEPARATORS.split(row[1]) if t} for row in rows]
        found = sorted(set().union(*sets))
        index = {name: j for j, name in enumerate(found)}
        targets = np.zeros((len(rows), len(found)), np.uint8)
        for i, labels in enumerate(sets):
            targets[i, [index[t] for t in labels]] = 1
    files = [row[0] for row in rows]
    if not all(files):
        raise DataError(f"{option} {str(path)!r} row {files.index('') + 2} has no file name; fill it in or remove it")
    table = LabelTable(files, targets, list(found), path, "indicator" if indicator else "list")
    table = _merge_repeats(table, option)
    if names is not None:
        return _as_names(table, names, option)
    if len(table.names) < 2:
        raise DataError(f"{option} {str(path)!r} names {len(table.names)} label(s); multi-label data needs two or "
                        "more (for one yes/no label, use two class folders)")
    empty = [n for n, count in zip(table.names, table.targets.sum(0)) if count == 0]
    if empty:
        raise DataError(f"{option} {str(path)!r}: no row carries the label(s) {', '.join(map(repr, empty))}; remove "
                        "the column, or tag the images that show it")
    return table


def _merge_repeats(table: LabelTable, option: str) -> LabelTable:
    """One row per file: repeats with the same labels are merged, repeats with different labels refused."""
    first: dict[str, int] = {}
    keep = []
    for i, name in enumerate(table.files):
        j = first.setdefault(os.path.normpath(name), i)
        if j == i:
            keep.append(i)
        elif not np.array_equal(table.targets[i], table.targets[j]):
            raise DataError(f"{option} {str(table.source)!r} gives {name!r} different labels in rows {j + 2} and "
                            f"{i + 2}; keep one row per image")
    return LabelTable([table.files[i] for i in keep], table.targets[keep], table.names, table.source, table.layout)


def _as_names(table: LabelTable, names: list[str], option: str) -> LabelTable:
    """The table's labels in the order of ``names`` (a model's): unknown labels refused, missing columns too."""
    unknown = [n for n in table.names if n not in names]
    if unknown:
        raise DataError(f"{option} {str(table.source)!r} has label(s) the model does not know: "
                        f"{', '.join(map(repr, unknown))}; it knows {', '.join(names)}")
    missing = [n for n in names if n not in table.names]
    if missing and table.layout == "indicator":
        raise DataError(f"{option} {str(table.source)!r} has no column for {', '.join(map(repr, missing))}; give a "
                        "0/1 column for every label of the model")
    targets = np.zeros((len(table.files), len(names)), np.uint8)
    for j, name in enumerate(table.names):
        targets[:, names.index(name)] = table.targets[:, j]
    return LabelTable(table.files, targets, list(names), table.source, table.layout)


def image_root(data: Path, table: LabelTable, option: str = "--labels") -> Path:
    """The folder the CSV's file names are relative to: ``data`` or ``data/images``, the one where they exist."""
    roots = [data] + ([data / "images"] if (data / "images").is_dir() else [])
    found = [sum((root / f).is_file() for f in table.files) for root in roots]
    best = int(np.argmax(found))
    root = roots[best]
    if found[best] == len(table.files):
        return root
    if found[best] == 0:
        folders = sorted(p.name for p in data.iterdir() if p.is_dir() and p.name != "images")
        if len(folders) >= 2:
            raise DataError(f"{str(data)!r} looks like class folders ({', '.join(folders[:3])}, ...) and none of the "
                            f"files {option} names is in it; for one label per image drop {option}, else give "
                            "file names relative to DATA")
    missing = [f for f in table.files if not (root / f).is_file()]
    raise DataError(f"{option} {str(table.source)!r} names {len(missing)} file(s) not found under {str(root)!r}, e.g. "
                    f"{missing[0]!r}; fix the names or remove those rows")


def labelled_images(data: str | os.PathLike, labels: str | os.PathLike, names: list[str] | None = None,
                    option: str = "--labels") -> tuple[ImageSet, list[Path]]:
    """(the images ``labels`` names, with their targets; the images in their folder that no row names)."""
    data = existing_dir(data, "data folder")
    table = read_label_table(label_file(labels, data, option), option, names)
    root = image_root(data, table, option)
    paths = [root / f for f in table.files]
    named = {p.resolve() for p in paths}
    unnamed = [p for p in files_under(root) if p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in named]
    return ImageSet(paths, label_strata(table.targets), table.names, root, table.targets), unnamed


def unnamed_note(unnamed: list[Path], root: Path | None, sources: str) -> list[str]:
    """The note that says which images no row names, and that they were left out."""
    if not unnamed:
        return []
    examples = ", ".join(str(p.relative_to(root) if root else p) for p in unnamed[:EXAMPLES])
    return [f"{len(unnamed)} image(s) in {root} have no row in {sources} and were left out (e.g. {examples})"]


def check_training_targets(train: ImageSet, option: str = "--labels") -> None:
    """Every label must be both present and absent among the training images, or no classifier can learn it."""
    counts = train.targets.sum(0)
    never = [n for n, c in zip(train.class_names, counts) if c == 0]
    always = [n for n, c in zip(train.class_names, counts) if c == len(train)]
    if never:
        raise DataError(f"label(s) {', '.join(map(repr, never))} are on none of the {len(train)} training images; "
                        f"tag some images with them or remove them from {option}")
    if always:
        raise DataError(f"label(s) {', '.join(map(repr, always))} are on every one of the {len(train)} training "
                        f"images, so there is nothing to tell apart; remove them from {option}")
