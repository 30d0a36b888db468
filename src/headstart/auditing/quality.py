"""Unusable or odd images, from the figures measured while decoding, and outliers, from penultimate codes.

Thresholds were measured on the shared sets' training images and on planted copies (``bench/audit.py quality``):
darkened copies (brightness x0.15) have a 99th-percentile luminance of 38 at most, clean images 29 at the least
(one dtd10 texture of 800); blurred copies (Gaussian, radius 3 on 256 px) a sharpness under 0.21, clean images 0.26
at the least. Size, colour and information are judged against the dataset itself, so a set of 28-px X-rays is not
one long list of small grayscale images.
"""

from __future__ import annotations

import numpy as np

from ..data.imagestats import ImageStats
from .neighbours import Neighbours, nearest, unit_rows

DARK_P99 = 40.0  # nearly black: even the brightest 1% of pixels is darker than this (0-255)
LIGHT_P01 = 215.0  # nearly white: even the darkest 1% of pixels is lighter than this
BLURRY = 0.22  # sharpness (detail at half scale over detail at a quarter scale) below this
LOW_ENTROPY = 2.5  # bits: a grayscale histogram this flat is a nearly uniform image
ODD_ASPECT = 3.0  # longer side over shorter side
GRAYSCALE = 2.0  # mean channel spread (0-255) below this is grayscale...
COLOUR_DATASET = 10.0  # ...among images whose median spread is above this
SMALL_OF_MODEL = 0.25  # smaller than a quarter of the model's input...
SMALL_OF_DATASET = 0.5  # ...and than half the dataset's median shorter side
OUTLIER_K = 5  # outlier score: cosine similarity to the K-th nearest other image
OUTLIER_MADS = 3.0  # flagged this many (scaled) median absolute deviations above the median score

ACTIONS = {
    "small": "check it: smaller than the model's input and most of the dataset; replace with a larger copy or remove",
    "dark": "check it: nearly black; remove it if nothing can be seen",
    "light": "check it: nearly white; remove it if nothing can be seen",
    "blurry": "check it: blurred; remove it if the subject cannot be made out",
    "low_information": "check it: nearly uniform (a blank, a placeholder or a corrupt render?)",
    "odd_aspect": "check it: a strip of an image; the centre crop keeps little of it",
    "grayscale": "check it: grayscale among colour images; fine if the class really looks like that",
    "outlier": "look at it: unlike the rest of the dataset (wrong folder, a stray file, or a rare case worth more "
               "examples)",
}


def quality_flags(stats: ImageStats, model_short_side: int) -> dict[str, np.ndarray]:
    """Per kind, a score per image: positive where the image is flagged (higher is surer), else 0."""
    short = stats.short_side
    small_limit = min(SMALL_OF_MODEL * model_short_side, SMALL_OF_DATASET * float(np.median(short)))
    p99, p01 = stats.column("p99"), stats.column("p01")
    sharp = np.nan_to_num(stats.column("sharpness"), nan=np.inf)
    entropy, colour = stats.column("entropy"), stats.column("colourfulness")
    colour_dataset = float(np.median(colour)) > COLOUR_DATASET
    aspect = stats.aspect
    scores = {
        "small": np.where(short < small_limit, 1 - short / max(small_limit, 1), 0),
        "dark": np.where(p99 < DARK_P99, 1 - p99 / DARK_P99, 0),
        "light": np.where(p01 > LIGHT_P01, (p01 - LIGHT_P01) / (255 - LIGHT_P01), 0),
        "blurry": np.where(sharp < BLURRY, 1 - sharp / BLURRY, 0),
        "low_information": np.where(entropy < LOW_ENTROPY, 1 - entropy / LOW_ENTROPY, 0),
        "odd_aspect": np.where(aspect > ODD_ASPECT, 1 - ODD_ASPECT / aspect, 0),
        "grayscale": np.where(colour_dataset & (colour < GRAYSCALE), 1 - colour / GRAYSCALE, 0),
    }
    return {kind: np.clip(np.maximum(score, 0) + (score > 0) * 1e-3, 0, 1) for kind, score in scores.items()}


def outlier_scores(codes: np.ndarray, found: Neighbours | None = None) -> tuple[np.ndarray, float]:
    """(each image's outlier score: one minus the cosine to its K-th nearest other image, the flagging threshold:
    that many MADs above the median score). ``found``: the images' nearest neighbours among themselves, if known."""
    if len(codes) <= OUTLIER_K:
        return np.zeros(len(codes)), float("inf")
    if found is None:
        x = unit_rows(codes)
        found = nearest(x, x, OUTLIER_K, same=True)
    score = 1.0 - found.similarity[:, OUTLIER_K - 1].astype(np.float64)
    median = float(np.median(score))
    mad = float(np.median(np.abs(score - median))) * 1.4826
    return score, median + OUTLIER_MADS * max(mad, 1e-6)
