"""``fit``'s leak check: validation images that repeat a training image (exact or near copies) make the validation
score a test of memory, not of new images. Counted, named, and the accuracy without them reported beside the plain
one. Everything it reads was computed by the fit itself (codes and figures in the cache), except the figures of a
fine-tuned fit's images, which are measured by decoding alone.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..data.folders import ImageSet
from ..data.imagestats import STATS, ImageStats
from .duplicates import Pairs, find_pairs, find_pairs_by_figures

EXAMPLES = 5


def _codes_and_figures(clf: Any, paths: list) -> tuple[np.ndarray | None, ImageStats, np.ndarray]:
    """(penultimate codes or None, figures, kept indices) of ``paths`` as the fitted ``clf`` sees them."""
    from ..codes.backbones import PENULTIMATE
    from ..codes.extract import FeatureExtractor

    if clf.strategy_ != "feature-extractor":  # a trained network: its codes are not what thresholds assume
        extractor = FeatureExtractor(clf.backbone_, [STATS], clf.cache_dir, batch_size=clf.batch_size)
        result = extractor.transform(paths)
        return None, ImageStats(result.codes), result.kept
    extractor = FeatureExtractor(clf.backbone_, [PENULTIMATE, STATS], clf.cache_dir, clf.engine, clf.batch_size,
                                 also=[*clf._code_layers(), *(getattr(clf, "_also", None) or [])],
                                 precision=clf.precision_,
                                 calibration=getattr(clf, "_calibration", None),
                                 network=getattr(clf, "_network", None))
    result = extractor.transform(paths)
    width = result.widths[0] if len(result.kept) else 0
    return result.codes[:, :width], ImageStats(result.codes[:, width:]), result.kept


def check_leaks(clf: Any, train: ImageSet, val: ImageSet, data: str) -> dict[str, Any]:
    """Leaks from ``train`` into ``val`` for the fitted ``clf``: counts, examples, accuracy with and without them."""
    started = time.perf_counter()
    train_codes, train_stats, train_kept = _codes_and_figures(clf, list(train.paths))
    val_codes, val_stats, val_kept = _codes_and_figures(clf, list(val.paths))
    if train_codes is None or val_codes is None:
        pairs: Pairs = find_pairs_by_figures(val_stats, train_stats)
        method = "identical pixels, or the same low-frequency structure and colour (figures measured while decoding)"
    else:
        pairs = find_pairs(val_codes, val_stats, train_codes, train_stats)
        method = "identical pixels, or near copies by penultimate codes and image structure (as headstart audit)"
    leaked = sorted({int(val_kept[q]) for q in pairs.query})
    examples = []
    for q, r, exact in zip(pairs.query[:EXAMPLES], pairs.reference[:EXAMPLES], pairs.exact[:EXAMPLES]):
        examples.append({"val": str(val.paths[val_kept[q]]), "train": str(train.paths[train_kept[r]]),
                         "kind": "exact" if exact else "near"})
    result: dict[str, Any] = {"n_leaks": len(leaked), "n_val_checked": int(len(val_kept)), "method": method,
                              "examples": examples, "see": f"headstart audit {data}"}
    if leaked:
        rest = np.setdiff1d(np.arange(len(val)), leaked)
        result["n_val_without_leaks"] = int(len(rest))
        result["accuracy_without_leaks"] = (round(float(clf.evaluate(val.subset(rest))["accuracy"]), 4)
                                            if len(rest) else None)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def leak_line(leaks: dict[str, Any], accuracy: float | None, what: str = "accuracy") -> str:
    """The one line ``fit`` prints about leaks (``what``: the name of ``accuracy``, e.g. "subset accuracy")."""
    if not leaks["n_leaks"]:
        return f"leaks: none of {leaks['n_val_checked']} validation images repeats a training image"
    without = leaks.get("accuracy_without_leaks")
    plain = f"{accuracy:.4f} with them, " if accuracy is not None else ""
    rest = f"; {what} {plain}{without:.4f} on the other {leaks['n_val_without_leaks']}" if without is not None else ""
    return (f"leaks: {leaks['n_leaks']} of {leaks['n_val_checked']} validation images repeat a training image"
            f"{rest}; see them with `{leaks['see']}`")
