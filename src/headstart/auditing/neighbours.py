"""Nearest neighbours in CNN-code space, in blocks (memory stays bounded at any dataset size).

Codes are compared by cosine similarity of their penultimate codes; images' low-frequency structure (the DCT block
the perceptual hash is made from) by the correlation of its 63 non-constant coefficients, mirrored or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.imagestats import MIRROR_SIGNS, ImageStats

BLOCK_CELLS = 8_000_000  # similarities per block of query rows: 32 MB of float32, 64 MB of indices while ranking


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def structure(stats: ImageStats) -> tuple[np.ndarray, np.ndarray]:
    """(unit AC DCT coefficients, the same of the mirrored image) for structure correlation."""
    return unit_rows(stats.dct[:, 1:]), unit_rows((stats.dct * MIRROR_SIGNS)[:, 1:])


@dataclass
class Neighbours:
    """The k nearest reference rows of each query row (most similar first) and their cosine similarities."""

    index: np.ndarray  # (n, k) int64 into the reference rows
    similarity: np.ndarray  # (n, k) float32


def nearest(queries: np.ndarray, reference: np.ndarray, k: int, same: bool = False) -> Neighbours:
    """The ``k`` most cosine-similar ``reference`` rows of each unit-length ``queries`` row (``same``: the two are
    one set, so a row is never its own neighbour)."""
    k = max(0, min(k, len(reference) - (1 if same else 0)))
    index = np.zeros((len(queries), k), np.int64)
    similarity = np.zeros((len(queries), k), np.float32)
    if k == 0:
        return Neighbours(index, similarity)
    step = max(16, BLOCK_CELLS // max(1, len(reference)))
    for start in range(0, len(queries), step):
        block = queries[start:start + step] @ reference.T
        if same:
            diagonal = np.arange(len(block))
            block[diagonal, diagonal + start] = -np.inf
        np.negative(block, out=block)
        top = np.argpartition(block, k - 1, axis=1)[:, :k]
        values = -np.take_along_axis(block, top, 1)
        order = np.argsort(-values, axis=1)
        index[start:start + step] = np.take_along_axis(top, order, 1)
        similarity[start:start + step] = np.take_along_axis(values, order, 1)
    return Neighbours(index, similarity)
