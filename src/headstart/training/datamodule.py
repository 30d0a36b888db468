"""The DataModule: training and validation images checked once, decoded once, augmented in batches."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ..data.decode import ImageSkipped, Preprocess, decoded_batches, open_rgb, typical_short_side
from ..data.folders import ImageSet
from ..data.imagecache import (
    CROP_SCALE,
    AugmentedImages,
    EvalImages,
    decode_all,
    store_preprocess,
    store_size,
    whole_batch,
)
from ..data.splits import stratified_split
from .activations import (
    CachedActivations,
    cache_activations,
)
from .module import ClassifierNet
from .options import FineTuneConfig


class ImageFiles(torch.utils.data.Dataset):
    """Decoded, resized uint8 HWC images streamed from disk; training augmentation optional."""

    def __init__(self, images: ImageSet, preprocess: Preprocess, augment: bool):
        self.paths, self.labels, self.preprocess, self.augment = images.paths, images.answers, preprocess, augment
        self._train_transform = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = open_rgb(self.paths[i], min_short_side=self.preprocess.scale_size)
        except ImageSkipped as exc:  # broke after the check before training: reported with the skipped files
            return None, str(self.paths[i]), str(exc)
        if self.augment:
            from torchvision import transforms

            if self._train_transform is None:
                self._train_transform = transforms.Compose([
                    transforms.RandomResizedCrop(self.preprocess.input_size, scale=CROP_SCALE,
                                                 interpolation=transforms.InterpolationMode.BICUBIC),
                    transforms.RandomHorizontalFlip(),
                ])
            array = np.asarray(self._train_transform(img), dtype=np.uint8)
        else:
            array = self.preprocess(img)
        return torch.from_numpy(array.copy()), self.labels[i]


def collate_usable(batch):
    """(images, labels, [(path, reason)] of the images that failed to decode): a failure never stops training."""
    usable = [b for b in batch if b[0] is not None]
    failed = [(b[1], b[2]) for b in batch if b[0] is None]
    if not usable:
        return None, None, failed
    from ..data.imagecache import answer_tensor

    return torch.stack([b[0] for b in usable]), answer_tensor(np.stack([b[1] for b in usable])), failed


def usable_images(images: ImageSet, preprocess: Preprocess, workers: int = 2
                  ) -> tuple[ImageSet, list[tuple[str, str]]]:
    """The images that decode, and (path, reason) for those that do not: checked once, before training."""
    failed: dict[int, str] = {}
    for _, _, skipped in decoded_batches(images.paths, preprocess, 64, max(1, workers)):
        failed.update(skipped)
    keep = np.asarray([i for i in range(len(images)) if i not in failed], dtype=np.int64)
    return images.subset(keep), [(str(images.paths[i]), reason) for i, reason in sorted(failed.items())]


class ImageDataModule(L.LightningDataModule):
    """The training images of one fine-tuning run: the check that each decodes (once, before training), the
    held-out monitor split for early stopping (stratified, ``config.seed``), class weights, and the loaders.

    With ``config.loader == "memory"`` the check decodes every image once into an array (see
    :mod:`headstart.data.imagecache`; in a file in ``folder`` when too large for memory, removed after training) and
    batches are augmented in the training process; ``"stream"`` decodes and augments every image in every epoch in
    ``config.workers`` loader processes."""

    def __init__(self, images: ImageSet, preprocess: Preprocess, config: FineTuneConfig, folder: Path | None = None,
                 cache_dir: str | Path | None | bool = False):
        super().__init__()
        self.images, self.preprocess, self.config, self.folder = images, preprocess, config, folder
        self.cache_dir = cache_dir  # where the image check's figures of each image are cached (False: nowhere)
        self.usable: ImageSet | None = None
        self.skipped: list[tuple[str, str]] = []
        self.stored: np.ndarray | None = None  # memory loader: decoded images, rows aligned with ``usable``
        self.activations: np.ndarray | None = None  # activations loader: (views, fit images, C, H, W)
        self.image_cache: dict[str, Any] = {"loader": config.loader}

    def prepare_data(self) -> None:
        """The image check; idempotent, and called again by :meth:`setup` in every process that needs it."""
        if self.usable is not None:
            return
        workers = self.config.workers or 2
        if self.config.loader == "stream":
            self.usable, self.skipped = usable_images(self.images, self.preprocess, workers)
            return
        started = time.perf_counter()
        side = store_size(self.preprocess, typical_short_side(self.images.paths))
        name = f"images-{side}px-{os.getpid()}.npy"
        from ..codes.store import StatsWriter

        figures = StatsWriter(self.cache_dir, self.images.paths) if self.cache_dir is not False else None
        self.stored, kept, failed = decode_all(self.images, store_preprocess(self.preprocess, side), workers,
                                               self.folder, name, figures)
        if figures is not None:
            figures.flush()
        self.usable = self.images.subset(kept)
        self.skipped = [(str(self.images.paths[i]), reason) for i, reason in failed]
        on_disk = isinstance(self.stored, np.memmap)
        self.image_cache.update(side=side, bytes=int(self.stored.nbytes),
                                where=str(self.folder / name) if on_disk else "memory",
                                seconds=round(time.perf_counter() - started, 3))

    def setup(self, stage: str | None = None) -> None:
        """Build the training and monitor datasets (decoded once unless streaming)."""
        self.prepare_data()
        if not hasattr(self, "fit_set"):
            self.fit_idx, self.monitor_idx = stratified_split(self.usable.labels, self.config.monitor_fraction,
                                                              self.config.seed)
            self.fit_set, self.monitor_set = self.usable.subset(self.fit_idx), self.usable.subset(self.monitor_idx)

    def cache_activations(self, net: ClassifierNet, first: int) -> None:
        """Activations loader: the frozen part of ``net`` (up to block ``first``) run once per augmented view."""
        if self.activations is None:
            started = time.perf_counter()
            self.activations = cache_activations(
                net.model, net.normalize, first, self.stored, self.fit_idx, self.preprocess.input_size[0],
                self.config.seed, self.folder, f"activations-block{first}-{os.getpid()}.npy",
                views=self.config.views)
            on_disk = isinstance(self.activations, np.memmap)
            self.image_cache.update(activation_views=self.config.views, from_block=first,
                                    activation_bytes=int(self.activations.nbytes),
                                    activation_where=self.activations.filename if on_disk else "memory",
                                    activation_seconds=round(time.perf_counter() - started, 3))

    def teardown(self, stage: str | None = None) -> None:
        """The decoded images' and activations' files, if kept in files, are removed (they are this run's own)."""
        for name in ("stored", "activations"):
            array = getattr(self, name)
            if isinstance(array, np.memmap):
                setattr(self, name, None)
                Path(array.filename).unlink(missing_ok=True)

    def class_weights(self) -> list[float] | None:
        """Inverse class frequencies of the fit split, with ``class_weight="balanced"``."""
        if self.config.class_weight != "balanced" or self.images.multilabel:
            return None
        n_classes = len(self.images.class_names)
        counts = np.bincount(self.fit_set.labels, minlength=n_classes).astype(np.float64)
        return (len(self.fit_set) / (n_classes * np.maximum(counts, 1))).tolist()

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        size, batch = len(self.fit_set), self.config.batch_size
        return max(1, size // batch if size > batch else 1)

    def _loader(self, images: ImageSet, rows: np.ndarray, train: bool) -> torch.utils.data.DataLoader:
        config = self.config
        common = {"batch_size": config.batch_size, "shuffle": train,
                  "drop_last": train and len(images) > config.batch_size, "pin_memory": torch.cuda.is_available()}
        if self.stored is None:
            return torch.utils.data.DataLoader(
                ImageFiles(images, self.preprocess, config.augment and train), num_workers=config.workers,
                collate_fn=collate_usable, persistent_workers=config.workers > 0, **common)
        if train and config.augment:
            dataset = AugmentedImages(self.stored, rows, images.answers, self.preprocess.input_size[0])
        else:
            dataset = EvalImages(self.stored, rows, images.answers, self.preprocess)
        return torch.utils.data.DataLoader(dataset, collate_fn=whole_batch, **common)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Augmented training batches."""
        if self.activations is not None:
            config = self.config
            return torch.utils.data.DataLoader(
                CachedActivations(self.activations, self.fit_set.answers), batch_size=config.batch_size,
                shuffle=True, drop_last=len(self.fit_set) > config.batch_size, collate_fn=whole_batch)
        return self._loader(self.fit_set, self.fit_idx, train=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """Monitor batches, preprocessed as predictions see them."""
        return self._loader(self.monitor_set, self.monitor_idx, train=False)
