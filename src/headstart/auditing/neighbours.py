"""Nearest neighbours in CNN-code space, in blocks (memory stays bounded at any dataset size).

Codes are compared by cosine similarity of their penultimate codes; images' low-frequency structure (the DCT block
the perceptual hash is made from) by the correlation of its 63 non-constant coefficients, mirrored or not.

Within one large set (:func:`nearest_within`), the exact search's cost grows with the square of the rows; above
EXACT_UP_TO rows the candidates come from faiss (an inverted-file index over PCA-reduced unit codes, built and
searched block by block), and each candidate's cosine is then computed exactly from the codes. The codes may be a
memory map (a ``.npy`` file opened with ``mmap_mode="r"``): they are read BLOCK_ROWS at a time, and the map's pages
are released after each block, so memory holds the index, not the codes.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np

from ..data.imagestats import MIRROR_SIGNS, ImageStats

BLOCK_CELLS = 8_000_000  # similarities per block of query rows: 32 MB of float32, 64 MB of indices while ranking
EXACT_UP_TO = 20_000  # rows of one set searched exactly; more go through faiss (bench/audit.py crossover)
BLOCK_ROWS = 16_384  # codes read, added and searched at a time on the faiss path
RESCORE_ROWS = 1024  # queries whose candidates are re-scored at a time (their codes gathered: about 120 MB)
PCA_WIDTH = 128  # the faiss index's dimensions
PROBES = 16  # inverted lists searched per query
EXTRA = 6  # candidates asked of the index beyond k, re-scored exactly
TRAIN_PER_LIST = 40  # training rows per inverted list (faiss warns under 39)


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


def _release(codes: np.ndarray) -> None:
    """Drop a memory map's resident pages (they are read from the file again if needed): memory stays bounded."""
    base = codes
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    handle = getattr(base, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


def _gather(codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``codes[rows]``. From a memory map, by positioned reads of the file: a gather through the map would fault each
    row's whole neighbourhood of pages into memory (64 KB a row: 17,000 scattered rows of 2.5 KB mapped 1 GB)."""
    handle = getattr(codes, "_mmap", None)
    name = getattr(codes, "filename", None)
    if handle is None or name is None or not codes.flags.c_contiguous or codes.ndim != 2:
        return np.asarray(codes[rows])
    mapped = np.frombuffer(handle, np.uint8)  # the map's first byte, which lies at the aligned offset in the file
    first = codes.offset - codes.offset % mmap.ALLOCATIONGRANULARITY + (codes.ctypes.data - mapped.ctypes.data)
    size = codes.strides[0]
    out = np.empty((len(rows), codes.shape[1]), codes.dtype)
    with open(name, "rb", buffering=0) as f:
        fd = f.fileno()
        for i, row in enumerate(rows.tolist()):
            out[i] = np.frombuffer(os.pread(fd, size, first + row * size), codes.dtype)
    return out


def nearest_within(codes: np.ndarray, k: int, seed: int = 0, exact: bool | None = None) -> Neighbours:
    """The ``k`` most cosine-similar other rows of each row of ``codes`` (any float dtype; a memory map is read in
    blocks): exact up to EXACT_UP_TO rows, else candidates from a faiss index, their cosines computed exactly
    (``exact``: True or False forces one way)."""
    if exact if exact is not None else len(codes) <= EXACT_UP_TO:
        x = unit_rows(codes)
        return nearest(x, x, k, same=True)
    import faiss

    n, width = codes.shape
    k = min(k, n - 1)
    lists = int(4 * np.sqrt(n))
    rng = np.random.default_rng(seed)
    sample = unit_rows(_gather(codes, np.sort(rng.choice(n, min(n, lists * TRAIN_PER_LIST), replace=False))))
    pca = faiss.PCAMatrix(width, min(PCA_WIDTH, width))
    pca.train(sample)
    reduced = pca.apply(sample)
    faiss.normalize_L2(reduced)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(reduced.shape[1]), reduced.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    index.train(reduced)
    del sample, reduced

    def block(start: int) -> np.ndarray:
        rows = pca.apply(unit_rows(codes[start:start + BLOCK_ROWS]))
        faiss.normalize_L2(rows)
        return rows

    for start in range(0, n, BLOCK_ROWS):
        index.add(block(start))
        _release(codes)
    index.nprobe = PROBES
    found = Neighbours(np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32))
    for start in range(0, n, BLOCK_ROWS):
        _, candidates = index.search(block(start), k + 1 + EXTRA)
        for at in range(0, len(candidates), RESCORE_ROWS):
            rows = np.arange(start + at, start + min(at + RESCORE_ROWS, len(candidates)))
            _rescore(codes, rows, candidates[at:at + RESCORE_ROWS], found)
        _release(codes)
    return found


def _rescore(codes: np.ndarray, rows: np.ndarray, candidates: np.ndarray, found: Neighbours) -> None:
    """The exact cosines of ``rows``' candidates (faiss's; -1 for none), their best ``found.index.shape[1]`` kept."""
    candidates = np.where((candidates == rows[:, None]) | (candidates < 0), -1, candidates)
    wanted = np.unique(candidates[candidates >= 0])
    gathered = unit_rows(_gather(codes, wanted))
    queries = unit_rows(codes[rows[0]:rows[-1] + 1])
    cosine = np.einsum("qd,qcd->qc", queries, gathered[np.searchsorted(wanted, np.maximum(candidates, 0))])
    cosine[candidates < 0] = -np.inf
    order = np.argsort(-cosine, axis=1)[:, :found.index.shape[1]]
    found.index[rows] = np.take_along_axis(candidates, order, 1)
    found.similarity[rows] = np.take_along_axis(cosine, order, 1)
