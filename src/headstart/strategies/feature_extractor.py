"""The feature-extractor strategy: CNN codes of the chosen layers (reused from auto's pass when it measured every
training image), a linear head on them with C chosen by cross-validation (folds keep duplicates together), and
familiarity on the penultimate codes. Several networks (a joint backbone) get a probe each, their logits averaged."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..auditing.duplicates import fold_groups
from ..codes.backbones import PENULTIMATE, Backbone
from ..codes.extract import FeatureExtractor
from ..data.folders import ImageSet
from ..data.imagestats import STATS
from ..heads.familiarity import fit_familiarity
from ..heads.linear import fit_linear
from ..results import FitInfo
from .fitted import Fitted, Settings, code_layers

#: Codes at least this large let go of the network's runtime while the head is fitted (its arena, about 0.3 GB for
#: Lite0, then does not add to the head's peak: cifar10's 40000 x 1984 codes, 317 MB). Smaller ones keep it open for
#: scoring the validation images, which would otherwise reopen it.
RELEASE_BYTES = 128 * 2**20


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


def _joint_probe(settings: Settings, codes: np.ndarray, labels: np.ndarray, n_classes: int,
                 networks: list[tuple[str, list[str]]], widths: list[int], searches: list[Any], groups: Any) -> Any:
    """Each network's probe on its own columns of ``codes`` (its layers, contiguous and in ``networks``' order;
    ``widths``: each layer's), their logits averaged into one head (:func:`headstart.heads.joint.mean_head`)."""
    from ..heads.joint import mean_head

    sizes = iter(widths)
    starts = np.cumsum([0, *[sum(next(sizes) for _ in own) for _, own in networks]])
    heads = [fit_linear(codes[:, a:b], labels, n_classes, settings.classifier, settings.C, settings.seed,
                        search=search, groups=groups) for a, b, search in zip(starts, starts[1:], searches)]
    return mean_head(heads, [name for name, _ in networks])


def _measured_codes(advice: Any, layers: list[str], networks: list, classifier: str) -> dict[str, Any] | None:
    """The training codes of ``layers`` from auto's pass, with the C searches they were scored with (the same as
    the fit's), when that pass measured every training image; else None."""
    measured = advice.measured if advice is not None else None
    if measured is None or not measured.complete or not all(p in measured.parts for p in layers):
        return None
    layer = "+".join(layers)
    found = [advice.searches.get("+".join(own)) for _, own in networks] if networks else [advice.searches.get(layer)]
    searches = [s if s is not None and s.classifier == classifier else None for s in found]
    return {"codes": measured.codes(layer), "labels": measured.images.labels, "skipped": measured.skipped,
            "computed": 0, "kept": measured.images.paths, "targets": measured.images.targets,
            "search": searches if networks else searches[0], "penultimate": measured.parts[PENULTIMATE],
            "widths": [measured.parts[part].shape[1] for part in layers]}


def _extracted_codes(extractor: FeatureExtractor, images: ImageSet, layers: list[str]) -> dict[str, Any]:
    """The training codes of ``layers`` (and the penultimate layer's) through ``extractor`` (cached)."""
    extracted = extractor.transform(images.paths)
    offsets = np.cumsum([0, *extracted.widths])
    j = code_layers(layers).index(PENULTIMATE)
    codes = extracted.codes[:, :offsets[len(layers)]]
    if codes.nbytes >= RELEASE_BYTES:  # large codes: the network's memory is not needed while the head is fitted
        extractor.release()
    return {"codes": codes, "labels": images.labels[extracted.kept], "skipped": extracted.skipped,
            "computed": extracted.extracted, "kept": [images.paths[i] for i in extracted.kept],
            "targets": None if images.targets is None else images.targets[extracted.kept], "search": None,
            "penultimate": extracted.codes[:, offsets[j]:offsets[j + 1]],
            "widths": list(extracted.widths[:len(layers)])}


def fit_codes(settings: Settings, images: ImageSet, backbone: Backbone, layers: list[str], started: float,
              precision: str = "fp32", also: list[str] | None = None, advice: Any = None) -> Fitted:
    """The feature extractor on ``backbone``: codes of ``layers`` (from ``advice``'s pass when it measured every
    training image, else extracted; ``also``: layers cached alongside), then the linear head."""
    also = [*(also or []), STATS]  # the images' figures, measured in the same pass: duplicates, leaks
    classes = list(images.class_names)
    extractor = settings.extractor_for(backbone, code_layers(layers), precision, also)
    loaded = time.perf_counter()
    networks = member_layers(backbone, layers)  # a joint backbone: each network's layers, in order
    got = _measured_codes(advice, layers, networks, settings.classifier) or _extracted_codes(extractor, images,
                                                                                             layers)
    codes, labels, search = got["codes"], got["labels"], got["search"]
    coded = time.perf_counter()
    groups = None
    if (search is None or isinstance(search, list) and None in search) and len(labels) > 1:
        figures = FeatureExtractor(backbone, [STATS], settings.cache_dir, batch_size=settings.batch_size)
        groups = fold_groups(got["penultimate"], figures.transform(got["kept"]).codes, labels, settings.seed)
    if got["targets"] is not None:
        from ..heads.multilabel import fit_labels

        head = fit_labels(codes, got["targets"], settings.C, settings.seed, search=None if networks else search,
                          groups=groups)
    elif networks:
        head = _joint_probe(settings, codes, labels, len(classes), networks, got["widths"],
                            search or [None] * len(networks), groups)
    else:
        head = fit_linear(codes, labels, len(classes), settings.classifier, settings.C, settings.seed, search=search,
                          groups=groups)
    fitted = time.perf_counter()
    familiarity = fit_familiarity(got["penultimate"], labels, settings.seed)
    finished = time.perf_counter()
    info: FitInfo = {
        "n_train_images": int(len(labels)), "n_skipped": len(got["skipped"]),
        "skipped": [{"path": p, "reason": r} for p, r in got["skipped"]], "n_codes_computed": got["computed"],
        "codes_dim": int(codes.shape[1]), "classifier": head.info,
        "seconds": {"load_model": round(loaded - started, 3), "codes": round(coded - loaded, 3),
                    "classifier": round(fitted - coded, 3), "familiarity": round(finished - fitted, 3),
                    "total": round(finished - started, 3)},
    }
    return Fitted(backbone, "feature-extractor", list(layers), classes, head, familiarity, info, also, precision,
                  extractor=extractor)
