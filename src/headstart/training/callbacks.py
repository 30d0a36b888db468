"""Callbacks and plugins of a training run: the head trained first, epoch timing, checkpoints written atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .module import FineTuner


class HeadFirst(BaseFinetuning):
    """Lightning's fine-tuning callback: for the first ``probe_epochs`` epochs only the new head trains, then the
    unfrozen top blocks join it (their optimiser group, at ``lr * backbone_lr_mult``, exists from the start)."""

    def __init__(self, probe_epochs: int):
        super().__init__()
        self.probe_epochs = probe_epochs

    def freeze_before_training(self, pl_module: FineTuner) -> None:
        """Freeze every pretrained block; the head trains alone first."""
        pl_module.set_trainable(head_only=self.probe_epochs > 0)

    def finetune_function(self, pl_module: FineTuner, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """At the unfreeze epoch, let the chosen blocks train too."""
        pl_module.set_trainable(head_only=epoch < self.probe_epochs)


class EpochTimer(L.Callback):
    """Wall seconds and images of each epoch's training part (its monitor pass excluded), for the run's record."""

    def __init__(self):
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the epoch's clock."""
        self._started, self._images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Count the batch's images."""
        self._images += 0 if batch[1] is None else len(batch[1])
        self._seconds = time.perf_counter() - self._started

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the epoch's seconds and images per second."""
        if self._images:
            self.epochs.append({"epoch": trainer.current_epoch, "train_s": round(self._seconds, 3),
                                "images": self._images,
                                "images_per_s": round(self._images / max(self._seconds, 1e-9), 1)})


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a kill never leaves half a checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        """Serialise in memory, then write atomically."""
        import io

        from ..disk import write_atomic
        from ..errors import CannotWrite

        buffer = io.BytesIO()  # serialised first: torch's own writer reports a full disk only as an iostream error
        torch.save(checkpoint, buffer)
        try:
            write_atomic(Path(path), buffer.getvalue())
        except CannotWrite as exc:
            raise CannotWrite(f"{exc}; the last checkpoint written is kept: free some space, then resume "
                              "(headstart fit --resume OUT)") from None
