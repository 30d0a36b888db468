"""Fine-tuning and training from scratch on Lightning: new head, unfrozen top blocks, discriminative rates."""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from .backbones import Backbone
from .data import ImageSet, stratified_split
from .errors import HeadstartError
from .images import ImageSkipped, Preprocess, open_rgb
from .options import FineTuneConfig

CONTAINERS = ("blocks", "stages", "layers", "features")


def trainable_prefixes(model: nn.Module, n_blocks: int | None) -> list[str]:
    """Module-name prefixes trained for ``n_blocks`` top blocks (None: everything; 0: the classifier only)."""
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    children = [name for name, _ in model.named_children()]
    if n_blocks is None:
        return children
    container = next((c for c in CONTAINERS if c in children), None)
    if container is None or n_blocks == 0:
        return [classifier]
    blocks = [f"{container}.{name}" for name, _ in getattr(model, container).named_children()]
    after = children[children.index(container) + 1:]
    return blocks[max(0, len(blocks) - n_blocks):] + after if n_blocks else [classifier]


def _matches(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class ImageFiles(torch.utils.data.Dataset):
    """Decoded, resized uint8 HWC images streamed from disk; training augmentation optional."""

    def __init__(self, images: ImageSet, preprocess: Preprocess, augment: bool):
        self.paths, self.labels, self.preprocess, self.augment = images.paths, images.labels, preprocess, augment
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
                    transforms.RandomResizedCrop(self.preprocess.input_size, scale=(0.35, 1.0),
                                                 interpolation=transforms.InterpolationMode.BICUBIC),
                    transforms.RandomHorizontalFlip(),
                ])
            array = np.asarray(self._train_transform(img), dtype=np.uint8)
        else:
            array = self.preprocess(img)
        return torch.from_numpy(array.copy()), int(self.labels[i])


def collate_usable(batch):
    """(images, labels, [(path, reason)] of the images that failed to decode): a failure never stops training."""
    usable = [b for b in batch if b[0] is not None]
    failed = [(b[1], b[2]) for b in batch if b[0] is None]
    if not usable:
        return None, None, failed
    return torch.stack([b[0] for b in usable]), torch.tensor([b[1] for b in usable]), failed


class ClassifierNet(nn.Module):
    """uint8 NHWC images in, logits out: the model's normalisation and the timm network with its new head."""

    def __init__(self, model: nn.Module, preprocess: Preprocess):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return self.model(x.contiguous(memory_format=torch.channels_last))


class FineTuner(L.LightningModule):
    """A timm network with a new ``n_classes`` head, trained on uint8 images: top blocks unfrozen after
    ``config.probe_epochs`` head-only epochs, frozen parts in inference mode (their BatchNorm statistics never
    change), AdamW with the pretrained layers at ``lr * backbone_lr_mult``, linear warm-up then cosine decay.

    Every argument but ``backbone`` is a plain value saved as a hyperparameter, so a checkpoint restores with
    ``FineTuner.load_from_checkpoint(path)`` (the network is rebuilt from ``model`` and ``image_size``).
    """

    def __init__(self, model: str, n_classes: int, config: dict[str, Any], total_steps: int,
                 class_weights: list[float] | None = None, image_size: int | None = None,
                 backbone: Backbone | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        if backbone is None:
            from .backbones import create_backbone

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
        self.loss = nn.CrossEntropyLoss(weight=weight)
        self.failed: dict[str, str] = {}  # images that failed to decode during training: path -> reason
        self._set_trainable(probe=self.config.probe_epochs > 0 and self.config.strategy != "scratch")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _set_trainable(self, probe: bool) -> None:
        prefixes = [self.head_prefix] if probe else self.prefixes
        for name, param in self.net.model.named_parameters():
            param.requires_grad_(_matches(name, prefixes))

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

    def on_train_epoch_start(self) -> None:
        if self.config.strategy != "scratch" and self.current_epoch >= self.config.probe_epochs:
            self._set_trainable(probe=False)
        self.train()

    def training_step(self, batch, batch_idx):
        images, labels, failed = batch
        self.failed.update(failed)
        if images is None:
            return None
        loss = self.loss(self.net(images), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at epoch {self.current_epoch}, step "
                                     f"{self.global_step}; lower --lr and --resume")
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels, failed = batch
        self.failed.update(failed)
        if images is None:
            return
        logits = self.net(images)
        self.log("monitor_loss", nn.functional.cross_entropy(logits, labels), sync_dist=True,
                 batch_size=len(labels))
        self.log("monitor_acc", (logits.argmax(1) == labels).float().mean(), prog_bar=True, sync_dist=True,
                 batch_size=len(labels))

    def configure_optimizers(self):
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


def seconds_per_epoch(backbone: Backbone, train: ImageSet, config: FineTuneConfig, steps: int = 3) -> float:
    """Seconds one training epoch over ``train`` will take (its held-out monitor pass included), measured by timing
    a few optimiser steps and forward passes on this machine, and decoding a few of the images; no training run.

    Decoding runs in ``config.workers`` processes alongside the network, so an epoch takes the longer of the two.
    """
    import statistics
    import time

    cuda = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    device = torch.device("cuda" if cuda else "cpu")
    n_classes = len(train.class_names)
    backbone.model.reset_classifier(n_classes)
    net = ClassifierNet(backbone.model, backbone.preprocess).to(device)
    prefixes = trainable_prefixes(backbone.model, config.unfreeze_blocks())
    for name, param in net.model.named_parameters():
        param.requires_grad_(_matches(name, prefixes))
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-6)
    height, width = backbone.preprocess.input_size
    images = torch.randint(0, 256, (config.batch_size, height, width, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, n_classes, (config.batch_size,), device=device)

    def timed(train_step: bool) -> float:
        started = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=cuda), torch.set_grad_enabled(train_step):
            loss = nn.functional.cross_entropy(net(images), labels)
        if train_step:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    net.train()
    for _ in range(2):  # warm-up: the first two steps on a CPU take several times longer (allocations, kernels)
        timed(True)
    train_s = statistics.median(timed(True) for _ in range(steps))
    net.eval()
    timed(False)
    eval_s = statistics.median(timed(False) for _ in range(steps))
    backbone.model.eval()
    sample = ImageFiles(train.subset(np.arange(min(16, len(train)))), backbone.preprocess, config.augment)
    started = time.perf_counter()
    for i in range(len(sample)):
        sample[i]
    decode_s = (time.perf_counter() - started) / max(1, len(sample)) * len(train) / max(1, config.workers)
    n_monitor = math.ceil(len(train) * config.monitor_fraction)
    network_s = ((len(train) - n_monitor) * train_s + n_monitor * eval_s) / config.batch_size
    return max(network_s, decode_s)


def _atomic_checkpoint_io():
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Checkpoints written to a temporary file and renamed: a kill never leaves half a checkpoint."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)

    return AtomicCheckpointIO()


def usable_images(images: ImageSet, preprocess: Preprocess, workers: int = 2
                  ) -> tuple[ImageSet, list[tuple[str, str]]]:
    """The images that decode, and (path, reason) for those that do not: checked once, before training."""
    from concurrent.futures import ThreadPoolExecutor

    def reason(path: Path) -> str | None:
        try:
            open_rgb(path, min_short_side=preprocess.scale_size)
            return None
        except ImageSkipped as exc:
            return str(exc)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = list(pool.map(reason, images.paths))
    keep = np.asarray([i for i, r in enumerate(reasons) if r is None], dtype=np.int64)
    return images.subset(keep), [(str(p), r) for p, r in zip(images.paths, reasons) if r is not None]


def _read_rows(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _merge_metrics(path: Path, earlier: list[dict[str, str]], resumed_from: int) -> None:
    """Put the epochs logged before a resume back in front of the new ones (Lightning's CSV logger replaces them)."""
    import csv

    rows = [r for r in earlier if r.get("epoch") and int(float(r["epoch"])) < resumed_from] + _read_rows(path)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def fine_tune(backbone: Backbone, train: ImageSet, config: FineTuneConfig, workdir: Path, progress: bool,
              resume: bool = False) -> dict[str, Any]:
    """Train in ``workdir`` (checkpoints, logs); returns fit info. ``backbone.model`` ends with the best weights."""
    import lightning.pytorch  # noqa: F401  (imported first: importing it sets its loggers to INFO)

    with _quiet_lightning(config.verbose):
        return _train(backbone, train, config, workdir, progress, resume)


@contextlib.contextmanager
def _quiet_lightning(verbose: bool):
    """Lightning's banners, tips and expected warnings hidden for the duration of one run (unless ``verbose``);
    logger levels and warning filters are restored afterwards."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        if not verbose:
            for logger in loggers:
                logger.setLevel(logging.ERROR)
            for message in (".*module\\(s\\) in eval mode.*", ".*LeafSpec.*", ".*does not have many workers.*",
                            ".*smaller than the logging interval.*", ".*Previous log files in this directory.*",
                            ".*Checkpoint directory .* exists and is not empty.*", ".*litlogger.*"):
                warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _trainer(config: FineTuneConfig, workdir: Path, progress: bool, checkpoints) -> L.Trainer:
    """Lightning's Trainer for ``config``: checkpoints written atomically, early stopping on the held-out training
    images, CSV metrics (and TensorBoard or MLflow when asked), bf16 on CUDA."""
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(workdir, name="logs", version="")]
    if "tensorboard" in config.logger:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(workdir, name="tensorboard", version=""))
    if "mlflow" in config.logger:
        from lightning.pytorch.loggers import MLFlowLogger

        loggers.append(MLFlowLogger(experiment_name="headstart", tracking_uri=f"file:{workdir / 'mlruns'}"))
    cuda = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    max_time = None if config.max_seconds is None else timedelta(seconds=config.max_seconds)
    return L.Trainer(
        max_epochs=config.epochs, max_time=max_time, accelerator=config.accelerator, devices=config.devices,
        num_nodes=config.num_nodes, strategy=config.distributed, precision="bf16-mixed" if cuda else "32-true",
        callbacks=[checkpoints, EarlyStopping("monitor_acc", mode="max", patience=config.patience)],
        logger=loggers, default_root_dir=workdir, enable_progress_bar=progress, enable_model_summary=False,
        gradient_clip_val=1.0, num_sanity_val_steps=0, log_every_n_steps=10,
        plugins=[_atomic_checkpoint_io()],
    )


def _train(backbone: Backbone, train: ImageSet, config: FineTuneConfig, workdir: Path, progress: bool,
           resume: bool) -> dict[str, Any]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    config.check()
    L.seed_everything(config.seed, workers=True, verbose=False)
    fit_idx, monitor_idx = stratified_split(train.labels, config.monitor_fraction, config.seed)
    fit_set, monitor_set = train.subset(fit_idx), train.subset(monitor_idx)
    n_classes = len(train.class_names)
    weights = None
    if config.class_weight == "balanced":
        counts = np.bincount(fit_set.labels, minlength=n_classes).astype(np.float64)
        weights = torch.tensor(len(fit_set) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    loader_args = {"batch_size": config.batch_size, "num_workers": config.workers, "collate_fn": collate_usable,
                   "persistent_workers": config.workers > 0, "pin_memory": torch.cuda.is_available()}
    train_loader = torch.utils.data.DataLoader(ImageFiles(fit_set, backbone.preprocess, config.augment),
                                               shuffle=True, drop_last=len(fit_set) > config.batch_size,
                                               **loader_args)
    monitor_loader = torch.utils.data.DataLoader(ImageFiles(monitor_set, backbone.preprocess, False), **loader_args)
    total_steps = config.epochs * max(1, len(train_loader))
    module = FineTuner(backbone.name, n_classes, asdict(config), total_steps,
                       weights.tolist() if weights is not None else None, backbone.preprocess.input_size[0], backbone)

    checkpoints = ModelCheckpoint(dirpath=workdir / "checkpoints", filename="best", monitor="monitor_acc",
                                  mode="max", save_last=True, save_top_k=1)
    trainer = _trainer(config, workdir, progress, checkpoints)
    last = workdir / "checkpoints" / "last.ckpt"
    resumed_from, earlier = None, []
    if resume and last.exists():
        resumed_from = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1  # epochs done
        earlier = _read_rows(workdir / "logs" / "metrics.csv")
    try:
        trainer.fit(module, train_loader, monitor_loader, ckpt_path=str(last) if resumed_from is not None else None)
    except FloatingPointError as exc:
        raise HeadstartError(f"training stopped: {exc}; the last good checkpoint is kept in {workdir}") from None
    if trainer.interrupted:
        raise KeyboardInterrupt
    if resumed_from is not None and trainer.is_global_zero:
        _merge_metrics(workdir / "logs" / "metrics.csv", earlier, resumed_from)
    best = checkpoints.best_model_path or str(last)
    if best and Path(best).exists():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    backbone.model.eval()
    info = {"epochs_run": trainer.current_epoch, "best_monitor_acc": float(checkpoints.best_model_score or 0),
            "monitor_images": len(monitor_set), "trainable_prefixes": module.prefixes,
            "is_global_zero": trainer.is_global_zero, "world_size": trainer.world_size,
            "resumed_from_epoch": resumed_from, "config": asdict(config),
            "skipped_during_training": [{"path": p, "reason": r} for p, r in sorted(module.failed.items())]}
    (workdir / "fit_info.json").write_text(json.dumps(info, indent=2))
    return info
