"""Up-front checks of what a user gives (numbers, folders, weights files, outputs), with one-line errors.

Torch-free: every command runs these before any model is loaded or image read, so a mistake costs seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ArtifactError, DataError, HeadstartError

WEIGHT_SOURCES = ("embedded", "hub", "none")


def at_least(option: str, value: float | None, low: float) -> None:
    """A one-line error unless ``value`` is at least ``low``."""
    if value is not None and not value >= low:
        raise HeadstartError(f"{option} must be at least {low:g}, got {value:g}")


def positive(option: str, value: float | None, what: str = "a positive number") -> None:
    """A one-line error unless ``value`` is positive."""
    if value is not None and not value > 0:
        raise HeadstartError(f"{option} must be {what}, got {value:g}")


def weights(source: str | None) -> None:
    """``--weights``: a known source, or a file that exists."""
    if source is None or source in WEIGHT_SOURCES:
        return
    path = Path(source).expanduser()
    if not path.is_file():
        raise HeadstartError(f"--weights {source!r} is neither {', '.join(WEIGHT_SOURCES)} nor an existing file; "
                             "give a .safetensors or PyTorch state-dict file")


def devices(value: str) -> int | str:
    """``--devices``: 'auto', a count of at least 1, or comma-separated device ids."""
    text = str(value).strip()
    if text == "auto":
        return text
    if text.isdigit():
        if int(text) < 1:
            raise HeadstartError("--devices must be 'auto', a count of at least 1, or ids such as 0,1")
        return int(text)
    if all(part.strip().isdigit() for part in text.split(",")) and text.strip(","):
        return text
    raise HeadstartError(f"--devices must be 'auto', a count of at least 1, or ids such as 0,1; got {value!r}")


def val_options(data: str | os.PathLike, val: str | None, val_fraction: float | None) -> None:
    """``--val-fraction`` is only meaningful when the validation images are not given as a folder."""
    from ..data.folders import VAL_NAMES, existing_dir

    if val is not None:
        existing_dir(val, "validation folder")
    if val_fraction is None:
        return
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction:g}")
    root = Path(data).expanduser()
    folder = val or next((root / n for n in VAL_NAMES if (root / "train").is_dir() and (root / n).is_dir()), None)
    if folder is not None:
        raise DataError(f"--val-fraction does nothing here: the validation images are the folder {str(folder)!r}; "
                        "drop --val-fraction, or point DATA at the training folder alone")


def output_file(path: str | os.PathLike, overwrite: bool, ours: str | None = None, option: str = "--out") -> Path:
    """A file to write: not a folder, replaced only with ``overwrite`` (or when it holds ``ours``), and creatable."""
    from ..artifact import check_writable

    path = Path(path).expanduser()
    if path.is_dir():
        raise ArtifactError(f"{str(path)!r} is a folder; give a file name for {option}")
    if path.exists() and not overwrite and not (ours and _holds(path, ours)):
        raise ArtifactError(f"{str(path)!r} already exists; pass --overwrite or choose another {option}")
    check_writable(path, option)
    return path


def _holds(path: Path, marker: str) -> bool:
    try:
        with path.open("rb") as f:
            return marker.encode() in f.read(4096)
    except OSError:
        return False


def precision(value: str | None, engine: str = "auto") -> None:
    """int8 runs on ONNX Runtime only (``engine`` "torch" also stands for TorchScript export)."""
    if value == "int8" and engine == "torch":
        raise HeadstartError("--precision int8 runs on ONNX Runtime: use it with --format onnx and without "
                             "--engine torch, or use --precision fp32")


def _existing(listed: list[Path], file: str | os.PathLike, option: str) -> list[Path]:
    """``listed`` paths, each of which must exist: a relative path is taken from the current folder, else from
    ``file``'s own folder."""
    base = Path(file).expanduser().resolve().parent
    found, missing = [], []
    for path in listed:
        candidates = [path] if path.is_absolute() else [path, base / path]
        hit = next((c for c in candidates if c.exists()), None)
        (found if hit else missing).append(hit or path)
    if missing:
        raise DataError(f"{option} {str(file)!r} names {len(missing)} file(s) that do not exist, e.g. "
                        f"{str(missing[0])!r}; fix the paths (relative ones are read from here or from the file's "
                        "folder)")
    return found


def exclusions(file: str | os.PathLike) -> list[Path]:
    """``--exclude FILE``: its paths (an audit CSV's path column, or one per line), each of which must exist."""
    from ..auditing.outputs import read_exclusions

    listed = read_exclusions(file)
    if not listed:
        raise DataError(f"--exclude {str(file)!r} names no files; give an audit CSV or one path per line")
    return _existing(listed, file, "--exclude")


def relabels(file: str | os.PathLike) -> dict[Path, str]:
    """``--relabel FILE``: each listed file (which must exist) and its new label, one label per file."""
    from ..auditing.outputs import read_relabels

    pairs = read_relabels(file)
    if not pairs:
        raise DataError(f"--relabel {str(file)!r} changes no label; give rows of path,label (or audit rows whose "
                        "action reads relabel)")
    found = _existing([path for path, _ in pairs], file, "--relabel")
    labels: dict[Path, str] = {}
    for path, (_, label) in zip(found, pairs):
        key = path.resolve()
        if labels.get(key, label) != label:
            raise DataError(f"--relabel {str(file)!r} gives {str(path)!r} two labels ({labels[key]}, {label}); "
                            "keep one")
        labels[key] = label
    return labels


def relabelled(splits, labels: dict[Path, str], file: str):
    """``splits`` with the listed images given their new labels: every label a class of the data, every file one of
    its images, and no class left without a training image."""
    names = splits.train.class_names
    unknown = sorted({label for label in labels.values() if label not in names})
    if unknown:
        raise DataError(f"--relabel {file!r} names label(s) that are not classes of the data: {', '.join(unknown)}; "
                        f"the classes are {', '.join(names)}")
    known = {p.resolve() for images in (splits.train, splits.val) if images is not None for p in images.paths}
    outside = [path for path in labels if path not in known]
    if outside:
        raise DataError(f"--relabel {file!r} names {len(outside)} file(s) that are not among the images to fit, e.g. "
                        f"{str(outside[0])!r}; list files of the data folder")
    kept = splits.relabel({path: names.index(label) for path, label in labels.items()})
    empty = [name for name, n in kept.train.counts().items() if n == 0]
    if empty:
        raise DataError(f"--relabel {file!r} leaves no training image in class(es) {', '.join(empty)}; keep some")
    return kept


def without(splits, paths: list[Path], file: str):
    """``splits`` less the excluded images; refused when a class would be left with no training image."""
    kept = splits.without(paths)
    if kept.train.multilabel:
        from ..data.labelfile import check_training_targets

        check_training_targets(kept.train, f"--labels (after --exclude {file!r})")
        return kept
    empty = [name for name, n in kept.train.counts().items() if n == 0]
    if empty:
        raise DataError(f"--exclude {file!r} leaves no training image in class(es) {', '.join(empty)}; keep some, or "
                        "remove the class folder")
    return kept


def label_options(args) -> None:
    """``--labels`` / ``--val-labels`` (multi-label): files that exist, and no option that needs class folders."""
    from ..data.labelfile import label_file

    labels, val_labels = getattr(args, "labels", None), getattr(args, "val_labels", None)
    if val_labels and not labels:
        raise HeadstartError("--val-labels needs --labels (the training images' CSV)")
    if not labels:
        return
    label_file(labels, args.data)
    if val_labels:
        label_file(val_labels, args.data, "--val-labels")
        if args.val_fraction is not None:
            raise HeadstartError("--val-fraction does nothing with --val-labels; drop one of them")
    if getattr(args, "val", None):
        raise HeadstartError("--val takes a folder of class folders; with --labels give validation images as "
                             "--val-labels CSV")
    if getattr(args, "classifier", "logistic") != "logistic":
        raise HeadstartError("multi-label data is fitted with one logistic model per label; drop --classifier svm")
    if getattr(args, "class_weight", None):
        raise HeadstartError("--class-weight balances one-label classes; it does not apply to --labels")
