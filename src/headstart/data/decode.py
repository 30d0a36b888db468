"""Decoding any image file safely, and preprocessing it exactly as the model's pretrained config says."""

from __future__ import annotations

import collections
import math
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import HeadstartError

#: Pillow's own decompression-bomb threshold (about 89 megapixels); larger images are skipped.
MAX_PIXELS = 89_478_485

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ImageSkipped(Exception):
    """An image that cannot be used; ``str(exc)`` is the reason shown to the user."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha over white, 16-bit and float rescaled, CMYK converted."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and values.size and values.max() <= 1.0:
            values = values * 255.0
        elif values.size and values.max() > 255:
            values = values / 257.0  # 16-bit range 0..65535 onto 0..255
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def open_rgb(path: str | os.PathLike | BinaryIO, min_short_side: int = 0, max_pixels: int = MAX_PIXELS
             ) -> Image.Image:
    """Decode ``path`` (or an open binary file) to an upright RGB image, or raise :class:`ImageSkipped` with the
    reason.

    JPEGs whose shorter side is at least twice ``min_short_side`` are decoded at reduced size
    (``Image.draft``), which is several times faster and keeps the shorter side >= ``min_short_side``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageSkipped(f"too large ({width}x{height} pixels > {max_pixels}): decompression-bomb guard")
                short = min(width, height)
                if min_short_side and img.format == "JPEG" and short >= 2 * min_short_side:
                    scale = min_short_side / short
                    img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
                img.load()
                try:
                    upright = ImageOps.exif_transpose(img)
                except Exception:  # malformed EXIF: keep the pixels as stored
                    upright = img
                rgb = to_rgb(upright)
                rgb.info["original_size"] = (width, height)
                return rgb
    except ImageSkipped:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageSkipped(f"too large: decompression-bomb guard ({exc})") from None
    except UnidentifiedImageError:
        if isinstance(path, (str, os.PathLike)) and Path(path).stat().st_size == 0:
            raise ImageSkipped("empty file (0 bytes)") from None
        raise ImageSkipped("not an image Pillow can read") from None
    except FileNotFoundError:
        raise ImageSkipped("file disappeared") from None
    except Exception as exc:  # truncated data, broken headers, decoder errors
        raise ImageSkipped(f"unreadable image: {exc}") from None


def rgb_from_memory(value: Any) -> Image.Image:
    """A Pillow image, or a numpy array (H x W grayscale, H x W x 1/3/4 channels, uint8), as an RGB Pillow image."""
    from ..errors import DataError

    if isinstance(value, Image.Image):
        return to_rgb(value)
    array = np.asarray(value)
    if array.dtype != np.uint8:
        raise DataError(f"image arrays must be uint8 (0-255) as Pillow and cv2 give them, got {array.dtype}; "
                        "convert with (array * 255).astype('uint8') if yours are 0-1 floats")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise DataError(f"an image array must be H x W (grayscale) or H x W x 3/4 (RGB/RGBA), got shape "
                        f"{array.shape}")
    return to_rgb(Image.fromarray(np.ascontiguousarray(array)))


@dataclass(frozen=True)
class Preprocess:
    """The model's eval preprocessing (timm's ``transforms_imagenet_eval``) on Pillow, as uint8 HWC arrays.

    Normalisation (``mean``/``std``) is applied inside the network, so decoded batches stay uint8.
    """

    input_size: tuple[int, int]  # (height, width)
    crop_pct: float
    crop_mode: str
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_timm(cls, data_config: dict[str, Any], image_size: int | None = None) -> Preprocess:
        """Build from ``timm.data.resolve_data_config`` output; ``image_size`` overrides the resolution."""
        _, height, width = data_config["input_size"]
        if image_size:
            height = width = int(image_size)
        mode = data_config.get("crop_mode") or "center"
        if mode not in ("center", "squash") or (mode == "center" and height != width):
            raise NotImplementedError(f"crop mode {mode!r} at {height}x{width} is not supported yet")
        interpolation = data_config.get("interpolation") or "bilinear"
        if interpolation not in _RESAMPLE:
            interpolation = "bicubic" if interpolation == "random" else "bilinear"
        return cls(
            input_size=(height, width),
            crop_pct=float(data_config.get("crop_pct") or 0.875),
            crop_mode=mode,
            interpolation=interpolation,
            mean=tuple(float(v) for v in data_config["mean"]),
            std=tuple(float(v) for v in data_config["std"]),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, saved with models and used in cache keys."""
        return asdict(self)

    @property
    def scale_size(self) -> int:
        """Shorter side after resizing, before the centre crop."""
        return math.floor(self.input_size[0] / self.crop_pct)

    def __call__(self, img: Image.Image) -> np.ndarray:
        """Resize and crop an RGB image to a ``(height, width, 3)`` uint8 array."""
        resample = _RESAMPLE[self.interpolation]
        height, width = self.input_size
        if self.crop_mode == "squash":
            size = (math.floor(width / self.crop_pct), math.floor(height / self.crop_pct))
        else:  # torchvision Resize(int): shorter side to scale_size, longer side truncated
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(self.scale_size * long / short)
            size = (self.scale_size, new_long) if w <= h else (new_long, self.scale_size)
        if img.size != size:
            img = img.resize(size, resample)
        w, h = img.size
        top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))  # as torchvision
        return np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.uint8)

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Decode and preprocess one file; raises :class:`ImageSkipped` for unusable files."""
        return self(open_rgb(path, min_short_side=self.scale_size))


def typical_short_side(paths: list[Path], sample: int = 64) -> int | None:
    """Median shorter side of a fixed random sample of the images, read from file headers (no decoding)."""
    rng = np.random.default_rng(0)
    shorts = []
    for i in rng.choice(len(paths), min(sample, len(paths)), replace=False):
        try:
            with Image.open(paths[i]) as img:
                shorts.append(min(img.size))
        except Exception:
            continue
    return int(np.median(shorts)) if shorts else None


def decoded_batches(paths: list[Path], preprocess: Preprocess, batch_size: int, workers: int,
                    with_stats: bool = False) -> Iterator[tuple]:
    """Yield (indices, uint8 NHWC batch, [(index, reason)] skipped), decoding ``workers`` images at a time; with
    ``with_stats``, a fourth item: the :func:`headstart.data.imagestats.image_stats` of the batch's images (same
    decode).

    Memory stays bounded: at most a few batches are decoded ahead of the consumer.
    """
    from .imagestats import image_stats

    def load(i: int) -> tuple[int, np.ndarray | tuple[np.ndarray, np.ndarray] | str]:
        try:
            if not with_stats:
                return i, preprocess.load(paths[i])
            img = open_rgb(paths[i], min_short_side=preprocess.scale_size)
            return i, (preprocess(img), image_stats(img, img.info.get("original_size")))
        except ImageSkipped as exc:
            return i, str(exc)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="headstart-decode") as pool:
        pending: collections.deque = collections.deque()
        todo = iter(range(len(paths)))
        ahead = max(2 * batch_size, 4 * workers)
        for i in todo:
            pending.append(pool.submit(load, i))
            if len(pending) >= ahead:
                break
        index, arrays, stats, skipped = [], [], [], []
        while pending:
            i, result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            if isinstance(result, str):
                skipped.append((i, result))
            else:
                index.append(i)
                arrays.append(result[0] if with_stats else result)
                if with_stats:
                    stats.append(result[1])
            if len(arrays) == batch_size or (not pending and (arrays or skipped)):
                batch = np.stack(arrays) if arrays else None
                if with_stats:
                    yield index, batch, skipped, (np.stack(stats) if stats else None)
                else:
                    yield index, batch, skipped
                index, arrays, stats, skipped = [], [], [], []


def check_image_size(image_size: int | None) -> None:
    """A one-line error for an input resolution no network can use."""
    if image_size is not None and not 16 <= image_size <= 4096:
        raise HeadstartError(f"--image-size must be between 16 and 4096 pixels, got {image_size}")
