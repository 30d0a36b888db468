"""What an image looks like, measured once while it is decoded for its CNN codes: size, exposure, sharpness,
information, colour, a perceptual hash and a hash of its pixels.

The figures are one float32 vector per image (:data:`STATS`), cached like a layer's codes, so an audit after a fit
(or a fit after an audit) decodes nothing again. :class:`ImageStats` names the columns.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: The pseudo-layer under which the figures are cached and returned by the feature extractor.
STATS = "image_stats"
#: Bump when a figure's definition changes: cached figures of another version are not reused.
STATS_VERSION = 1
_SIDE = 64  # grayscale thumbnail on which sharpness and exposure are measured
_HASH_SIDE = 32  # pHash: DCT of a 32 x 32 grayscale thumbnail, its 8 x 8 lowest frequencies
_SCALARS = ("width", "height", "mean", "p01", "p99", "sharpness", "entropy", "colourfulness", "red_share",
            "green_share")
_DCT_COLUMNS = 64
_DIGEST_WORDS = 6  # 96 bits (three CRC-32s of the pixels: whole, first and second half), 16 bits per float32
WIDTH = len(_SCALARS) + _DCT_COLUMNS + _DIGEST_WORDS


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT = _dct_matrix(_HASH_SIDE)[:8]
#: Mirroring an image left-right negates the DCT coefficients of odd horizontal frequency.
MIRROR_SIGNS = np.tile((-1.0) ** np.arange(8), 8)


def image_stats(img: Image.Image, original_size: tuple[int, int] | None = None) -> np.ndarray:
    """The figures of one decoded RGB image (``original_size``: its size in the file, before any reduced decode)."""
    width, height = original_size or img.size
    rgb_small = img.resize((_SIDE, _SIDE), Image.Resampling.BOX)
    gray_small = rgb_small.convert("L")
    small = np.asarray(gray_small, dtype=np.float64)
    sharpness = _sharpness(img)
    histogram = np.bincount(np.asarray(gray_small).ravel(), minlength=256) / small.size
    cumulative = np.cumsum(histogram)
    p01, p99 = np.searchsorted(cumulative, (0.01, 0.99))
    nonzero = histogram[histogram > 0]
    entropy = float(-(nonzero * np.log2(nonzero)).sum())
    rgb = np.asarray(rgb_small, dtype=np.int16)
    colourfulness = float((rgb.max(2) - rgb.min(2)).mean())
    channel_means = rgb.reshape(-1, 3).mean(0) + 1.0
    red_share, green_share = channel_means[:2] / channel_means.sum()  # chromaticity: the same under brightness
    thumb = np.asarray(gray_small.resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX), dtype=np.float64)
    dct = (_DCT @ thumb @ _DCT.T).ravel()
    pixels = memoryview(img.tobytes())
    half = len(pixels) // 2
    crcs = [zlib.crc32(pixels, zlib.crc32(f"{img.size}".encode())), zlib.crc32(pixels[:half]),
            zlib.crc32(pixels[half:])]
    words = np.frombuffer(np.asarray(crcs, dtype=">u4").tobytes(), dtype=">u2").astype(np.float64)
    scalars = [width, height, small.mean(), p01, p99, sharpness, entropy, colourfulness, red_share, green_share]
    return np.concatenate([scalars, dct, words]).astype(np.float32)


def _laplacian_energy(gray: np.ndarray) -> float:
    if min(gray.shape) < 3:
        return 0.0
    return float((gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]).var())


def _sharpness(img: Image.Image) -> float:
    """Detail at half scale relative to detail at a quarter scale (Laplacian energies of the grayscale image reduced
    2x and 4x, from at most 256 px): about 0.6 for photos and textures as taken, under 0.22 once blurred; NaN for
    images under 48 px, too small to tell. Measured on the shared sets' training images: 0.26 at the least."""
    gray = img.convert("L")
    factor = max(1, max(gray.size) // 256)
    if factor > 1:
        gray = gray.reduce(factor)
    if min(gray.size) < 48:
        return float("nan")
    coarse = _laplacian_energy(np.asarray(gray.reduce(4), dtype=np.float32))
    return _laplacian_energy(np.asarray(gray.reduce(2), dtype=np.float32)) / coarse if coarse > 1e-6 else 0.0


@dataclass
class ImageStats:
    """The figures of many images, by name (rows as in the cached vectors)."""

    values: np.ndarray

    def column(self, name: str) -> np.ndarray:
        return self.values[:, _SCALARS.index(name)].astype(np.float64)

    @property
    def short_side(self) -> np.ndarray:
        return np.minimum(self.column("width"), self.column("height"))

    @property
    def aspect(self) -> np.ndarray:
        """Longer side over shorter side (>= 1)."""
        w, h = self.column("width"), self.column("height")
        return np.maximum(w, h) / np.maximum(1.0, np.minimum(w, h))

    @property
    def chromaticity(self) -> np.ndarray:
        """(red, green) shares of the mean colour: unchanged by brightness, so copies keep it."""
        return np.stack([self.column("red_share"), self.column("green_share")], 1)

    @property
    def dct(self) -> np.ndarray:
        start = len(_SCALARS)
        return self.values[:, start:start + _DCT_COLUMNS].astype(np.float64)

    def phash(self, mirrored: bool = False) -> np.ndarray:
        """64-bit perceptual hashes (uint64): each DCT coefficient above the median of the 63 non-constant ones."""
        dct = self.dct * (MIRROR_SIGNS if mirrored else 1.0)
        bits = dct > np.median(dct[:, 1:], axis=1, keepdims=True)
        return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)

    @property
    def digest(self) -> list[bytes]:
        """A digest of each image's decoded pixels: equal for identical pixels."""
        words = self.values[:, -_DIGEST_WORDS:].astype(np.uint16)
        return [row.tobytes() for row in words]
