"""The network strategies: fine-tuning (a new head with the top blocks or all of the pretrained network, on
Lightning) and training from scratch; the trained head is then kept as a linear head on penultimate codes, so the
model predicts through the same path as the feature extractor."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..codes.backbones import PENULTIMATE, Backbone, state_digest
from ..codes.create import create_backbone
from ..data.folders import ImageSet
from ..data.imagestats import STATS
from ..data.splits import stratified_split
from ..disk import cache_folder
from ..heads.familiarity import BANK_MAX, fit_familiarity
from ..heads.linear import LinearHead
from ..heads.multilabel import SigmoidHead, best_thresholds
from ..results import FitInfo
from ..training.options import FineTuneConfig
from .fitted import Fitted, Settings


def _label_head(head: LinearHead, extractor, images: ImageSet, monitor: ImageSet) -> SigmoidHead:
    """The fine-tuned multi-label head, its thresholds from the held-out monitor images (half each label's best F1
    there, as the feature extractor's from out-of-fold probabilities; 0.5 where a label has no monitor image)."""
    labels = SigmoidHead(head.weight, head.bias, {**head.info, "multilabel": True},
                         np.full(len(images.class_names), 0.5, np.float32), bool(images.targets.sum(1).min() > 0))
    codes = extractor.transform(monitor.paths)
    if len(codes.kept):
        labels.thresholds = best_thresholds(labels.predict_proba(codes.codes), monitor.targets[codes.kept]
                                            ).astype(np.float32)
    labels.info.update(thresholds=[round(float(t), 6) for t in labels.thresholds], fill_empty=labels.fill_empty,
                       thresholds_from=f"{len(codes.kept)} held-out monitor images")
    return labels


def fit_network(settings: Settings, images: ImageSet, backbone: Backbone, started: float, config: FineTuneConfig,
                image_size: int | None = None) -> Fitted:
    """Fine-tune (or train from scratch) ``backbone``, then keep the trained head as a linear head on penultimate
    codes; returns the trained network with it."""
    from ..training.datamodule import ImageDataModule  # torch and Lightning load only when a network trains
    from ..training.run import fine_tune

    config = replace(config, strategy=config.strategy, seed=settings.seed)
    if image_size is not None and image_size != settings.image_size:
        backbone = create_backbone(backbone.name, "none" if config.strategy == "scratch" else settings.weights,
                                   image_size=image_size, cache_dir=cache_folder(settings.cache_dir))
    with tempfile.TemporaryDirectory(prefix="headstart-train-") as scratch:
        workdir = Path(settings.workdir or scratch)
        data = ImageDataModule(images, backbone.preprocess, config, folder=workdir,
                               cache_dir=settings.cache_dir)  # the image check also measures the images' figures
        data.prepare_data()  # the image check (and, by default, the one decoding), before training
        images, skipped = data.usable, data.skipped
        info = fine_tune(backbone, data, config, workdir, settings.progress, settings.resume)
        monitor = data.monitor_set
    trained = backbone.model.get_classifier()
    head = LinearHead(np.array(trained.weight.detach().numpy(), order="C"),
                      np.array(trained.bias.detach().numpy(), order="C"),
                      {"classifier": "fine-tuned linear layer", **info})
    backbone.model.reset_classifier(0)
    backbone.digest = state_digest(backbone.model)
    also = [STATS]  # scoring validation measures its images' figures too (fit's leak check)
    extractor = settings.extractor_for(backbone, [PENULTIMATE], "fp32", also)
    if images.multilabel:
        head = _label_head(head, extractor, images, monitor)
    sample = images.subset(stratified_split(images.labels, min(1.0, BANK_MAX / len(images)), settings.seed)[1]
                           if len(images) > BANK_MAX else np.arange(len(images)))
    codes = extractor.transform(sample.paths)  # the trained network's codes, for familiarity
    familiarity = fit_familiarity(codes.codes, sample.labels[codes.kept], settings.seed)
    finished = time.perf_counter()
    skipped = [{"path": p, "reason": r} for p, r in skipped] + info["skipped_during_training"]
    fit_info: FitInfo = {"n_train_images": len(images), "n_skipped": len(skipped), "skipped": skipped,
                         "n_codes_computed": 0, "codes_dim": int(head.weight.shape[1]), "classifier": head.info,
                         "training": info,
                         "seconds": {"train": round(finished - started, 3), "total": round(finished - started, 3)}}
    return Fitted(backbone, config.strategy, [PENULTIMATE], list(images.class_names), head, familiarity, fit_info,
                  also, extractor=extractor)
