"""The training cost model: a few timed steps of each kind turned into seconds per epoch, before any plan is made."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..codes.backbones import Backbone, block_names
from ..codes.create import create_backbone
from ..codes.extract import release_free_memory
from ..data.decode import typical_short_side
from ..data.folders import ImageSet
from ..data.imagecache import (
    augment_batch,
    store_preprocess,
    store_size,
)
from .activations import (
    lower_forward,
    upper_forward,
)
from .datamodule import ImageFiles
from .head_init import sample_rows
from .module import FineTuner
from .options import FineTuneConfig

#: Seconds of a run that do not grow with its images: the trainer's and the module's setup, checkpoints.
SETUP_S = 15.0


@dataclass
class TrainingCost:
    """What a fine-tuning run's parts cost on this machine, from a few timed steps (no training run): per batch, an
    optimiser step with the unfrozen blocks (``step_s``) and with the new head alone (``head_step_s``), a monitor
    batch (``eval_s``), augmenting a batch in the training process (``augment_s``: memory and activations
    loaders) and, for the activations loader, running the frozen blocks on one (``cache_s``, once per view before
    training); per image, decoding (``decode_s``: once before training with the memory and activations loaders, in
    every epoch in ``workers`` processes, alongside the network, with the stream loader)."""

    step_s: float
    head_step_s: float
    eval_s: float
    augment_s: float
    decode_s: float
    n_fit: int
    n_monitor: int
    batch_size: int
    loader: str
    workers: int
    cache_s: float = 0.0
    views: int = 0
    head_init_images: int = 0  # images whose codes the head's probe is fitted on (``--head-init probe``)
    prepare_s: float = 0.0  # per stored image, its preprocessing for evaluation (monitor images, the head's probe)

    def epoch_s(self, head_only: bool = False) -> float:
        """Seconds of one epoch: its training steps and its monitor pass."""
        step = (self.head_step_s if head_only else self.step_s) + (self.augment_s if self.loader == "memory" else 0)
        network = (self.n_fit / self.batch_size * step
                   + math.ceil(self.n_monitor / self.batch_size) * self.eval_s + self.n_monitor * self.prepare_s)
        if self.loader == "stream":
            return max(network, self.decode_s * (self.n_fit + self.n_monitor) / max(1, self.workers))
        return network

    def before_s(self) -> float:
        """Seconds before the first epoch: decoding (and, for the activations loader, caching) every image."""
        if self.loader == "stream":
            return 0.0
        caching = self.views * self.n_fit / self.batch_size * (self.cache_s + self.augment_s)
        probe = self.head_init_images * (self.eval_s / self.batch_size + self.prepare_s)
        return SETUP_S + self.decode_s * (self.n_fit + self.n_monitor) / max(1, self.workers) + caching + probe

    def run_s(self, epochs: int, probe_epochs: int) -> float:
        """Seconds of a run of ``epochs`` epochs whose first ``probe_epochs`` train the head alone, what comes before
        the first epoch included."""
        return self.before_s() + sum(self.epoch_s(head_only=epoch < probe_epochs) for epoch in range(epochs))


def first_trainable_block(model: nn.Module, config: FineTuneConfig) -> int:
    """Index of the lowest block ``config`` trains (``--unfreeze N``): the cached activations enter it."""
    return max(0, len(block_names(model)) - config.unfreeze_blocks())


def _seconds(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def _data_seconds(backbone: Backbone, train: ImageSet, config: FineTuneConfig) -> tuple[float, float, float]:
    """(seconds to decode one image as ``config.loader`` does, its figures included; seconds to augment a batch in
    the training process: 0 for the stream loader, whose processes do it; seconds to preprocess one stored image
    for evaluation: the monitor images, the head's probe), timed on a few of ``train``'s images."""
    from PIL import Image

    from ..data.imagestats import image_stats

    sample = train.subset(np.arange(min(16, len(train))))
    started = time.perf_counter()
    if config.loader == "stream":
        files = ImageFiles(sample, backbone.preprocess, config.augment)
        for i in range(len(files)):
            files[i]
        return (time.perf_counter() - started) / len(sample), 0.0, 0.0
    side = store_size(backbone.preprocess, typical_short_side(train.paths))
    decoded = [store_preprocess(backbone.preprocess, side).load(path) for path in sample.paths]
    for image in decoded:
        image_stats(Image.fromarray(image))  # measured while decoding: the leak check's and the audit's figures
    decode_s = (time.perf_counter() - started) / len(sample)
    started = time.perf_counter()
    for image in decoded:
        backbone.preprocess(Image.fromarray(image))
    prepare_s = (time.perf_counter() - started) / len(decoded)
    stored = torch.from_numpy(np.stack([decoded[i % len(decoded)] for i in range(config.batch_size)]))
    return decode_s, _seconds(augment_batch, stored, backbone.preprocess.input_size[0]), prepare_s


def _step_seconds(module: FineTuner, images: torch.Tensor, labels: torch.Tensor, first: int | None,
                  activations: torch.Tensor | None, steps: int, cuda: bool) -> tuple[float, float, float]:
    """Median seconds of a training step with the chosen blocks unfrozen, of one with the head alone, and of a
    monitor (evaluation) batch; from ``first`` on cached ``activations`` when given."""
    device = images.device
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-6)

    def forward(train_step: bool) -> torch.Tensor:
        if train_step and first is not None:
            return upper_forward(module.net.model, activations, first)
        return module(images)

    def timed(train_step: bool) -> float:
        started = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=cuda), torch.set_grad_enabled(train_step):
            loss = nn.functional.cross_entropy(forward(train_step), labels)
        if train_step:
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 1.0)  # as the trainer does (gradient_clip_val)
            optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def median_step(head_only: bool | None) -> float:
        if head_only is None:
            module.eval()
            timed(False)
            return statistics.median(timed(False) for _ in range(steps))
        module.set_trainable(head_only)
        module.train()
        for _ in range(2):  # warm-up: the first steps on a CPU take several times longer (allocations, kernels)
            timed(True)
        return statistics.median(timed(True) for _ in range(steps))

    return median_step(False), median_step(True), median_step(None)


def training_cost(backbone: Backbone, train: ImageSet, config: FineTuneConfig, steps: int = 5) -> TrainingCost:
    """Time a few training steps (unfrozen blocks, and head alone), monitor batches, batch augmentation, the frozen
    part (activations loader) and image decoding for a run of ``config`` on ``train``, with the training code's own
    modules."""
    cuda = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    device = torch.device("cuda" if cuda else "cpu")
    n_classes = len(train.class_names)
    module = FineTuner(backbone.name, n_classes, asdict(config), 1, backbone=backbone).to(device)
    module.net.to(memory_format=torch.channels_last)
    height, width = backbone.preprocess.input_size
    images = torch.randint(0, 256, (config.batch_size, height, width, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, n_classes, (config.batch_size,), device=device)
    first, activations = None, None
    if config.loader == "activations":
        first = first_trainable_block(backbone.model, config)
        normalized = module.net.normalize(images).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():  # not inference mode: these tensors enter the timed training steps
            activations = lower_forward(module.net.model.eval(), normalized, first)

    step_s, head_step_s, eval_s = _step_seconds(module, images, labels, first, activations, steps, cuda)
    cache_s = 0.0
    if first is not None:
        with torch.inference_mode():
            lower_forward(module.net.model, normalized, first)
            cache_s = statistics.median(_seconds(lower_forward, module.net.model, normalized, first)
                                        for _ in range(3))
    module.net.to(memory_format=torch.contiguous_format)
    backbone.model.eval()
    decode_s, augment_s, prepare_s = _data_seconds(backbone, train, config)
    n_monitor = math.ceil(len(train) * config.monitor_fraction)
    probe = len(sample_rows(train.labels[:len(train) - n_monitor], 0)) if config.head_init == "probe" and \
        config.loader != "stream" else 0
    return TrainingCost(step_s, head_step_s, eval_s, augment_s, decode_s, len(train) - n_monitor, n_monitor,
                        config.batch_size, config.loader, config.workers or 2, cache_s,
                        config.views if first is not None else 0, probe, prepare_s)


def fine_tune_cost(backbone_name: str, weights: str | None, train: ImageSet, image_size: int | None,
                   config: FineTuneConfig) -> TrainingCost:
    """What fine-tuning ``train`` with ``config`` costs on this machine (timed steps; see
    :func:`headstart.training.cost.training_cost`)."""
    backbone = create_backbone(backbone_name, weights, image_size=image_size)
    try:
        return training_cost(backbone, train, config)
    finally:  # the timed steps' activations, freed to the C heap: on cifar10 0.55 GiB kept for the rest of the run
        del backbone
        release_free_memory()
