"""The codes a linear head is solved on: standardised per column, in their principal-axis basis."""

from __future__ import annotations

import copy

import numpy as np

#: Rows standardised at a time (the codes are never copied whole in float64: 40000 x 1984 would take 635 MB a copy).
#: Each block's float64 temporaries are about 4 of its copies: at 1024 rows 65 MB, where 4096 rows held 260 MB at the
#: peak of cifar10's probe (bench/cifar_memory.py probe: 2.54-2.71 GB -> 2.33 GB cold), at the same speed.
BLOCK_ROWS = 1024
#: The columns' eigenproblem is solved in float32 (the Gram is summed in float64): half the time of float64 (Lite0's
#: widest join, 1984 columns: 0.24 s against 0.48 s; auto's 8 candidates on 3000 images: 0.55 s against 1.1 s), the
#: same rank at 95% of the variance and the same leading subspace (cosines >= 0.99997) on the 100-class set of
#: bench/search.py, and the same C, layer and validation accuracy there. Its eigenvalues are exact to about 1e-7 of
#: the largest, so axes below this share of it (noise, and no variance worth a weight) are dropped.
EIGH_RESOLUTION = 1e-6


class Standardised:
    """Codes standardised per column, and their principal axes: ``z = standardised @ axes`` (rows x rank).

    Every L2-regularised linear solution lies in the span of the training rows, so solving in ``z`` is exact (also
    for any subset of the rows: the folds), and its columns are orthogonal, so a diagonal preconditioner fits.
    """

    def __init__(self, codes: np.ndarray, gram: tuple | None = None):
        """``gram``: these codes' (mean, scale, Gram of the standardised columns) when already known
        (:func:`column_gram`: a wider join's, shared by its parts)."""
        import torch

        self._z, self._codes = None, None
        if len(codes) < codes.shape[1]:  # fewer rows than columns: the rows' kernel (small)
            x = np.asarray(codes, dtype=np.float64)
            self.mean, self.scale = x.mean(0), x.std(0)
            self.scale[self.scale < 1e-12] = 1.0
            x = (x - self.mean) / self.scale
            s2, u = torch.linalg.eigh(torch.from_numpy(_gram(x.T)))
            keep = s2 > s2.max() * 1e-9
            s2, u = s2[keep], u[:, keep]
            self.axes = (torch.from_numpy(x).T @ u) / s2.sqrt()
            self._z = (u * s2.sqrt()).float()
        else:  # the columns' covariance, a block of rows at a time: never a float64 copy of all the codes
            self.mean, self.scale, covariance = gram or column_gram(codes)
            s2, self.axes = torch.linalg.eigh(covariance.float())  # see EIGH_RESOLUTION
            keep = s2 > s2.max() * EIGH_RESOLUTION
            s2, self.axes = s2[keep].double(), self.axes[:, keep].double()
            self._codes = codes  # projected when ``z`` is first asked for (:meth:`leading` may need only some axes)
        self.variance = s2 / len(codes)  # of z's columns

    @property
    def z(self):
        """The standardised codes on the axes (rows x rank, float32 torch), projected on first use."""
        if self._z is None and self._codes is not None:
            self._z, self._codes = self._project(self._codes), None
        return self._z

    def basis(self) -> Standardised:
        """This without its rows (``z``): what a fit on the same codes needs to rebuild it (:meth:`on`) without
        solving the eigenproblem again."""
        view = copy.copy(self)
        view._z = view._codes = None
        return view

    def on(self, codes: np.ndarray) -> Standardised:
        """This basis with ``z`` computed for ``codes``: the codes it was found on (for others, the variance along
        its axes would not be theirs)."""
        view = copy.copy(self)
        view._z, view._codes = None, codes
        return view

    def _project(self, codes: np.ndarray, axes=None):
        """The standardised codes on the axes (default: all of them; float32, each block projected in float64), a
        block of rows at a time."""
        import torch

        axes = self.axes if axes is None else axes
        z, start = torch.empty(len(codes), axes.shape[1]), 0
        for block in _blocks(codes, self.mean, self.scale):  # filled in place: no list of blocks beside them
            z[start:start + len(block)] = block @ axes
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
        view.axes, view.variance = self.axes[:, kept], self.variance[kept]
        # projected on the kept axes alone while this basis's ``z`` is not needed yet (auto's candidate layers:
        # only the chosen one's final fit needs all its axes)
        view._z = self._z[:, kept].contiguous() if self._z is not None else self._project(self._codes, view.axes)
        view._codes = None
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
    gram = np.zeros((codes.shape[1], codes.shape[1]))
    for block in _blocks(codes, mean, scale):
        gram += _gram(block.numpy())
    return mean, scale, torch.from_numpy(gram)


def _gram(x: np.ndarray) -> np.ndarray:
    """``x.T @ x`` (float64): numpy hands a product of an array with its own transpose to BLAS's symmetric rank-k
    update, half the work of the general product torch runs (3000 x 1984 codes: 0.12 s against 0.32 s)."""
    return x.T @ x


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
