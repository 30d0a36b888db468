"""The network strategies: fine-tuning (a new head with the top blocks or all of the pretrained network, on
Lightning) and training from scratch; the trained head is then kept as a linear head on penultimate codes, so the
model predicts through the same path as the feature extractor."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..codes.backbones import PENULTIMATE, state_digest
from ..data.folders import ImageSet
from ..data.imagestats import STATS
from ..data.splits import stratified_split
from ..heads.familiarity import BANK_MAX, fit_familiarity
from ..heads.linear import LinearHead
from ..heads.multilabel import SigmoidHead, best_thresholds
from ..results import FitInfo
from ..training.options import FineTuneConfig

if TYPE_CHECKING:
    from ..estimator import TransferClassifier


def _label_head(clf: TransferClassifier, images: ImageSet, monitor: ImageSet) -> SigmoidHead:
    """The fine-tuned multi-label head, its thresholds from the held-out monitor images (half each label's best F1
    there, as the feature extractor's from out-of-fold probabilities; 0.5 where a label has no monitor image)."""
    head = SigmoidHead(clf.head_.weight, clf.head_.bias, {**clf.head_.info, "multilabel": True},
                       np.full(len(images.class_names), 0.5, np.float32), bool(images.targets.sum(1).min() > 0))
    codes = clf._extractor().transform(monitor.paths)
    if len(codes.kept):
        head.thresholds = best_thresholds(head.predict_proba(codes.codes), monitor.targets[codes.kept]
                                          ).astype(np.float32)
    head.info.update(thresholds=[round(float(t), 6) for t in head.thresholds], fill_empty=head.fill_empty,
                     thresholds_from=f"{len(codes.kept)} held-out monitor images")
    return head


def fit_network(clf: TransferClassifier, images: ImageSet, started: float, config: FineTuneConfig,
                 image_size: int | None = None) -> None:
    """Fine-tune (or train from scratch), then keep the trained head as a linear head on penultimate codes."""
    from ..training.datamodule import ImageDataModule  # torch and Lightning load only when a network trains
    from ..training.run import fine_tune

    config = replace(config, strategy="scratch" if clf.strategy == "scratch" else "fine-tune", seed=clf.seed)
    if image_size is not None and image_size != clf.image_size:
        clf._rebuild_backbone(image_size)
    with tempfile.TemporaryDirectory(prefix="headstart-train-") as scratch:
        workdir = Path(clf.workdir or scratch)
        data = ImageDataModule(images, clf.backbone_.preprocess, config, folder=workdir,
                               cache_dir=clf.cache_dir)  # the image check also measures the images' figures
        data.prepare_data()  # the image check (and, by default, the one decoding), before training
        images, skipped = data.usable, data.skipped
        info = fine_tune(clf.backbone_, data, config, workdir, clf.progress, clf.resume)
        monitor = data.monitor_set
    head = clf.backbone_.model.get_classifier()
    clf.head_ = LinearHead(np.array(head.weight.detach().numpy(), order="C"),
                           np.array(head.bias.detach().numpy(), order="C"),
                           {"classifier": "fine-tuned linear layer", **info})
    clf.backbone_.model.reset_classifier(0)
    clf.backbone_.digest = state_digest(clf.backbone_.model)
    if images.multilabel:
        clf.layers_ = [PENULTIMATE]
        clf.head_ = _label_head(clf, images, monitor)
    clf.strategy_, clf.layers_, clf.classes_ = config.strategy, [PENULTIMATE], list(images.class_names)
    clf._also = [STATS]  # scoring validation measures its images' figures too (fit's leak check)
    sample = images.subset(stratified_split(images.labels, min(1.0, BANK_MAX / len(images)), clf.seed)[1]
                           if len(images) > BANK_MAX else np.arange(len(images)))
    codes = clf._extractor().transform(sample.paths)  # the trained network's codes, for familiarity
    clf.familiarity_ = fit_familiarity(codes.codes, sample.labels[codes.kept], clf.seed)
    finished = time.perf_counter()
    skipped = [{"path": p, "reason": r} for p, r in skipped] + info["skipped_during_training"]
    fit_info: FitInfo = {"n_train_images": len(images), "n_skipped": len(skipped), "skipped": skipped,
                         "n_codes_computed": 0, "codes_dim": int(clf.head_.weight.shape[1]),
                         "classifier": clf.head_.info, "training": info,
                         "seconds": {"train": round(finished - started, 3), "total": round(finished - started, 3)}}
    clf.fit_info_ = fit_info
