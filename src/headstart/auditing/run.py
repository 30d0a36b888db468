"""``headstart.audit``: one pass over a dataset's images, then every check that the codes and figures allow.

The pass is the one ``fit`` and ``advise`` make (penultimate and every candidate layer, plus the figures measured
while decoding), through the same code cache: an audit after a fit, or a fit after an audit, computes nothing again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.folders import ImageSet, existing_dir, files_under
from ..data.imagestats import STATS, ImageStats
from ..data.imagestats import WIDTH as STATS_WIDTH
from ..data.splits import find_splits
from ..errors import DataError
from .duplicates import CANDIDATES, REF_K, find_pairs, groups_of
from .findings import AuditResult, assemble
from .labels import LabelIssues, confused_pairs, find_label_issues, neighbour_agreement
from .neighbours import nearest, nearest_within, unit_rows
from .quality import OUTLIER_K, outlier_scores, quality_flags

WEAK_CLASSIFIER = 0.9  # out-of-fold accuracy under which label-error flags come with a warning
NEIGHBOURS = 10  # label agreement: the given label's share among this many nearest training images


@dataclass
class Coded:
    """The usable images of one split with their penultimate codes (the first network's: what compares images), the
    codes the label check reads (one array per network), and their figures; what could not be read."""

    images: ImageSet
    codes: np.ndarray
    stats: ImageStats
    skipped: list[tuple[str, str]]
    computed: int
    label_codes: list[np.ndarray] = field(default_factory=list)


def audit_layers(backbone: Any) -> tuple[str, list[list[str]]]:
    """(the layer whose codes compare images: the first network's penultimate, on which the duplicate thresholds were
    measured; per network, the layers the label check joins: its widest candidate, every top block and the
    penultimate)."""
    from ..codes.backbones import PENULTIMATE, candidate_layers
    from ..codes.joint import qualified

    members = getattr(backbone, "members", None)
    if not members:
        return PENULTIMATE, [max(candidate_layers(backbone), key=lambda c: c.count("+")).split("+")]
    return qualified(members[0].name, PENULTIMATE), [
        [qualified(m.name, part) for part in max(candidate_layers(m), key=lambda c: c.count("+")).split("+")]
        for m in members]


def audit_inputs(data: str | os.PathLike, val: str | os.PathLike | None = None
                 ) -> tuple[ImageSet, ImageSet | None, str]:
    """(training images, validation images or None, how they were found): class folders as ``fit`` finds them, or a
    plain folder of images (labels unknown: ``class_names`` empty)."""
    root = existing_dir(data, "data folder")
    has_class_folders = any(p.is_dir() and not p.name.startswith(".") and files_under(p) for p in root.iterdir())
    if has_class_folders or val is not None:
        splits = find_splits(root, val=val, val_fraction=0.0)
        return splits.train, splits.val, ("every image as training data" if splits.val is None else splits.how)
    files = files_under(root)
    if not files:
        raise DataError(f"{str(root)!r} holds no files; give a folder of images or of class folders")
    return ImageSet(files, np.full(len(files), -1, np.int64), [], root), None, "a folder of unlabelled images"


def code_images(extractor: Any, images: ImageSet, label_layers: list[list[str]] | None = None) -> Coded:
    """Codes and figures of ``images`` (cached), aligned with the usable images: the extractor's first layer's codes,
    each network's ``label_layers`` joined, then the figures (the extractor's layers must be in that order)."""
    result = extractor.transform(images.paths)
    if not len(result.kept):
        return Coded(images.subset(np.zeros(0, np.int64)), np.zeros((0, 1), np.float32),
                     ImageStats(np.zeros((0, STATS_WIDTH), np.float32)), result.skipped, result.extracted)
    edges = np.cumsum([0, *result.widths])  # column ranges of the layers, in order: views, not copies
    joined, at = [], 1
    for layers in label_layers or []:
        joined.append(result.codes[:, edges[at]:edges[at + len(layers)]])
        at += len(layers)
    return Coded(images.subset(result.kept), result.codes[:, :edges[1]], ImageStats(result.codes[:, edges[-2]:]),
                 result.skipped, result.extracted, joined)


def out_of_fold(codes: np.ndarray, images: ImageSet, groups: np.ndarray, seed: int, cache: Path | None = None
                ) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Out-of-fold class probabilities of every image from ``codes`` (grouped folds, C by cross-validated log loss;
    the C searched before for exactly these codes, labels and folds is read from ``cache``, a JSON file)."""
    import json

    from ..disk import write_cache
    from ..heads.linear import search_C

    labels, n_classes = images.labels, len(images.class_names)
    if len(np.unique(labels)) < 2:
        return None
    known = None
    if cache is not None and cache.is_file():
        try:
            known = [float(json.loads(cache.read_text())["C"])]
        except (OSError, ValueError, KeyError, TypeError):
            known = None
    search = search_C(codes, labels, n_classes, "logistic", seed, grid=known, groups=groups,
                      max_rows=len(labels))
    if search is None:
        return None
    if cache is not None and known is None:
        write_cache(cache, json.dumps({"C": search.C}).encode())
    return search.oof_proba(), {"C": search.C, "cv_folds": search.folds, "cv_accuracy": round(search.cv_accuracy, 4),
                                "cv_log_loss": round(search.cv_log_loss, 4), "C_from_cache": known is not None}


def _search_file(extractor: Any, train: Coded, groups: np.ndarray, seed: int, layers: list[str]) -> Path | None:
    """Where the label check's C is kept for exactly these codes (``layers``), labels and duplicate groups."""
    import hashlib

    from ..disk import file_identities, key_of

    if extractor.cache_dir is None:
        return None
    files = hashlib.sha256("\n".join(map(str, file_identities(train.images.paths))).encode()).hexdigest()
    key = key_of({"weights": extractor.backbone.digest, "preprocess": extractor.backbone.preprocess.to_dict(),
                  "files": files, "labels": train.images.labels.tolist(), "groups": groups.tolist(), "seed": seed,
                  "layers": layers, "v": 2})
    return extractor.cache_dir / "scores" / f"audit-{extractor.backbone.name}-{key}.json"


def check_labels(train: Coded, groups: np.ndarray, neighbours: Any, seed: int, caches: list[Path | None] | None = None,
                 networks: list[str] | None = None
                 ) -> tuple[LabelIssues | None, np.ndarray | None, dict[str, Any] | None]:
    """(label issues, each image's neighbour agreement, the cross-validation's figures), or Nones without labels.
    Each network's out-of-fold probabilities (from ``train.label_codes``) are averaged."""
    if not train.images.class_names or len(train.codes) <= NEIGHBOURS:
        return None, None, None
    codes = train.label_codes or [train.codes]
    caches = caches or [None] * len(codes)
    networks = networks or [f"network {i + 1}" for i in range(len(codes))]
    probas, cv = [], {}
    for name, x, cache in zip(networks, codes, caches):
        oof = out_of_fold(x, train.images, groups, seed, cache)
        if oof is None:
            return None, None, None
        probas.append(oof[0])
        cv[name] = oof[1]
    proba = np.mean(probas, axis=0)
    labels = train.images.labels
    cv = {"networks": cv, "cv_accuracy": round(float((proba.argmax(1) == labels).mean()), 4)}
    return find_label_issues(proba, labels), neighbour_agreement(labels[neighbours.index[:, :NEIGHBOURS]], labels), cv


def _val_outliers(val: Coded | None, train: Coded) -> np.ndarray | None:
    """Validation images' outlier scores against the training images."""
    if val is None or not len(val.codes) or len(train.codes) < OUTLIER_K:
        return None
    found = nearest(unit_rows(val.codes), unit_rows(train.codes), OUTLIER_K)
    return 1.0 - found.similarity[:, -1].astype(np.float64)


def _images_to_audit(data: str | os.PathLike | None, val: str | os.PathLike | None, train_images: ImageSet | None,
                     val_images: ImageSet | None) -> tuple[ImageSet, ImageSet | None, str]:
    """(training images, validation images or None, how they were found): given, or read from ``data``."""
    if train_images is not None:
        return train_images, val_images, "images given"
    if data is None:
        raise DataError("give a data folder (or train_images) to audit")
    train_images, found_val, how = audit_inputs(data, val)
    return train_images, val_images if val_images is not None else found_val, how


def audit(data: str | os.PathLike | None = None, val: str | os.PathLike | None = None, *,
          train_images: ImageSet | None = None, val_images: ImageSet | None = None, model: str | None = None,
          weights: str | None = None, cache_dir: str | Path | None | bool = None, engine: str = "auto",
          batch_size: int | None = None, seed: int = 0, progress: bool = False) -> AuditResult:
    """Audit a dataset: duplicates, leaks between splits, likely label errors, outliers, unusable or odd images and
    class-level figures, each finding with its evidence, a score (higher is surer) and a suggested action.

    ``data``: a folder as ``fit`` reads it (class folders, or train/ and val/), or a plain folder of images (then
    only what needs no labels); ``val``: a separate validation folder. Or ``train_images`` / ``val_images`` as
    :class:`ImageSet`. Nothing is ever written to the data folders.
    """
    from ..codes.backbones import candidate_layers
    from ..codes.create import create_backbone
    from ..codes.extract import FeatureExtractor
    from ..codes.joint import named_networks, network_names
    from ..disk import cache_folder

    started = time.perf_counter()
    train_images, val_images, how = _images_to_audit(data, val, train_images, val_images)
    backbone = create_backbone(",".join(named_networks(model, auto=weights is None)), weights,
                               cache_dir=cache_folder(cache_dir))
    parts = sorted({p for c in candidate_layers(backbone) for p in c.split("+")})
    compare, label_layers = audit_layers(backbone)
    extractor = FeatureExtractor(backbone, [compare, *(p for layers in label_layers for p in layers), STATS],
                                 cache_dir, engine, batch_size, progress=progress, also=parts)
    train = code_images(extractor, train_images, label_layers)
    val_coded = code_images(extractor, val_images) if val_images is not None else None
    coded = time.perf_counter()

    neighbours = nearest_within(train.codes, max(NEIGHBOURS, OUTLIER_K, CANDIDATES, REF_K))  # once, for every check
    train_pairs = find_pairs(train.codes, train.stats, found=neighbours)
    groups = groups_of(len(train.codes), train_pairs)
    val_pairs = find_pairs(val_coded.codes, val_coded.stats) if val_coded else None
    leaks = (find_pairs(val_coded.codes, val_coded.stats, train.codes, train.stats) if val_coded else None)
    checked = time.perf_counter()
    labelled = bool(train.images.class_names)
    caches = [_search_file(extractor, train, groups, seed, layers) for layers in label_layers]
    issues, agreement, cv = check_labels(train, groups, neighbours, seed, caches, network_names(backbone.name))
    labelled_at = time.perf_counter()
    outlier, threshold = outlier_scores(train.codes, neighbours)
    val_outlier = _val_outliers(val_coded, train)
    all_stats = ImageStats(np.concatenate([train.stats.values] + ([val_coded.stats.values] if val_coded else [])))
    flags = quality_flags(all_stats, min(backbone.preprocess.input_size))
    finished = time.perf_counter()

    result = assemble(train, val_coded, train_pairs, val_pairs, leaks, issues, agreement, (outlier, threshold),
                      val_outlier, flags)
    result["data"] = {"path": str(Path(data).resolve()) if data is not None else None, "split": how,
                      "train_images": len(train_images), "val_images": len(val_images) if val_images else 0,
                      "class_names": list(train.images.class_names), "labelled": labelled}
    result["model"] = backbone.name
    result["class_level"] = class_level(train.images, issues)
    result.update(_methods(train, issues, cv, outlier, threshold))
    result["seconds"] = {"codes": round(coded - started, 3), "duplicates": round(checked - coded, 3),
                         "labels": round(labelled_at - checked, 3),
                         "outliers_quality": round(finished - labelled_at, 3),
                         "total": round(time.perf_counter() - started, 3)}
    result["n_codes_computed"] = train.computed + (val_coded.computed if val_coded else 0)
    return result


def _methods(train: Coded, issues: LabelIssues | None, cv: dict[str, Any] | None, outlier: np.ndarray,
             threshold: float) -> dict[str, Any]:
    """How label errors and outliers were found, with the figures a reader needs to weigh them."""
    label_errors = {"method": "the given label less likely than chance (1/k) out of fold, with two classes also "
                              "confident learning's pruning by noise rate; 5-fold out-of-fold probabilities of a "
                              "logistic classifier on each network's top blocks and penultimate codes joined, "
                              "averaged over the networks; folds keep duplicates together",
                    "cv": cv} if issues is not None else None
    if label_errors is not None and cv["cv_accuracy"] < WEAK_CLASSIFIER:
        label_errors["note"] = (
            f"the out-of-fold classifier is right on {cv['cv_accuracy']:.0%} of the training images, so some flags "
            "may be hard images rather than wrong labels: trust the top of the ranking (score) most")
    least = np.argsort(-outlier)[:10]
    outliers = {"method": f"one minus the cosine similarity to the {OUTLIER_K}th nearest other training image "
                          "(penultimate codes)", "threshold": round(float(threshold), 4),
                "least_typical": [{"path": str(train.images.paths[i]), "score": round(float(outlier[i]), 4)}
                                  for i in least]}
    return {"label_errors": label_errors, "outliers": outliers}


def class_level(images: ImageSet, issues: LabelIssues | None) -> dict[str, Any] | None:
    """Images per class, the imbalance ratio, and the class pairs most often confused."""
    if not images.class_names:
        return None
    counts = images.counts()
    return {"counts": counts, "imbalance_ratio": round(max(counts.values()) / max(1, min(counts.values())), 2),
            "confused_pairs": confused_pairs(issues.joint, images.class_names) if issues is not None else []}
