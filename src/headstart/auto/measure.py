"""Measuring a dataset in one pass: its size, its similarity to ImageNet, and every candidate layer's codes."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codes.backbones import Backbone
from ..codes.extract import FeatureExtractor
from ..data.decode import typical_short_side
from ..data.folders import ImageSet
from ..data.splits import stratified_split

#: Median images per class from which a dataset counts as large: with that many, fine-tuning the whole network
#: beat every frozen-code classifier in our measurements (pneumoniamnist ~2400 per class, cifar10 4000); with
#: 80-1000 per class (dtd10, cats_vs_dogs) a linear classifier on codes was as good or better.
LARGE_PER_CLASS = 2000
#: Mean top-1 ImageNet probability of the embedded EfficientNet-Lite0 on imagenet_samples (1000 images).
REFERENCE_CONFIDENCE = 0.7189
#: Similar when the confidence ratio is at least this. Measured ratios (bench/advisor.py): cats_vs_dogs 0.575,
#: dtd10 0.448, cifar10 0.292, pneumoniamnist 0.148; set halfway between the object photos (cats_vs_dogs) and the
#: nearest unlike data (textures), rounded to 0.5.
SIMILAR_RATIO = 0.5
#: When fine-tuning is likely (large data), the layers are first measured on this many training images; the rest
#: are measured too only if their pass is predicted to take at most FULL_PASS_SHARE of the budget.
PROBE_SAMPLE = 2000
FULL_PASS_SHARE = 0.25
#: When the sample's codes all came from the cache, this many of the other images are measured to time the rest.
RATE_SLICE = 256


@dataclass
class Measured:
    """Codes of every candidate layer part for the measured training images, from one pass."""

    parts: dict[str, np.ndarray]
    images: ImageSet  # the measured images that could be used, labels aligned with the codes
    skipped: list[tuple[str, str]]
    computed: int  # images run through the network (the rest came from the cache)
    complete: bool  # every training image was measured
    seconds: float

    columns: dict[str, tuple[int, int]] | None = None  # each part's columns of ``block``, when they share one
    block: np.ndarray | None = None

    def codes(self, layer: str) -> np.ndarray:
        """The codes of ``layer`` (its parts joined by ``+`` side by side): a view, not a copy, when its parts lie
        side by side in that order in the measured block (the widest join on cifar10: 317 MB not copied)."""
        names = layer.split("+")
        spans = [self.columns.get(p) for p in names] if self.columns else [None]
        if None not in spans and all(a[1] == b[0] for a, b in zip(spans, spans[1:])):
            return self.block[:, spans[0][0]:spans[-1][1]]
        return np.concatenate([self.parts[p] for p in names], 1)


def is_large(images: ImageSet) -> bool:
    """The size rule: the median class (or label) has at least LARGE_PER_CLASS training images."""
    return float(np.median(list(images.counts().values()))) >= LARGE_PER_CLASS


def measure_size(images: ImageSet, sample: int = 64) -> dict[str, Any]:
    """Counts per class, the size rule's verdict, and the images' typical shorter side (from file headers)."""
    counts = np.asarray(list(images.counts().values()))
    median = float(np.median(counts))
    what = "label" if images.multilabel else "class"
    return {"images": int(len(images)), "classes": len(images.class_names), "unit": what,
            "min_per_class": int(counts.min()),
            "median_per_class": median, "large": is_large(images),
            "rule": f"large when the median {what} has at least {LARGE_PER_CLASS} training images",
            "median_short_side": typical_short_side(images.paths, sample)}


def subsample(images: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """A stratified ``n`` of ``images`` (all of them when there are no more)."""
    if len(images) <= n:
        return images
    _, keep = stratified_split(images.labels, n / len(images), seed)
    return images.subset(keep)


def say(message: str, progress: bool) -> None:
    """A progress line on stderr (a phase of deciding), so that a slow machine never looks hung."""
    if progress:
        print(f"auto: {message}", file=sys.stderr, flush=True)


def measure_codes(extractor: FeatureExtractor, train: ImageSet, large: bool, budget: float | None, seed: int = 0,
                  progress: bool = False) -> Measured:
    """One pass over the training images for every layer of ``extractor``: all of them, or (large data) a stratified
    PROBE_SAMPLE when the full pass is predicted to take more than FULL_PASS_SHARE of ``budget``."""
    started = time.perf_counter()
    first = subsample(train, PROBE_SAMPLE, seed) if large else train
    say(f"measuring {len(first)} training images (one pass: {len(extractor.layers) - 1} layers, the ImageNet "
        "classifier and the images' figures)", progress)
    result = extractor.transform(first.paths)
    measured, skipped, computed = [(first, result)], list(result.skipped), result.extracted
    if len(first) < len(train):
        seconds, timed = time.perf_counter() - started, result.extracted
        chosen = set(map(str, first.paths))
        rest = train.subset(np.array([i for i, p in enumerate(train.paths) if str(p) not in chosen], np.int64))
        if not timed and budget is not None:  # the sample came from the cache: time a slice of the rest instead
            slice_started = time.perf_counter()
            piece = rest.subset(np.arange(min(RATE_SLICE, len(rest))))
            more = extractor.transform(piece.paths)
            measured.append((piece, more))
            skipped += more.skipped
            computed += more.extracted
            rest = rest.subset(np.arange(len(piece), len(rest)))
            seconds, timed = time.perf_counter() - slice_started, more.extracted
        predicted = seconds * len(rest) / timed if timed else 0.0  # nothing computed: the rest is cached too
        if len(rest) and (budget is None or predicted <= FULL_PASS_SHARE * budget):
            say(f"measuring the other {len(rest)} training images", progress)
            more = extractor.transform(rest.paths)
            measured.append((rest, more))
            skipped += more.skipped
            computed += more.extracted
    paths = [s.paths[i] for s, r in measured for i in r.kept]
    labels = np.concatenate([s.labels[r.kept] for s, r in measured])
    targets = np.concatenate([s.targets[r.kept] for s, r in measured]) if train.multilabel else None
    images = ImageSet(paths, labels, train.class_names, train.root, targets)
    complete = sum(len(s) for s, _ in measured) == len(train)
    offsets = np.cumsum([0, *measured[0][1].widths]).tolist()
    block = np.concatenate([r.codes for _, r in measured if len(r.kept)]) if len(measured) > 1 else result.codes
    measured.clear()  # the chunks' codes are all in the block now
    result = more = None
    columns = {layer: (offsets[i], offsets[i + 1]) for i, layer in enumerate(extractor.layers)}
    parts = {layer: block[:, start:stop] for layer, (start, stop) in columns.items()}
    return Measured(parts, images, skipped, computed, complete, time.perf_counter() - started, columns, block)


def measure_similarity(backbone: Backbone, codes: np.ndarray) -> dict[str, Any]:
    """Mean top-1 probability of the pretrained ImageNet classifier on penultimate ``codes``, vs ImageNet's own."""
    head = backbone.pretrained_head
    if head is None:
        return {"method": "unavailable: these weights have no ImageNet classifier", "similar": False}
    weight, bias = head.weight.detach().numpy(), head.bias.detach().numpy()
    logits = codes @ weight.T + bias
    logits -= logits.max(1, keepdims=True)
    proba = np.exp(logits)
    proba /= proba.sum(1, keepdims=True)
    confidence = float(proba.max(1).mean())
    ratio = confidence / REFERENCE_CONFIDENCE
    return {"method": "mean top-1 probability of the pretrained ImageNet classifier, relative to ImageNet images",
            "images": len(codes), "confidence": round(confidence, 4), "reference_confidence": REFERENCE_CONFIDENCE,
            "ratio": round(ratio, 4), "threshold": SIMILAR_RATIO, "similar": ratio >= SIMILAR_RATIO}
