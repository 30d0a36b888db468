"""What an image looks like, measured once while it is decoded for its CNN codes: size, exposure, sharpness,
information, colour, a perceptual hash and a hash of its pixels.

The figures are one float32 vector per image (:data:`STATS`), cached like a layer's codes, so an audit after a fit
(or a fit after an audit) decodes nothing again. :class:`ImageStats` names the columns.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops

#: The pseudo-layer under which the figures are cached and returned by the feature extractor.
STATS = "image_stats"
#: Bump when a figure's definition changes: cached figures of another version are not reused.
STATS_VERSION = 2
_SIDE = 64  # grayscale thumbnail on which sharpness and exposure are measured
_HASH_SIDE = 32  # pHash: DCT of a 32 x 32 grayscale thumbnail, its 8 x 8 lowest frequencies
_SCALARS = ("width", "height", "mean", "p01", "p99", "sharpness", "entropy", "colourfulness", "red_share",
            "green_share")
_DCT_COLUMNS = 64
_DIGEST_WORDS = 6  # CRC-32s of the pixels' two halves, and the decoded size: 16 bits per float32 (exact there)
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
    """The figures of one decoded RGB image (``original_size``: its size in the file, before any reduced decode).
    About 0.3 ms for a 256-px photo: Pillow's C code does the resampling and the histogram."""
    width, height = original_size or img.size
    factor = min(img.size) // _SIDE
    rgb_small = (img.reduce(factor) if factor > 1 else img).resize((_SIDE, _SIDE), Image.Resampling.BOX)
    gray_small = rgb_small.convert("L")
    histogram = np.asarray(gray_small.histogram(), dtype=np.float64) / (_SIDE * _SIDE)
    cumulative = np.cumsum(histogram)
    p01, p99 = np.searchsorted(cumulative, (0.01, 0.99))
    nonzero = histogram[histogram > 0]
    entropy = float(-(nonzero * np.log2(nonzero)).sum())
    mean = float(histogram @ np.arange(256))
    red, green, blue = rgb_small.split()
    spread = ImageChops.subtract(ImageChops.lighter(ImageChops.lighter(red, green), blue),
                                 ImageChops.darker(ImageChops.darker(red, green), blue))
    levels = np.arange(256)
    colourfulness = float(np.asarray(spread.histogram()) @ levels) / (_SIDE * _SIDE)
    channel_means = np.asarray(rgb_small.histogram()).reshape(3, 256) @ levels / (_SIDE * _SIDE) + 1.0
    red_share, green_share = channel_means[:2] / channel_means.sum()  # chromaticity: the same under brightness
    thumb = np.asarray(gray_small.resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX), dtype=np.float64)
    dct = (_DCT @ thumb @ _DCT.T).ravel()
    pixels = memoryview(img.tobytes())
    half = len(pixels) // 2
    checks = (zlib.crc32(pixels[:half]), zlib.crc32(pixels[half:]))
    words = [checks[0] >> 16, checks[0] & 0xFFFF, checks[1] >> 16, checks[1] & 0xFFFF, img.width & 0xFFFF,
             img.height & 0xFFFF]
    scalars = [width, height, mean, p01, p99, _sharpness(img), entropy, colourfulness, red_share, green_share]
    return np.concatenate([scalars, dct, words]).astype(np.float32)


def _laplacian_energy(gray: np.ndarray) -> float:
    if min(gray.shape) < 3:
        return 0.0
    return float((gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]).var())


def _sharpness(img: Image.Image) -> float:
    """Detail at half scale relative to detail at a quarter scale (Laplacian energies of the grayscale image reduced
    2x and 4x, from at most 256 px): about 0.6 for photos and textures as taken, under 0.22 once blurred; NaN for
    images under 48 px, too small to tell. Measured on the shared sets' training images: 0.26 at the least."""
    factor = max(1, max(img.size) // 256)
    if min(img.size) // factor < 48:
        return float("nan")
    half = img.reduce(2 * factor).convert("L")
    coarse = _laplacian_energy(np.asarray(half.reduce(2), dtype=np.float32))
    return _laplacian_energy(np.asarray(half, dtype=np.float32)) / coarse if coarse > 1e-6 else 0.0


@dataclass
class ImageStats:
    """The figures of many images, by name (rows as in the cached vectors)."""

    values: np.ndarray

    def column(self, name: str) -> np.ndarray:
        """One scalar figure of every image, by name."""
        return self.values[:, _SCALARS.index(name)].astype(np.float64)

    @property
    def short_side(self) -> np.ndarray:
        """The shorter side of each original image, in pixels."""
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
        """The low-frequency DCT coefficients of each image's 32 x 32 gray thumbnail."""
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
