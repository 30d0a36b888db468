"""Training images decoded once and kept as uint8 arrays; augmentation done on whole batches of tensors.

The streaming loader decodes, resizes and augments every image in every epoch, in worker processes that compete with
the network for the same few CPU cores. Here each training image is decoded once, resized so its shorter side is
``store_size`` and centre-cropped square (small images such as CIFAR's 32 px stay at their own size), and kept in
memory, or in a file in the run's folder when that would take more than ``MEMORY_LIMIT``. Each batch is then
augmented in one call (random resized crops and horizontal flips as one affine bicubic resampling,
``torch.nn.functional.grid_sample``) in the training process itself. The held-out monitor images are kept already
preprocessed per batch by :class:`~headstart.images.Preprocess`, as predictions see them.
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


def augment_batch(stored: torch.Tensor, output: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random resized crops to ``output`` px and random horizontal flips of a uint8 NHWC batch of square images, in
    one bicubic resampling (as the streaming loader's torchvision transform); uint8 NHWC out, as the network takes."""
    n, side = stored.shape[0], stored.shape[1]
    x1, y1, x2, y2 = random_boxes(n, side, generator).unbind(1)
    flip = torch.rand(n, generator=generator) < 0.5
    theta = torch.zeros(n, 2, 3)  # output [-1, 1] -> the box in the stored image's [-1, 1] (pixel edges)
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) * (x2 - x1) / side
    theta[:, 0, 2] = (x1 + x2) / side - 1
    theta[:, 1, 1] = (y2 - y1) / side
    theta[:, 1, 2] = (y1 + y2) / side - 1
    grid = torch.nn.functional.affine_grid(theta, [n, 3, output, output], align_corners=False)
    crops = torch.nn.functional.grid_sample(stored.permute(0, 3, 1, 2).float(), grid, mode="bicubic",
                                            padding_mode="border", align_corners=False)
    return crops.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


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
