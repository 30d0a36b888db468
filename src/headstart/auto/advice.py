"""The advisor: how large the dataset is, how similar to ImageNet, which layer transfers best, and what to do.

One pass: every candidate layer's codes come out of the same forward pass (and land in the cache, where the final fit
finds them). Size: median images per class against LARGE_PER_CLASS. Similarity: how confidently the pretrained ImageNet
classifier recognises the images (mean top-1 softmax probability), relative to the same figure on ImageNet's own
images (REFERENCE_CONFIDENCE, measured on ../shared/data/imagenet_samples). Transferability: per candidate layer, the
cross-validated C search that the final fit uses (:func:`headstart.heads.linear.search_C`), on all training images
unless a full pass would not fit the budget.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..codes.backbones import PENULTIMATE, Backbone, candidate_layers
from ..codes.extract import FeatureExtractor
from ..data.folders import ImageSet
from ..data.imagestats import STATS
from ..heads.linear import Search
from .layers import scored_layers, scored_members
from .measure import FULL_PASS_SHARE, Measured, measure_codes, measure_similarity, measure_size

#: Updates a fine-tuning run aims for: 10 epochs of 132 steps on pneumoniamnist, 3 of 1125 on cifar10, at least
#: MIN_FINE_TUNE_EPOCHS (the plan may afford fewer: :mod:`.plan`).
FINE_TUNE_STEPS = 1300
MIN_FINE_TUNE_EPOCHS = 3

def suggested_image_size(backbone: Backbone, short_side: int | None) -> int | None:
    """A smaller input for small images (e.g. 28 px X-rays): three times their side, at least 96, multiple of 32.

    On pneumoniamnist (28 px) fine-tuning everything at 96 px reached 0.952-0.970 validation accuracy (7-10 epochs),
    at 64 px 0.9485 (8 epochs).
    """
    full = backbone.pretrained_input
    if not short_side or 3 * short_side >= full:
        return None
    return max(96, int(np.ceil(3 * short_side / 32) * 32))


def fine_tune_options(n_train: int, similar: bool, image_size: int | None, batch_size: int = 32) -> dict[str, Any]:
    """Hyper-parameters for fine-tuning the whole network: about FINE_TUNE_STEPS updates, 3 to 10 epochs."""
    steps_per_epoch = max(1, int(n_train * 0.9) // batch_size)  # 10 % of train is held out for early stopping
    epochs = int(np.clip(np.ceil(FINE_TUNE_STEPS / steps_per_epoch), MIN_FINE_TUNE_EPOCHS, 10))
    return {"unfreeze": "all", "epochs": epochs, "lr": 1e-3, "backbone_lr_mult": 0.1 if similar else 0.3,
            "image_size": image_size}


@dataclass
class Advice:
    """The measurements, the dataset's cell in the table, and the recommendation with its reason."""

    size: dict[str, Any]
    similarity: dict[str, Any]
    layers: dict[str, float]  # cross-validated accuracy per candidate layer
    strategy: str
    layer: str
    options: dict[str, Any]
    reason: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    choice: dict[str, Any] = field(default_factory=dict)  # per-candidate evidence and the rule that chose
    network: str = ""  # the backbone measured (several networks joined by commas: their probes averaged)
    measured: Measured | None = field(default=None, repr=False)  # kept for the fit; not serialised
    searches: dict[str, Search] = field(default_factory=dict, repr=False)

    @property
    def cell(self) -> tuple[str, str]:
        """The table's cell: (large or small, similar or different)."""
        return ("large" if self.size["large"] else "small",
                "similar" if self.similarity.get("similar") else "different")

    def to_dict(self) -> dict[str, Any]:
        """The advice as JSON-ready values (``advise --json``)."""
        return {"network": self.network, "size": self.size, "similarity": self.similarity, "layer_scores": self.layers,
                "layer_choice": self.choice, "cell": list(self.cell), "strategy": self.strategy, "layer": self.layer,
                "options": self.options, "reason": self.reason, "seconds": round(self.seconds, 2),
                "notes": self.notes}


def advise(backbone: Backbone | str, train: ImageSet | str | Path, cache_dir: str | Path | None | bool = None,
           seed: int = 0, classifier: str = "logistic", budget: float | None = None, progress: bool = False,
           engine: str = "auto", batch_size: int | None = None, weights: str | None = None,
           precision: str = "fp32", groups: Any = None) -> Advice:
    """Measure ``train`` (a folder of class folders or an ImageSet) against ``backbone`` (a model name or a built
    Backbone) in one pass, and recommend a strategy, a layer and hyper-parameters (``precision``: of the codes,
    "fp32" or "int8" calibrated on ``train``; ``groups``: the duplicate sets of the measured images that the folds
    keep together, when another network found them; default: found in this network's codes)."""
    from ..codes.create import create_backbone
    from ..data.folders import read_class_folders
    from ..disk import cache_folder

    started = time.perf_counter()
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, weights, cache_dir=cache_folder(cache_dir))
    train = train if isinstance(train, ImageSet) else read_class_folders(train)
    size = measure_size(train)
    candidates = candidate_layers(backbone)
    joint = bool(getattr(backbone, "members", None))
    parts = sorted({p for c in candidates for p in c.split("+")} | ({PENULTIMATE} if joint else set()))
    extractor = FeatureExtractor(backbone, [*parts, STATS], cache_dir, engine, batch_size, progress=progress,
                                 precision=precision, calibration=train.paths)
    measured = measure_codes(extractor, train, size["large"], budget, seed, progress)
    extractor.release()  # its runtime's arena is not needed again: the codes are measured (cifar10: 0.3 GB)
    notes = [] if measured.complete else [
        f"layers measured on a stratified {len(measured.images)} of {len(train)} training images: a full pass was "
        f"predicted to take more than {FULL_PASS_SHARE:.0%} of the {budget:.0f} s budget"]
    similarity = measure_similarity(backbone, measured.parts[PENULTIMATE])
    if groups is not None and len(groups) != len(measured.images):
        groups = None  # measured on other images (a sample where another network had all): its own sets
    score = scored_members if joint else functools.partial(scored_layers, candidates=candidates)
    searches, layer, choice = score(measured, backbone=backbone, cache_dir=extractor.cache_dir, seed=seed,
                                    progress=progress, precision=extractor.precision_key(), groups=groups)
    if not searches:
        notes.append("a class has a single usable training image: layers could not be compared, penultimate used")
    scores = {c: round(s.cv_accuracy, 4) for c, s in searches.items()}
    joint_scores = choice.get("joint", {}).get("scores", {}).get("joint")
    if layer not in scores and joint_scores:  # every network's probe averaged: scored on the same folds
        scores[layer] = joint_scores["cv_accuracy"]
    large, similar = size["large"], similarity["similar"]
    image_size = suggested_image_size(backbone, size["median_short_side"])
    if large:
        strategy = "fine-tune"
        options = fine_tune_options(size["images"], similar, image_size)
        reason = (f"{size['median_per_class']:.0f} images per {size['unit']} is enough to adapt every layer, "
                  + ("and the images resemble ImageNet, so the pretrained weights move little (lr x0.1)."
                     if similar else "and the images differ from ImageNet, so the pretrained layers need to move "
                                     "further (backbone lr x0.3); with far more data, try --strategy scratch."))
    else:
        strategy = "feature-extractor"
        options = {"classifier": classifier, "layer": layer}
        cv_text = f" ({scores[layer]:.3f} cross-validated accuracy on training images)" if scores else ""
        reason = (f"with {size['median_per_class']:.0f} images per {size['unit']}, a linear classifier on frozen codes "
                  "avoids overfitting; " + ("the images resemble ImageNet" if similar else
                                            "the images differ from ImageNet")
                  + (f", and {layer} transferred best{cv_text}." if not joint else
                     f"; each network's best layer, their probes averaged{cv_text}."))
    advice = Advice(size, similarity, scores, strategy, layer, options, reason, notes=notes, choice=choice,
                    network=backbone.name, measured=measured, searches=searches)
    advice.seconds = time.perf_counter() - started
    return advice


def format_advice(advice: Advice, model: str) -> str:
    """The table with the dataset placed in it, the numbers, and the recommendation."""
    size, sim = advice.size, advice.similarity
    cells = {("small", "similar"): "linear on CNN codes", ("small", "different"): "linear on earlier-layer codes",
             ("large", "similar"): "fine-tune whole network", ("large", "different"): "fine-tune all / scratch"}
    mark = {k: (f"[{v}]" if k == advice.cell else f" {v} ") for k, v in cells.items()}
    lines = [
        f"model {model}",
        f"size: {size['images']} images, {size['classes']} {'classes' if size['unit'] == 'class' else 'labels'}, "
        f"per {size['unit']} min "
        f"{size['min_per_class']}, median "
        f"{size['median_per_class']:.0f} -> {'large' if size['large'] else 'small'} ({size['rule']})",
    ]
    if "ratio" in sim:
        lines.append(f"similarity: ImageNet confidence {sim['confidence']:.3f} vs {sim['reference_confidence']:.3f} "
                     f"on ImageNet images, ratio {sim['ratio']:.2f} -> {'similar' if sim['similar'] else 'different'}"
                     f" (similar from {sim['threshold']})")
    else:
        lines.append(f"similarity: {sim['method']}")
    losses = {k: c["cv_log_loss"] for k, c in advice.choice.get("candidates", {}).items()}
    lines.append("layers (5-fold cross-validated accuracy / log loss on training images; * chosen by the lowest loss):")
    lines += [f"  {k:<48}{v:.3f} / {losses.get(k, float('nan')):.4f}{' *' if k == advice.layer else ''}"
              for k, v in advice.layers.items()]
    lines += [f"note: {note}" for note in advice.notes]
    lines += ["", f"{'':<8}{'similar to ImageNet':<34}{'different from ImageNet':<34}",
              f"{'small':<8}{mark[('small', 'similar')]:<34}{mark[('small', 'different')]:<34}",
              f"{'large':<8}{mark[('large', 'similar')]:<34}{mark[('large', 'different')]:<34}", ""]
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in advice.options.items() if v is not None)
    lines.append(f"recommendation: --strategy {advice.strategy} {flags}".rstrip())
    lines.append(f"why: {advice.reason}")
    return "\n".join(lines)
