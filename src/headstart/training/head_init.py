"""The new head started from a linear probe (LP-FT: Kumar et al., "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution", ICLR 2022): softmax regression, C by cross-validation, on the pretrained
network's penultimate codes of a stratified sample of the training images at the run's own input size. The network
then trains with a head that already separates the classes, in place of the epochs that train a random head alone.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..data.imagecache import EvalImages
from ..data.splits import stratified_split
from ..heads.linear import fit_linear

#: Training images whose codes the probe is fitted on (a stratified sample beyond that), and at least this many per
#: class.
HEAD_INIT_IMAGES = 2000
HEAD_INIT_PER_CLASS = 20


def sample_rows(labels: np.ndarray, seed: int) -> np.ndarray:
    """Positions of a stratified sample of ``labels`` for the probe (all of them when there are no more)."""
    n = max(HEAD_INIT_IMAGES, HEAD_INIT_PER_CLASS * len(np.unique(labels)))
    if len(labels) <= n:
        return np.arange(len(labels))
    return stratified_split(labels, n / len(labels), seed)[1]


@torch.inference_mode()
def probe_head(module: Any, data: Any, seed: int) -> dict[str, Any]:
    """Set ``module``'s (a FineTuner's) new head to a linear probe fitted on the codes of ``data``'s stored fit
    images (an ImageDataModule after setup, memory or activations loader); returns what was done."""
    started = time.perf_counter()
    labels = data.fit_set.labels
    picked = sample_rows(labels, seed)
    rows = np.asarray(data.fit_idx)[picked]
    images = EvalImages(data.stored, rows, labels[picked], data.preprocess)
    model, batch = module.net.model, data.config.batch_size
    was_training = model.training
    model.eval()
    codes = []
    for start in range(0, len(rows), batch):
        x, _, _ = images.__getitems__(list(range(start, min(start + batch, len(rows)))))
        features = model.forward_features(module.net.normalize(x).contiguous(memory_format=torch.channels_last))
        codes.append(model.forward_head(features, pre_logits=True).float().numpy())
    model.train(was_training)
    head = fit_linear(np.concatenate(codes), labels[picked], len(data.images.class_names), seed=seed)
    classifier = model.get_classifier()
    classifier.weight.copy_(torch.from_numpy(head.weight))
    classifier.bias.copy_(torch.from_numpy(head.bias))
    C = head.info["C"]
    return {"images": len(rows), "C": C, "cv_accuracy": head.info.get("cv_accuracy", {}).get(f"{C:.3g}"),
            "seconds": round(time.perf_counter() - started, 2)}
