"""Training images decoded once and kept as uint8 arrays; augmentation done on whole batches of tensors.

The streaming loader decodes, resizes and augments every image in every epoch, in worker processes that compete with
the network for the same few CPU cores. Here each training image is decoded once, resized so its shorter side is
``store_size`` and centre-cropped square (small images such as CIFAR's 32 px stay at their own size), and kept in
memory, or in a file in the run's folder when that would take more than ``MEMORY_LIMIT``. Each batch is then
augmented in the training process itself, a few threads at a time: random resized crops and horizontal flips,
sampled as torchvision samples them and resampled by Pillow's bicubic filter, as the streaming path does. The held-out
monitor images go through :class:`~headstart.data.decode.Preprocess` per batch, as predictions see them.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .decode import Preprocess, decoded_batches
from .folders import ImageSet

#: Decoded images larger than this in all go to a file in the run's folder instead of memory.
MEMORY_LIMIT = 2 * 2**30
#: RandomResizedCrop's range of crop areas (as a fraction of the image) and of aspect ratios, as the streaming path.
CROP_SCALE = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
#: Threads that crop and resize a batch (2 take a 224 px batch of 32 from 18.8 to 10.4 ms here).
AUGMENT_THREADS = 2


def store_size(preprocess: Preprocess, median_short_side: int | None) -> int:
    """Side of the square each training image is kept at: the preprocessing's resize size, or the images' own
    (median) shorter side when that is smaller, so 32 px images are kept at 32 px and enlarged per batch."""
    if median_short_side:
        return max(8, min(preprocess.scale_size, int(median_short_side)))
    return preprocess.scale_size


def allocate(shape: tuple[int, ...], dtype: type, folder: Path | None, name: str) -> np.ndarray:
    """An empty array in memory, or, when larger than MEMORY_LIMIT and ``folder`` is given, a file there written
    under a temporary name (:func:`complete` renames it to ``folder/name``)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if folder is None or size <= MEMORY_LIMIT:
        return np.empty(shape, dtype)
    from ..disk import cannot_write, reason_of, space_for

    # a memory-mapped file on a full disk fails at a random page (SIGBUS), so the space is checked first
    space_for(folder, size + (1 << 20), f"the training images' decoded copy ({name})",
              "free some space, put --out on a larger disk, or use --loader stream")
    partial = folder / f".{name}.partial"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        array = np.lib.format.open_memmap(partial, "w+", dtype, shape)
        _reserve(partial)
        return array
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise cannot_write(folder / name, reason_of(exc), size) from None


def _reserve(path: Path) -> None:
    """Take the file's blocks now (where the file system can), so that a disk filling later cannot fail a write
    into the memory map; a full disk raises here, as an OSError."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise


def complete(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` from :func:`allocate`, filled: a file is flushed, renamed to its final ``name`` and reopened
    read-only; an array in memory is returned as it is."""
    if not isinstance(array, np.memmap):
        return array
    partial = Path(array.filename)
    array.flush()
    del array
    path = partial.replace(partial.with_name(name))
    return np.load(path, mmap_mode="r")


def decode_all(images: ImageSet, preprocess: Preprocess, workers: int, folder: Path | None, name: str,
               figures: Callable[[list[int], np.ndarray], None] | None = None
               ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """(uint8 NHWC array of the images that decode, their indices, [(index, reason)] for those that do not).

    The array is in memory, or a file ``folder/name`` (see :func:`allocate`). ``figures``: called with each batch's
    indices and their :func:`headstart.data.imagestats.image_stats`, measured from the same decode."""
    height, width = preprocess.input_size
    array = allocate((len(images), height, width, 3), np.uint8, folder, name)
    kept: list[int] = []
    skipped: list[tuple[int, str]] = []
    for index, batch, failed, *stats in decoded_batches(images.paths, preprocess, 64, max(1, workers),
                                                        figures is not None):  # in order
        if batch is not None:
            array[len(kept):len(kept) + len(index)] = batch
            kept += index
            if figures is not None:
                figures(index, stats[0])
        skipped += failed
    array = complete(array, name)
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


def resized_crops(stored: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, output: int) -> torch.Tensor:
    """Each uint8 NHWC image's box (x1, y1, x2, y2, whole pixels) resized to ``output`` x ``output`` with Pillow's
    bicubic filter and mirrored where ``flip``: torchvision's ``resized_crop`` and ``hflip`` on PIL images, in
    threads (Pillow releases the GIL); uint8 NHWC out."""
    from PIL import Image

    arrays, corners, mirrored = stored.numpy(), boxes.int().tolist(), flip.tolist()

    def one(i: int) -> np.ndarray:
        image = Image.fromarray(arrays[i]).crop(tuple(corners[i])).resize((output, output), Image.BICUBIC)
        return np.asarray(image.transpose(Image.FLIP_LEFT_RIGHT) if mirrored[i] else image)

    with ThreadPoolExecutor(AUGMENT_THREADS, thread_name_prefix="headstart-augment") as pool:
        return torch.from_numpy(np.stack(list(pool.map(one, range(len(arrays))))))


def augment_batch(stored: torch.Tensor, output: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random resized crops to ``output`` px and random horizontal flips of a uint8 NHWC batch of square images:
    the streaming loader's torchvision transform (RandomResizedCrop, bicubic, then RandomHorizontalFlip) for a
    whole batch at once."""
    boxes = random_boxes(stored.shape[0], stored.shape[1], generator)
    flip = torch.rand(stored.shape[0], generator=generator) < 0.5
    return resized_crops(stored, boxes, flip, output)


def answer_tensor(values: np.ndarray) -> torch.Tensor:
    """What the loss compares with: class indices (int64), or rows of a 0/1 label matrix (float32, multi-label)."""
    return torch.from_numpy(np.asarray(values, np.float32 if np.ndim(values) == 2 else np.int64))


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
        return torch.from_numpy(self.array[self.rows[idx]]), answer_tensor(self.labels[idx])


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
