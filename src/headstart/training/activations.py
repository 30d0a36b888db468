"""Training the top blocks from cached lower-block activations (``--unfreeze N --loader activations``).

With the lower blocks frozen (and their BatchNorm layers in inference mode), their output for a given augmented
image never changes during training. So each training image is augmented ``views`` times (random resized
crop and flip, seeded, as the memory loader does it), the frozen part runs once per view, and its float32 outputs are
kept (in memory, or in a file in the run's folder when larger than ``imagecache.MEMORY_LIMIT``). Every epoch then
trains only the unfrozen blocks and the head, on one randomly chosen view of each image. The held-out monitor images
still run through the whole network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..codes.backbones import block_container
from ..data import imagecache
from ..errors import HeadstartError

#: Augmented views of each training image whose lower-block activations are kept.
ACTIVATION_VIEWS = 2


def _blocks(model: nn.Module) -> list[nn.Module]:
    container = block_container(model)
    if container is None:
        raise HeadstartError(f"{type(model).__name__} has no sequence of blocks; --loader activations needs one "
                             "(use --loader memory)")
    return list(getattr(model, container).children())


def lower_forward(model: nn.Module, normalized: torch.Tensor, first: int) -> torch.Tensor:
    """The activations entering block ``first``: the stem (the model's children before its blocks) and the blocks
    before ``first``, on normalised NCHW images."""
    container = block_container(model)
    x = normalized
    for name, child in model.named_children():
        if name == container:
            break
        x = child(x)
    for block in _blocks(model)[:first]:
        x = block(x)
    return x


def upper_forward(model: nn.Module, activations: torch.Tensor, first: int) -> torch.Tensor:
    """Logits from the activations entering block ``first``: the remaining blocks, the layers after them, and
    timm's ``forward_head`` (pooling, dropout, classifier)."""
    container = block_container(model)
    x = activations
    for block in _blocks(model)[first:]:
        x = block(x)
    ending = {id(model.get_classifier()), id(getattr(model, "global_pool", None))}
    after = False
    for name, child in model.named_children():
        if after and id(child) not in ending:
            x = child(x)
        elif id(child) in ending:
            break
        after = after or name == container
    return model.forward_head(x)


def check_split(model: nn.Module, normalize: nn.Module, first: int, size: int) -> None:
    """A one-line error unless lower then upper computes exactly what the whole model computes (inference mode)."""
    was_training = model.training
    model.eval()
    images = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        x = normalize(images)
        split = upper_forward(model, lower_forward(model, x, first), first)
        whole = model(x)
    model.train(was_training)
    if split.shape != whole.shape or not torch.allclose(split, whole, atol=1e-4, rtol=1e-4):
        raise HeadstartError(f"{type(model).__name__} does not run as its blocks in sequence; --loader activations "
                             "cannot split it (use --loader memory)")


def cache_activations(model: nn.Module, normalize: nn.Module, first: int, stored: np.ndarray, rows: np.ndarray,
                      output: int, seed: int, folder: Path | None, name: str, batch_size: int = 64,
                      views: int = ACTIVATION_VIEWS) -> np.ndarray:
    """float32 array (views, images, C, H, W): the frozen part's output for ``views`` seeded augmentations of each
    stored image (rows ``rows`` of ``stored``); the same seed gives the same array."""
    model.eval()
    with torch.inference_mode():
        probe = lower_forward(model, normalize(torch.zeros(1, output, output, 3, dtype=torch.uint8)), first)
        layout = torch.channels_last  # as the training network runs: the same kernels, the same bits
        array = imagecache.allocate((views, len(rows), *probe.shape[1:]), np.float32, folder, name)
        for view in range(views):
            generator = torch.Generator().manual_seed(seed * 1009 + view)
            for start in range(0, len(rows), batch_size):
                images = torch.from_numpy(stored[rows[start:start + batch_size]])
                x = normalize(imagecache.augment_batch(images, output, generator)).contiguous(memory_format=layout)
                array[view, start:start + len(images)] = lower_forward(model, x, first).float().numpy()
    return imagecache.complete(array, name)


class CachedActivations(torch.utils.data.Dataset):
    """Training batches of cached activations (one random view of each image) and labels, whole (``__getitems__``)."""

    def __init__(self, activations: np.ndarray, labels: np.ndarray):
        self.activations, self.labels = activations, np.asarray(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]):
        idx = np.asarray(indices, dtype=np.int64)
        views = torch.randint(self.activations.shape[0], (len(idx),)).numpy()
        x = torch.from_numpy(np.ascontiguousarray(self.activations[views, idx]))
        from ..data.imagecache import answer_tensor

        return x, answer_tensor(self.labels[idx]), []
