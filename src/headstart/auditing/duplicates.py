"""Exact and near duplicates, within a set of images and between two (leaks), from penultimate codes and the
decoded images' figures.

Exact: identical decoded pixels (the same digest). Near: the same shot re-encoded, resized, cropped a little,
mirrored or colour-shifted. Measured on 100 planted copies of each kind (cats_vs_dogs and dtd10, ``bench/audit.py
leaks``): such copies have a code cosine of 0.84-1.0 to their original, except half-size copies of fine textures
(down to 0.45), whose low-frequency structure (the perceptual hash's DCT block) still correlates above 0.95; their
mean colour's red and green shares stay within 0.035. The most similar two of 1000 distinct ImageNet classes reach a
cosine of 0.74, but distinct textures of one kind (two chequerboards, two cobwebs) reach 0.85-0.94. So a pair is near
when it keeps its colour and either its cosine is at least COSINE (or COSINE_WITH_STRUCTURE with structure at least
SOME_STRUCTURE) and it stands out from the neighbourhood (its distance at most GUARD times that to the image's REF_K-th
neighbour, so that a set of look-alikes such as 28-px X-rays is not read as copies), or its structure correlates at
least STRUCTURE with a cosine of at least STRUCTURE_COSINE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.imagestats import ImageStats
from .neighbours import Neighbours, nearest, nearest_within, structure, unit_rows

COSINE = 0.93  # alone (with the guard)
COSINE_WITH_STRUCTURE = 0.85  # with structure correlation at least SOME_STRUCTURE
SOME_STRUCTURE = 0.5
STRUCTURE_COSINE = 0.6  # with structure correlation at least STRUCTURE
STRUCTURE = 0.95
CHROMATICITY = 0.035  # copies keep their mean colour's red and green shares within this
GUARD = 0.5
IDENTICAL = 0.99999  # without figures: codes this close come from the same pixels
FIGURES_STRUCTURE = 0.98  # without codes: structure correlation at least this
REF_K = 10
CANDIDATES = 10  # nearest neighbours by code examined per image


@dataclass
class Pairs:
    """Index pairs (query row, reference row) with their cosine, structure correlation and kind."""

    query: np.ndarray
    reference: np.ndarray
    cosine: np.ndarray
    structure: np.ndarray
    exact: np.ndarray  # bool: identical decoded pixels

    def __len__(self) -> int:
        return len(self.query)


def _empty() -> Pairs:
    z = np.zeros(0, np.int64)
    return Pairs(z, z, np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, bool))


def find_pairs(codes: np.ndarray, stats: ImageStats | None, ref_codes: np.ndarray | None = None,
               ref_stats: ImageStats | None = None, found: Neighbours | None = None) -> Pairs:
    """Exact and near duplicate pairs within ``codes`` (each pair once, query < reference), or of each query row
    against the reference rows (``ref_codes``, ``ref_stats``: leaks). ``found``: the queries' nearest references,
    at least max(CANDIDATES, REF_K) of them, when already computed. Without figures (``stats`` None, as ``fit``
    checks) only the codes decide: cosine at least COSINE and standing out; identical images have a cosine of 1."""
    same = ref_codes is None
    ref_codes, ref_stats = (codes, stats) if same else (ref_codes, ref_stats)
    if not len(codes) or not len(ref_codes):
        return _empty()
    if found is None:
        k = max(CANDIDATES, REF_K)
        found = nearest_within(codes, k) if same else nearest(unit_rows(codes), unit_rows(ref_codes), k)
    if found.index.shape[1] == 0:
        return _empty()
    ref_level = found.similarity[:, min(REF_K, found.similarity.shape[1]) - 1]
    rows = np.repeat(np.arange(len(codes)), found.index.shape[1])
    cols = found.index.ravel()
    cosine = found.similarity.ravel()
    level = ref_level[rows]
    if same:
        level = np.maximum(level, ref_level[cols])
    stands_out = (1 - cosine) <= GUARD * (1 - level)
    if stats is None or ref_stats is None:
        keep = stands_out & (cosine >= COSINE)
        exact = cosine >= IDENTICAL
        pairs = {((min(q, r), max(q, r)) if same else (q, r)): (float(c), float("nan"), bool(e))
                 for q, r, c, e in zip(rows[keep], cols[keep], cosine[keep], exact[keep])}
        return _from_dict(pairs)
    q_struct, _ = structure(stats)
    r_struct, r_mirror = structure(ref_stats)
    corr = np.maximum((q_struct[rows] * r_struct[cols]).sum(1), (q_struct[rows] * r_mirror[cols]).sum(1))
    colour = np.abs(stats.chromaticity[rows] - ref_stats.chromaticity[cols]).max(1) <= CHROMATICITY
    by_codes = stands_out & ((cosine >= COSINE) | ((cosine >= COSINE_WITH_STRUCTURE) & (corr >= SOME_STRUCTURE)))
    by_structure = (cosine >= STRUCTURE_COSINE) & (corr >= STRUCTURE) & (cosine >= level)
    near = colour & (by_codes | by_structure)
    digests, ref_digests = stats.digest, ref_stats.digest
    exact_pairs = _exact_pairs(digests, ref_digests, same)
    keep = near
    pairs = {}
    for q, r, c, s in zip(rows[keep], cols[keep], cosine[keep], corr[keep]):
        key = (min(q, r), max(q, r)) if same else (q, r)
        pairs[key] = (float(c), float(s), False)
    for q, r in exact_pairs:
        pairs[(q, r)] = (1.0, 1.0, True)
    return _from_dict(pairs)


def find_pairs_by_figures(stats: ImageStats, ref_stats: ImageStats) -> Pairs:
    """Exact and near duplicates of each query image among the reference images from the figures alone (no codes:
    for a fine-tuned network, whose codes the thresholds were not measured on): identical pixels, or low-frequency
    structure correlating at least FIGURES_STRUCTURE (mirrored or not) with the same mean colour."""
    if not len(stats.values) or not len(ref_stats.values):
        return _empty()
    q_struct, _ = structure(stats)
    r_struct, r_mirror = structure(ref_stats)
    rows, cols, corr = [], [], []
    for reference in (r_struct, r_mirror):
        found = nearest(q_struct, reference, CANDIDATES)
        rows.append(np.repeat(np.arange(len(q_struct)), found.index.shape[1]))
        cols.append(found.index.ravel())
        corr.append(found.similarity.ravel())
    rows, cols, corr = np.concatenate(rows), np.concatenate(cols), np.concatenate(corr)
    colour = np.abs(stats.chromaticity[rows] - ref_stats.chromaticity[cols]).max(1) <= CHROMATICITY
    keep = colour & (corr >= FIGURES_STRUCTURE)
    pairs = {(int(q), int(r)): (float(s), float(s), False) for q, r, s in zip(rows[keep], cols[keep], corr[keep])}
    for q, r in _exact_pairs(stats.digest, ref_stats.digest, False):
        pairs[(q, r)] = (1.0, 1.0, True)
    return _from_dict(pairs)


def _from_dict(pairs: dict[tuple[int, int], tuple[float, float, bool]]) -> Pairs:
    if not pairs:
        return _empty()
    keys = sorted(pairs)
    values = [pairs[key] for key in keys]
    return Pairs(np.array([q for q, _ in keys], np.int64), np.array([r for _, r in keys], np.int64),
                 np.array([v[0] for v in values], np.float32), np.array([v[1] for v in values], np.float32),
                 np.array([v[2] for v in values], bool))


def _exact_pairs(digests: list[bytes], ref_digests: list[bytes], same: bool) -> list[tuple[int, int]]:
    """Pairs with identical decoded pixels (every pair of a set of identical images)."""
    by_digest: dict[bytes, list[int]] = {}
    for j, d in enumerate(ref_digests):
        by_digest.setdefault(d, []).append(j)
    pairs = []
    for i, d in enumerate(digests):
        for j in by_digest.get(d, ()):
            if not same or j > i:
                pairs.append((i, j))
    return pairs


def groups_of(n: int, pairs: Pairs) -> np.ndarray:
    """A group id per row (0..g-1): rows joined by any pair share one (connected components, union-find)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(pairs.query, pairs.reference):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def duplicate_groups(codes: np.ndarray, stats: np.ndarray | ImageStats | None = None) -> np.ndarray:
    """A group id per image: exact and near duplicates share one (for cross-validation folds that keep them
    together); from the codes alone when ``stats`` is None."""
    stats = stats if stats is None or isinstance(stats, ImageStats) else ImageStats(stats)
    return groups_of(len(codes), find_pairs(codes, stats))


def fold_groups(codes: np.ndarray, stats: np.ndarray | None, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Duplicate sets among the rows that a C search on ``labels`` will use
    (:func:`headstart.heads.linear.search_rows`); every other row alone. Cross-validation then never scores an image
    against its own copy."""
    from ..heads.linear import search_rows

    rows = search_rows(labels, seed)
    rows = np.arange(len(labels)) if rows is None else rows
    groups = np.arange(len(labels)) + len(rows)
    groups[rows] = duplicate_groups(codes[rows], None if stats is None else stats[rows])
    return groups
