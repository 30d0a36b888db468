"""The LightningModule: a pretrained network with a new head, its top blocks unfrozen, at discriminative learning
rates.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from ..codes.backbones import Backbone, block_container, block_names
from ..codes.codesnet import Normalize
from ..data.decode import Preprocess
from ..errors import HeadstartError
from .activations import (
    upper_forward,
)
from .options import FineTuneConfig


def trainable_prefixes(model: nn.Module, n_blocks: int | None) -> list[str]:
    """Module-name prefixes trained for ``n_blocks`` top blocks (None: everything; 0: the classifier only)."""
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    children = [name for name, _ in model.named_children()]
    if n_blocks is None:
        return children
    container = block_container(model)
    if container is None or n_blocks == 0:
        return [classifier]
    blocks = block_names(model)
    after = children[children.index(container) + 1:]
    return blocks[max(0, len(blocks) - n_blocks):] + after


def _matches(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class ClassifierNet(nn.Module):
    """uint8 NHWC images in, logits out: the model's normalisation and the timm network with its new head."""

    def __init__(self, model: nn.Module, preprocess: Preprocess):
        super().__init__()
        self.normalize = Normalize(preprocess)
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised class scores of uint8 or float images."""
        return self.model(self.normalize(images).contiguous(memory_format=torch.channels_last))


class FineTuner(L.LightningModule):
    """A timm network with a new ``n_classes`` head, trained on uint8 images: which parts train is set by
    :meth:`set_trainable` (the :class:`HeadFirst` callback trains the head alone first), frozen parts stay in
    inference mode (their BatchNorm statistics never change), AdamW with the pretrained layers at
    ``lr * backbone_lr_mult``, linear warm-up then cosine decay.

    Every argument but ``backbone`` is a plain value saved as a hyperparameter, so a checkpoint restores with
    ``FineTuner.load_from_checkpoint(path)`` (the network is rebuilt from ``model`` and ``image_size``).
    """

    def __init__(self, model: str, n_classes: int, config: dict[str, Any], total_steps: int,
                 class_weights: list[float] | None = None, image_size: int | None = None,
                 backbone: Backbone | None = None, from_block: int | None = None, multilabel: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        if backbone is None:
            from ..codes.create import create_backbone

            backbone = create_backbone(model, "none", image_size=image_size)
        self.config = FineTuneConfig(**config)
        backbone.model.reset_classifier(n_classes)
        if not isinstance(backbone.model.get_classifier(), nn.Linear):
            raise HeadstartError(f"{backbone.name} has a {type(backbone.model.get_classifier()).__name__} "
                                 "head; fine-tuning supports models whose classifier is one linear layer")
        self.net = ClassifierNet(backbone.model, backbone.preprocess)
        self.prefixes = trainable_prefixes(backbone.model, self.config.unfreeze_blocks())
        self.head_prefix = backbone.model.pretrained_cfg.get("classifier", "classifier")
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.multilabel = multilabel  # a sigmoid per label, binary cross-entropy, label sets as 0/1 rows
        self.loss = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss(weight=weight)
        self.failed: dict[str, str] = {}  # images that failed to decode during training: path -> reason
        self.from_block = from_block  # training batches are the cached activations entering this block
        self.set_trainable(head_only=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores of a batch of images."""
        return self.net(images)

    def set_trainable(self, head_only: bool) -> None:
        """The new head alone, or the head with the unfrozen blocks, requires gradients; frozen parts in eval mode."""
        prefixes = [self.head_prefix] if head_only else self.prefixes
        for name, param in self.net.model.named_parameters():
            param.requires_grad_(_matches(name, prefixes))
        self.train(self.training)

    def train(self, mode: bool = True):
        """Frozen parts stay in inference mode: their BatchNorm statistics never change."""
        super().train(mode)
        if mode:
            for name, module in self.net.model.named_modules():
                params = list(module.parameters(recurse=False))
                if params and not any(p.requires_grad for p in params):
                    module.eval()
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not _matches(name, self.prefixes):
                    module.eval()
        return self

    def training_step(self, batch, batch_idx):
        """Cross-entropy of one batch (class-weighted as configured; binary per label when multi-label)."""
        images, labels, failed = batch
        self.failed.update(failed)
        if images is None:
            return None
        if self.from_block is None:
            logits = self.net(images)
        else:
            logits = upper_forward(self.net.model, images.contiguous(memory_format=torch.channels_last),
                                   self.from_block)
        loss = self.loss(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at epoch {self.current_epoch}, step "
                                     f"{self.global_step}; lower --lr and --resume")
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx):
        """Loss and accuracy on the monitor images (multi-label: the share of labels right at 0.5)."""
        images, labels, failed = batch
        self.failed.update(failed)
        if images is None:
            return
        logits = self.net(images)
        if self.multilabel:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
            right = ((logits > 0).float() == labels).float().mean()
        else:
            loss, right = nn.functional.cross_entropy(logits, labels), (logits.argmax(1) == labels).float().mean()
        self.log("monitor_loss", loss, sync_dist=True, batch_size=len(labels))
        self.log("monitor_acc", right, prog_bar=True, sync_dist=True, batch_size=len(labels))

    def configure_optimizers(self):
        """AdamW at discriminative rates, warm-up then cosine decay."""
        head, body = [], []
        for name, param in self.net.model.named_parameters():
            if _matches(name, [self.head_prefix]):
                head.append(param)
            elif _matches(name, self.prefixes):
                body.append(param)
        config = self.config
        mult = 1.0 if config.strategy == "scratch" else config.backbone_lr_mult
        groups = [{"params": head, "lr": config.lr}]
        if body:
            groups.append({"params": body, "lr": config.lr * mult})
        optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        total = self.hparams.total_steps
        warmup = max(1, int(total * config.warmup_fraction))
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup)),
        ], milestones=[warmup])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
