"""The feature-extractor strategy: CNN codes of the chosen layers (reused from auto's pass when it measured every
training image), a linear head on them with C chosen by cross-validation (folds keep duplicates together), and
familiarity on the penultimate codes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..auditing.duplicates import fold_groups
from ..codes.backbones import PENULTIMATE
from ..data.folders import ImageSet
from ..data.imagestats import STATS
from ..heads.familiarity import fit_familiarity
from ..heads.linear import fit_linear
from ..results import FitInfo

#: Codes at least this large let go of the network's runtime while the head is fitted (its arena, about 0.3 GB for
#: Lite0, then does not add to the head's peak: cifar10's 40000 x 1984 codes, 317 MB). Smaller ones keep it open for
#: scoring the validation images, which would otherwise reopen it.
RELEASE_BYTES = 128 * 2**20

if TYPE_CHECKING:
    from ..estimator import TransferClassifier


def member_layers(backbone: Any, layers: list[str]) -> list[tuple[str, list[str]]]:
    """A joint backbone's networks with their part of ``layers`` (qualified names, in order), when ``layers`` span
    more than one of them; else empty (one network: an ordinary probe)."""
    if not getattr(backbone, "members", None):
        return []
    owners = [backbone.members[backbone.locate(layer)[0]].name for layer in layers]
    networks = list(dict.fromkeys(owners))
    if len(networks) < 2:
        return []
    return [(name, [layer for layer, owner in zip(layers, owners) if owner == name]) for name in networks]


def _joint_probe(clf: TransferClassifier, codes: Any, labels: Any, networks: list[tuple[str, list[str]]],
                 widths: list[int], searches: list[Any], groups: Any) -> Any:
    """Each network's probe on its own columns of ``codes`` (its layers, contiguous and in ``networks``' order;
    ``widths``: each layer's), their logits averaged into one head (:func:`headstart.heads.joint.mean_head`)."""
    from ..heads.joint import mean_head

    sizes = iter(widths)
    starts = np.cumsum([0, *[sum(next(sizes) for _ in own) for _, own in networks]])
    heads = [fit_linear(codes[:, a:b], labels, len(clf.classes_), clf.classifier, clf.C, clf.seed, search=search,
                        groups=groups) for a, b, search in zip(starts, starts[1:], searches)]
    return mean_head(heads, [name for name, _ in networks])


def fit_codes(clf: TransferClassifier, images: ImageSet, layers: list[str], started: float,
              also: list[str] | None = None, advice: Any = None) -> None:
    """The feature extractor: codes of ``layers`` (from ``advice``'s pass when it measured every training
    image, else extracted; ``also``: layers cached alongside), then the linear head."""
    clf.strategy_, clf.layers_, clf.classes_ = "feature-extractor", layers, list(images.class_names)
    clf._also = [*(also or []), STATS]  # the images' figures, measured in the same pass: duplicates, leaks
    layer = "+".join(layers)
    measured = advice.measured if advice is not None else None
    loaded = time.perf_counter()
    search = None
    networks = member_layers(clf.backbone_, layers)  # a joint backbone: each network's layers, in order
    if measured is not None and measured.complete and all(p in measured.parts for p in layers):
        codes, labels, skipped, computed = measured.codes(layer), measured.images.labels, measured.skipped, 0
        kept, targets = measured.images.paths, measured.images.targets
        found = [advice.searches.get("+".join(own)) for _, own in networks] if networks else [
            advice.searches.get(layer)]  # the C search each layer was scored with: the same as the fit's
        searches = [s if s is not None and s.classifier == clf.classifier else None for s in found]
        search = searches[0] if not networks else searches
        penultimate = measured.parts[PENULTIMATE]
        widths = [measured.parts[part].shape[1] for part in layers]
    else:
        extracted = clf._extractor().transform(images.paths)
        codes, penultimate = clf._split(extracted)
        widths = list(extracted.widths[:len(layers)])
        labels, skipped, computed = images.labels[extracted.kept], extracted.skipped, extracted.extracted
        kept = [images.paths[i] for i in extracted.kept]
        targets = None if images.targets is None else images.targets[extracted.kept]
        if codes.nbytes >= RELEASE_BYTES:  # large codes: the network's memory is not needed while the head is fitted
            clf._extractor().release()
    coded = time.perf_counter()
    groups = None
    if (search is None or isinstance(search, list) and None in search) and len(labels) > 1:
        groups = fold_groups(penultimate, clf.figures(kept), labels, clf.seed)
    if targets is not None:
        from ..heads.multilabel import fit_labels

        clf.head_ = fit_labels(codes, targets, clf.C, clf.seed, search=None if networks else search, groups=groups)
    elif networks:
        clf.head_ = _joint_probe(clf, codes, labels, networks, widths, search or [None] * len(networks), groups)
    else:
        clf.head_ = fit_linear(codes, labels, len(clf.classes_), clf.classifier, clf.C, clf.seed, search=search,
                               groups=groups)
    fitted = time.perf_counter()
    clf.familiarity_ = fit_familiarity(penultimate, labels, clf.seed)
    finished = time.perf_counter()
    fit_info: FitInfo = {
        "n_train_images": int(len(labels)),
        "n_skipped": len(skipped),
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "n_codes_computed": computed,
        "codes_dim": int(codes.shape[1]),
        "classifier": clf.head_.info,
        "seconds": {"load_model": round(loaded - started, 3), "codes": round(coded - loaded, 3),
                    "classifier": round(fitted - coded, 3), "familiarity": round(finished - fitted, 3),
                    "total": round(finished - started, 3)},
    }
    clf.fit_info_ = fit_info
