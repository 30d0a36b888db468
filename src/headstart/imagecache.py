"""Training images decoded once and kept as uint8 arrays; augmentation done on whole batches of tensors.

The streaming loader decodes, resizes and augments every image in every epoch, in worker processes that compete with
the network for the same few CPU cores. Here each training image is decoded once, resized so its shorter side is
``store_size`` and centre-cropped square (small images such as CIFAR's 32 px stay at their own size), and kept in
memory, or in a file in the run's folder when that would take more than ``MEMORY_LIMIT``. Each batch is then
augmented in one call in the training process itself: random resized crops and horizontal flips with Pillow's own
bicubic filter (as the streaming path's torchvision transform), as two batched matrix products. The held-out monitor
images go through :class:`~headstart.images.Preprocess` per batch, as predictions see them.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .data import ImageSet
from .images import Preprocess, decoded_batches

#: Decoded images larger than this in all go to a file in the run's folder instead of memory.
MEMORY_LIMIT = 2 * 2**30
#: RandomResizedCrop's range of crop areas (as a fraction of the image) and of aspect ratios, as the streaming path.
CROP_SCALE = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def store_size(preprocess: Preprocess, median_short_side: int | None) -> int:
    """Side of the square each training image is kept at: the preprocessing's resize size, or the images' own
    (median) shorter side when that is smaller, so 32 px images are kept at 32 px and enlarged per batch."""
    if median_short_side:
        return max(8, min(preprocess.scale_size, int(median_short_side)))
    return preprocess.scale_size


def decode_all(images: ImageSet, preprocess: Preprocess, workers: int, folder: Path | None, name: str
               ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """(uint8 NHWC array of the images that decode, their indices, [(index, reason)] for those that do not).

    The array is in memory, or a file ``folder/name`` (written under a temporary name and renamed when complete)
    when larger than MEMORY_LIMIT and a folder is given."""
    height, width = preprocess.input_size
    nbytes = len(images) * height * width * 3
    path = folder / name if folder is not None and nbytes > MEMORY_LIMIT else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        array = np.lib.format.open_memmap(partial, "w+", np.uint8, (len(images), height, width, 3))
    else:
        array = np.empty((len(images), height, width, 3), np.uint8)
    kept: list[int] = []
    skipped: list[tuple[int, str]] = []
    for index, batch, failed in decoded_batches(images.paths, preprocess, 64, max(1, workers)):  # in order
        if batch is not None:
            array[len(kept):len(kept) + len(index)] = batch
            kept += index
        skipped += failed
    if path is not None:
        array.flush()
        del array
        partial.replace(path)
        array = np.load(path, mmap_mode="r")
    return array[:len(kept)], np.asarray(kept, dtype=np.int64), skipped


def random_boxes(n: int, side: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` RandomResizedCrop boxes (x1, y1, x2, y2) in a ``side`` x ``side`` image: torchvision's sampling (ten
    tries of a random area and aspect ratio, else the whole image), vectorised."""
    tries = 10
    area = side * side * torch.empty(n, tries).uniform_(*CROP_SCALE, generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator)
    ratio = torch.exp(log_ratio)
    w, h = torch.sqrt(area * ratio).round(), torch.sqrt(area / ratio).round()
    ok = (w > 0) & (h > 0) & (w <= side) & (h <= side)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    w = torch.where(first >= 0, w[rows, first.clamp(min=0)], torch.full((n,), float(side)))
    h = torch.where(first >= 0, h[rows, first.clamp(min=0)], torch.full((n,), float(side)))
    x1 = torch.floor(torch.rand(n, generator=generator) * (side - w + 1))
    y1 = torch.floor(torch.rand(n, generator=generator) * (side - h + 1))
    return torch.stack([x1, y1, x1 + w, y1 + h], 1)


def _bicubic_weights(start: torch.Tensor, length: torch.Tensor, size: int, output: int) -> torch.Tensor:
    """(n, output, size): Pillow's bicubic resize (a = -0.5, its support widened when shrinking) of the pixels
    [start, start + length) of a row of ``size`` to ``output`` pixels, as weights on the whole row (Pillow's
    ``precompute_coeffs``, in float)."""
    scale = (length / output)[:, None, None]
    widen = scale.clamp(min=1.0)
    centre = start[:, None, None] + (torch.arange(output)[None, :, None] + 0.5) * scale
    pixel = torch.arange(size)[None, None, :] + 0.5
    x = ((pixel - centre) / widen).abs()
    a = -0.5
    weights = torch.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                          torch.where(x < 2, ((x - 5) * x + 8) * x * a - 4 * a, torch.zeros(())))
    weights = weights * ((pixel > start[:, None, None]) & (pixel < (start + length)[:, None, None]))
    return weights / weights.sum(-1, keepdim=True)


def resized_crops(stored: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, output: int) -> torch.Tensor:
    """Each uint8 NHWC image's box (x1, y1, x2, y2, whole pixels) resized to ``output`` x ``output`` by Pillow's
    bicubic filter, mirrored where ``flip``: torchvision's ``resized_crop`` on PIL images, for a whole batch in two
    matrix products (across, then down, rounded to uint8 in between as Pillow's Resample.c does; Pillow 13 sometimes
    goes down first, which differs only where the first pass overshoots 0 or 255); uint8 NHWC out."""
    n, height, width = stored.shape[:3]
    x1, y1, x2, y2 = boxes.float().unbind(1)
    rows = _bicubic_weights(y1, y2 - y1, height, output)
    cols = _bicubic_weights(x1, x2 - x1, width, output)
    cols = torch.where(flip[:, None, None], cols.flip(1), cols)
    images = stored.permute(0, 3, 1, 2).float()
    across = torch.einsum("nchw,npw->nchp", images, cols).round_().clamp_(0, 255)  # Pillow's first pass, in uint8
    crops = torch.einsum("noh,nchp->ncop", rows, across)
    return crops.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def augment_batch(stored: torch.Tensor, output: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random resized crops to ``output`` px and random horizontal flips of a uint8 NHWC batch of square images:
    the streaming loader's torchvision transform (RandomResizedCrop, bicubic, then RandomHorizontalFlip) for a
    whole batch at once."""
    boxes = random_boxes(stored.shape[0], stored.shape[1], generator)
    flip = torch.rand(stored.shape[0], generator=generator) < 0.5
    return resized_crops(stored, boxes, flip, output)


class _Batched(torch.utils.data.Dataset):
    """A map-style dataset over rows of a decoded array that hands the loader whole batches (``__getitems__``):
    (images, labels, no failures)."""

    def __init__(self, array: np.ndarray, rows: np.ndarray, labels: np.ndarray):
        self.array, self.rows, self.labels = array, np.asarray(rows, dtype=np.int64), np.asarray(labels)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def _take(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(self.array[self.rows[idx]]), torch.from_numpy(self.labels[idx].astype(np.int64))


class AugmentedImages(_Batched):
    """Training batches: random resized crops to ``output`` px and flips of the stored square images."""

    def __init__(self, array: np.ndarray, rows: np.ndarray, labels: np.ndarray, output: int):
        super().__init__(array, rows, labels)
        self.output = output

    def __getitems__(self, indices: list[int]):
        stored, labels = self._take(indices)
        return augment_batch(stored, self.output), labels, []


class EvalImages(_Batched):
    """Evaluation batches: the stored images through the model's own preprocessing (as predictions see them)."""

    def __init__(self, array: np.ndarray, rows: np.ndarray, labels: np.ndarray, preprocess: Preprocess):
        super().__init__(array, rows, labels)
        self.preprocess = preprocess

    def __getitems__(self, indices: list[int]):
        from PIL import Image

        stored, labels = self._take(indices)
        images = np.stack([self.preprocess(Image.fromarray(image)) for image in stored.numpy()])
        return torch.from_numpy(images), labels, []


def whole_batch(batch):
    """The loader's collate function for datasets that already return a batch."""
    return batch


def store_preprocess(preprocess: Preprocess, side: int) -> Preprocess:
    """Resize the shorter side to ``side`` and centre-crop a square: how training images are kept."""
    return replace(preprocess, input_size=(side, side), crop_pct=1.0, crop_mode="center")
