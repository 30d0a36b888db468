"""The codes a linear head is solved on: standardised per column, in their principal-axis basis."""

from __future__ import annotations

import copy

import numpy as np

#: Rows standardised at a time (the codes are never copied whole in float64: 40000 x 1984 would take 635 MB a copy).
#: Each block's float64 temporaries are about 4 of its copies: at 1024 rows 65 MB, where 4096 rows held 260 MB at the
#: peak of cifar10's probe (bench/cifar_memory.py probe: 2.54-2.71 GB -> 2.33 GB cold), at the same speed.
BLOCK_ROWS = 1024


class Standardised:
    """Codes standardised per column, and their principal axes: ``z = standardised @ axes`` (rows x rank).

    Every L2-regularised linear solution lies in the span of the training rows, so solving in ``z`` is exact (also
    for any subset of the rows: the folds), and its columns are orthogonal, so a diagonal preconditioner fits.
    """

    def __init__(self, codes: np.ndarray, gram: tuple | None = None):
        """``gram``: these codes' (mean, scale, Gram of the standardised columns) when already known
        (:func:`column_gram`: a wider join's, shared by its parts)."""
        import torch

        if len(codes) < codes.shape[1]:  # fewer rows than columns: the rows' kernel (small)
            x = np.asarray(codes, dtype=np.float64)
            self.mean, self.scale = x.mean(0), x.std(0)
            self.scale[self.scale < 1e-12] = 1.0
            xt = torch.from_numpy((x - self.mean) / self.scale)
            s2, u = torch.linalg.eigh(xt @ xt.T)
            keep = s2 > s2.max() * 1e-9
            s2, u = s2[keep], u[:, keep]
            self.axes = (xt.T @ u) / s2.sqrt()
            self.z = u * s2.sqrt()
        else:  # the columns' covariance, a block of rows at a time: never a float64 copy of all the codes
            self.mean, self.scale, covariance = gram or column_gram(codes)
            s2, self.axes = torch.linalg.eigh(covariance)
            keep = s2 > s2.max() * 1e-9
            s2, self.axes = s2[keep], self.axes[:, keep]
            self.z = self._project(codes)
        self.variance = s2 / len(codes)  # of z's columns
        self.z = self.z.float()

    def basis(self) -> Standardised:
        """This without its rows (``z``): what a fit on the same codes needs to rebuild it (:meth:`on`) without
        solving the eigenproblem again."""
        view = copy.copy(self)
        view.z = None
        return view

    def on(self, codes: np.ndarray) -> Standardised:
        """This basis with ``z`` computed for ``codes``: the codes it was found on (for others, the variance along
        its axes would not be theirs)."""
        view = copy.copy(self)
        view.z = self._project(codes)
        return view

    def _project(self, codes: np.ndarray):
        """The standardised codes on the axes (float32; each block projected in float64), a block of rows at a time."""
        import torch

        z, start = torch.empty(len(codes), self.axes.shape[1]), 0
        for block in _blocks(codes, self.mean, self.scale):  # filled in place: no list of blocks beside them
            z[start:start + len(block)] = block @ self.axes
            start += len(block)
        return z

    def leading(self, share: float) -> Standardised:
        """The same codes in their fewest axes of highest variance that hold ``share`` of it: a cheaper space to
        compare regularisation strengths in (the weakest axes are the ones an L2 penalty shrinks most)."""
        import torch

        variance = self.variance.numpy()
        order = np.argsort(variance)[::-1]
        rank = min(int(np.searchsorted(np.cumsum(variance[order]) / variance.sum(), share)) + 1, len(order))
        kept = np.sort(order[:rank])
        view = copy.copy(self)
        view.z, view.axes, view.variance = self.z[:, kept].contiguous(), self.axes[:, kept], self.variance[kept]
        view.kept = torch.from_numpy(kept)  # which of this basis's axes the view keeps
        return view

    def on_raw_codes(self, w, b) -> tuple[np.ndarray, np.ndarray]:
        """A solution in z coordinates (w: rank x outputs, b: outputs; torch) as weight (outputs x columns) and
        bias (float64) on the raw codes: the standardisation folded in."""
        coef = (self.axes.float() @ w).double().numpy().T
        return coef / self.scale, b.double().numpy() - coef @ (self.mean / self.scale)


def column_gram(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, object]:
    """(each column's mean, its standard deviation, the Gram matrix of the standardised columns (float64 torch)),
    a block of rows at a time. A join's Gram holds each of its parts' (and their joins') as a block."""
    import torch

    mean, scale = _column_moments(codes)
    gram = torch.zeros(codes.shape[1], codes.shape[1], dtype=torch.float64)
    for block in _blocks(codes, mean, scale):
        gram += block.T @ block
    return mean, scale, gram


def _blocks(codes: np.ndarray, mean: np.ndarray, scale: np.ndarray, rows: int = BLOCK_ROWS):
    """The standardised codes as float64 tensors of ``rows`` rows each."""
    import torch

    for start in range(0, len(codes), rows):
        block = np.asarray(codes[start:start + rows], dtype=np.float64)
        yield torch.from_numpy((block - mean) / scale)


def _column_moments(codes: np.ndarray, rows: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation (zero ones set to 1), in float64, a block of rows at a time."""
    mean = np.zeros(codes.shape[1])
    for start in range(0, len(codes), rows):
        mean += np.asarray(codes[start:start + rows], dtype=np.float64).sum(0)
    mean /= len(codes)
    square = np.zeros(codes.shape[1])
    for start in range(0, len(codes), rows):
        square += ((np.asarray(codes[start:start + rows], dtype=np.float64) - mean) ** 2).sum(0)
    scale = np.sqrt(square / len(codes))
    scale[scale < 1e-12] = 1.0
    return mean, scale
