"""The advisor: how large the dataset is, how similar to ImageNet, which layer transfers best, and what to do.

Size: median images per class against LARGE_PER_CLASS. Similarity: how confidently the pretrained ImageNet classifier
recognises the images (mean top-1 softmax probability over a subsample), relative to the same figure on
ImageNet's own images (REFERENCE_CONFIDENCE, measured on ../shared/data/imagenet_samples). Transferability: 3-fold
cross-validated accuracy of a linear classifier on each candidate layer's codes, on a subsample of the training split.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import PENULTIMATE, Backbone
from .data import ImageSet, stratified_split
from .features import FeatureExtractor

#: Median images per class from which a dataset counts as large: with that many, fine-tuning the whole network
#: beat every frozen-code classifier in our measurements (pneumoniamnist ~2400 per class, cifar10 4000); with
#: 80-1000 per class (dtd10, cats_vs_dogs) a linear classifier on codes was as good or better.
LARGE_PER_CLASS = 2000
#: Mean top-1 ImageNet probability of the embedded EfficientNet-Lite0 on imagenet_samples (1000 images).
REFERENCE_CONFIDENCE = 0.7189
#: Similar when the confidence ratio is at least this. Measured ratios (bench/advisor.py): cats_vs_dogs 0.575,
#: dtd10 0.448, cifar10 0.292, pneumoniamnist 0.148; set halfway between the object photos (cats_vs_dogs) and the
#: nearest unlike data (textures), rounded to 0.5.
SIMILAR_RATIO = 0.5
#: Updates a fine-tuning run aims for: 10 epochs of 132 steps on pneumoniamnist, 3 of 1125 on cifar10 (validation
#: accuracy 0.952-0.970 after 7-10 epochs, and 0.853, against 0.950 and 0.812 for the best probes); never under
#: MIN_FINE_TUNE_EPOCHS (auto falls back to a linear probe when those do not fit its budget).
FINE_TUNE_STEPS = 1300
MIN_FINE_TUNE_EPOCHS = 3
PROBE_SAMPLE = 1500  # training images used to score layers
SIMILARITY_SAMPLE = 500


@dataclass
class Advice:
    """The measurements, the dataset's cell in the table, and the recommendation with its reason."""

    size: dict[str, Any]
    similarity: dict[str, Any]
    layers: dict[str, float]
    strategy: str
    layer: str
    options: dict[str, Any]
    reason: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def cell(self) -> tuple[str, str]:
        return ("large" if self.size["large"] else "small",
                "similar" if self.similarity.get("similar") else "different")

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "similarity": self.similarity, "layer_scores": self.layers,
                "cell": list(self.cell), "strategy": self.strategy, "layer": self.layer, "options": self.options,
                "reason": self.reason, "seconds": round(self.seconds, 2), "notes": self.notes}


def candidate_layers(backbone: Backbone) -> list[str]:
    """The penultimate layer, the three blocks before it, and the second-last block joined with the penultimate."""
    blocks = backbone.layers()[:-1]
    candidates = [PENULTIMATE, *reversed(blocks[-3:])]
    if len(blocks) >= 2:
        candidates.append(f"{blocks[-2]}+{PENULTIMATE}")
    return candidates


def measure_size(images: ImageSet, sample: int = 64) -> dict[str, Any]:
    """Counts per class, the size rule's verdict, and the images' typical shorter side (from file headers)."""
    from PIL import Image

    counts = np.bincount(images.labels, minlength=len(images.class_names))
    rng = np.random.default_rng(0)
    shorts = []
    for i in rng.choice(len(images), min(sample, len(images)), replace=False):
        try:
            with Image.open(images.paths[i]) as img:
                shorts.append(min(img.size))
        except Exception:
            continue
    median = float(np.median(counts))
    return {"images": int(len(images)), "classes": len(images.class_names), "min_per_class": int(counts.min()),
            "median_per_class": median, "large": median >= LARGE_PER_CLASS,
            "rule": f"large when the median class has at least {LARGE_PER_CLASS} training images",
            "median_short_side": int(np.median(shorts)) if shorts else None}


def _subsample(images: ImageSet, n: int, seed: int = 0) -> ImageSet:
    if len(images) <= n:
        return images
    _, keep = stratified_split(images.labels, n / len(images), seed)
    return images.subset(keep)


def measure_similarity(backbone: Backbone, codes: np.ndarray) -> dict[str, Any]:
    """Mean top-1 probability of the pretrained ImageNet classifier on penultimate ``codes``, vs ImageNet's own."""
    head = backbone.pretrained_head
    if head is None:
        return {"method": "unavailable: these weights have no ImageNet classifier", "similar": False}
    weight, bias = head.weight.detach().numpy(), head.bias.detach().numpy()
    logits = codes @ weight.T + bias
    logits -= logits.max(1, keepdims=True)
    proba = np.exp(logits)
    proba /= proba.sum(1, keepdims=True)
    confidence = float(proba.max(1).mean())
    ratio = confidence / REFERENCE_CONFIDENCE
    return {"method": "mean top-1 probability of the pretrained ImageNet classifier, relative to ImageNet images",
            "confidence": round(confidence, 4), "reference_confidence": REFERENCE_CONFIDENCE,
            "ratio": round(ratio, 4), "threshold": SIMILAR_RATIO, "similar": ratio >= SIMILAR_RATIO}


def layer_scores(codes: dict[str, np.ndarray], labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """3-fold cross-validated accuracy of a standardised softmax regression per layer (best of three C values)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = StratifiedKFold(min(3, int(np.bincount(labels).min())), shuffle=True, random_state=seed)
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for layer, x in codes.items():
            scores[layer] = round(max(
                float(cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)),
                                      x, labels, cv=folds).mean())
                for c in (0.01, 0.1, 1.0)), 4)
    return scores


def suggested_image_size(backbone: Backbone, short_side: int | None) -> int | None:
    """A smaller input for small images (e.g. 28 px X-rays): three times their side, at least 96, multiple of 32.

    On pneumoniamnist (28 px) fine-tuning everything at 96 px reached 0.952-0.970 validation accuracy (7-10 epochs),
    at 64 px 0.9485 (8 epochs).
    """
    full = backbone.preprocess.input_size[0]
    if not short_side or 3 * short_side >= full:
        return None
    return max(96, int(np.ceil(3 * short_side / 32) * 32))


def fine_tune_options(n_train: int, similar: bool, image_size: int | None, batch_size: int = 32) -> dict[str, Any]:
    """Hyper-parameters for fine-tuning the whole network: about FINE_TUNE_STEPS updates, 3 to 10 epochs."""
    steps_per_epoch = max(1, int(n_train * 0.9) // batch_size)  # 10 % of train is held out for early stopping
    epochs = int(np.clip(np.ceil(FINE_TUNE_STEPS / steps_per_epoch), MIN_FINE_TUNE_EPOCHS, 10))
    return {"unfreeze": "all", "epochs": epochs, "lr": 1e-3, "backbone_lr_mult": 0.1 if similar else 0.3,
            "image_size": image_size}


def advise(backbone: Backbone, train: ImageSet, cache_dir: str | Path | None = None, seed: int = 0) -> Advice:
    """Measure ``train`` against ``backbone`` and recommend a strategy, a layer and hyper-parameters."""
    started = time.perf_counter()
    size = measure_size(train)
    sample = _subsample(train, PROBE_SAMPLE, seed)
    candidates = candidate_layers(backbone)
    parts = sorted({p for c in candidates for p in c.split("+")})
    extracted = FeatureExtractor(backbone, parts, cache_dir).transform(sample.paths)
    offsets = np.cumsum([0, *extracted.widths])
    by_layer = {p: extracted.codes[:, offsets[i]:offsets[i + 1]] for i, p in enumerate(parts)}
    codes = {c: np.concatenate([by_layer[p] for p in c.split("+")], 1) for c in candidates}
    labels = sample.labels[extracted.kept]
    similarity = measure_similarity(backbone, by_layer[PENULTIMATE][:SIMILARITY_SAMPLE])
    scores = layer_scores(codes, labels, seed)
    best_layer = max(scores, key=scores.get)
    large, similar = size["large"], similarity["similar"]
    image_size = suggested_image_size(backbone, size["median_short_side"])
    options: dict[str, Any] = {}
    if large:
        strategy, layer = "fine-tune", PENULTIMATE
        options = fine_tune_options(size["images"], similar, image_size)
        reason = (f"{size['median_per_class']:.0f} images per class is enough to adapt every layer, "
                  + ("and the images resemble ImageNet, so the pretrained weights move little (lr x0.1)."
                     if similar else "and the images differ from ImageNet, so the pretrained layers need to move "
                                     "further (backbone lr x0.3); with far more data, try --strategy scratch."))
    else:
        strategy = "feature-extractor"
        if similar and scores[PENULTIMATE] >= scores[best_layer] - 0.005:
            layer = PENULTIMATE
        elif similar:
            layer = best_layer
        else:
            layer = max((c for c in scores if c != PENULTIMATE), key=scores.get)
            if scores[PENULTIMATE] > scores[layer]:
                layer = PENULTIMATE
        options = {"classifier": "logistic", "layer": layer}
        reason = (f"with {size['median_per_class']:.0f} images per class, a linear classifier on frozen codes "
                  "avoids overfitting; " + ("the images resemble ImageNet, so the last layer's codes fit best"
                                            if similar else "the images differ from ImageNet, so more generic "
                                                            "earlier-layer codes")
                  + f" ({layer}: {scores[layer]:.3f} cross-validated accuracy on training images).")
    advice = Advice(size, similarity, scores, strategy, layer, options, reason)
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
        f"size: {size['images']} images, {size['classes']} classes, per class min {size['min_per_class']}, median "
        f"{size['median_per_class']:.0f} -> {'large' if size['large'] else 'small'} ({size['rule']})",
    ]
    if "ratio" in sim:
        lines.append(f"similarity: ImageNet confidence {sim['confidence']:.3f} vs {sim['reference_confidence']:.3f} "
                     f"on ImageNet images, ratio {sim['ratio']:.2f} -> {'similar' if sim['similar'] else 'different'}"
                     f" (similar from {sim['threshold']})")
    else:
        lines.append(f"similarity: {sim['method']}")
    lines.append("layers (3-fold CV accuracy on training images): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in advice.layers.items()))
    lines += ["", f"{'':<8}{'similar to ImageNet':<34}{'different from ImageNet':<34}",
              f"{'small':<8}{mark[('small', 'similar')]:<34}{mark[('small', 'different')]:<34}",
              f"{'large':<8}{mark[('large', 'similar')]:<34}{mark[('large', 'different')]:<34}", ""]
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in advice.options.items() if v is not None)
    lines.append(f"recommendation: --strategy {advice.strategy} {flags}".rstrip())
    lines.append(f"why: {advice.reason}")
    return "\n".join(lines)


def fine_tune_seconds_per_epoch(backbone_name: str, weights: str | None, train: ImageSet, image_size: int | None,
                                unfreeze: str) -> float:
    """Seconds one fine-tuning epoch over ``train`` would take (timed steps on this machine; see
    :func:`headstart.finetune.seconds_per_epoch`)."""
    from .backbones import create_backbone
    from .finetune import FineTuneConfig, seconds_per_epoch

    backbone = create_backbone(backbone_name, weights, image_size=image_size)
    return seconds_per_epoch(backbone, train, FineTuneConfig(unfreeze=unfreeze))


def plan_auto(advice: Advice, backbone_name: str, weights: str | None, train: ImageSet, budget: float,
              started: float, given: dict[str, Any] | None = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(strategy, options, evidence) for ``--strategy auto``: ``budget`` seconds from ``started`` (perf_counter);
    ``given``: fine-tuning options the user set, which replace the advised ones.

    Linear probes were already compared by cross-validation on training images (the advisor's layer scores).
    Fine-tuning, when advised, is timed on a trial and planned for as many of the advised epochs as fit the budget,
    at least MIN_FINE_TUNE_EPOCHS, else the best-scoring probe is used; after training, :func:`keep_fine_tuned`
    checks it against that probe on held-out training images.
    """
    evidence: dict[str, Any] = {"advice": advice.to_dict(), "budget_s": budget}
    probe_layer = max(advice.layers, key=advice.layers.get)
    if advice.strategy != "fine-tune":
        evidence["decision"] = f"linear classifier on {advice.layer} (advisor; CV-scored layers)"
        return "feature-extractor", {"layer": advice.layer}, evidence
    evidence["probe"] = {"layer": probe_layer, "cv_accuracy": advice.layers[probe_layer]}
    plan = {**advice.options, **{k: v for k, v in (given or {}).items() if k in advice.options}}
    epoch_s = fine_tune_seconds_per_epoch(backbone_name, weights, train, plan.get("image_size"), plan["unfreeze"])
    remaining = budget - (time.perf_counter() - started)
    wanted = int(plan["epochs"])
    epochs = min(wanted, int(remaining * 0.85 // max(epoch_s, 1e-6)))
    evidence.update(fine_tune_epoch_s=round(epoch_s, 2), epochs_advised=wanted, epochs_affordable=epochs)
    least = min(MIN_FINE_TUNE_EPOCHS, wanted)  # fewer only when the user asked for fewer
    if epochs < least:
        evidence["decision"] = (f"fine-tuning advised but {least} epochs of about {epoch_s:.0f} s do "
                                f"not fit the {remaining:.0f} s left: linear classifier on {probe_layer} instead")
        return "feature-extractor", {"layer": probe_layer}, evidence
    evidence["decision"] = (f"fine-tune for {epochs} of {wanted} advised epochs (about {epoch_s:.0f} s each) within "
                            f"the budget; kept if it beats the {probe_layer} probe on held-out training images")
    return "fine-tune", {**plan, "epochs": epochs, "max_seconds": round(remaining * 0.95, 1)}, evidence


def keep_fine_tuned(evidence: dict[str, Any], monitor_accuracy: float) -> bool:
    """Whether auto keeps the fine-tuned network: its accuracy on the training images it held out against the best
    probe's cross-validated accuracy on training images (both unseen in their fitting). Records the check."""
    probe = evidence["probe"]
    keep = monitor_accuracy >= probe["cv_accuracy"]
    evidence["check"] = {"fine_tune_held_out_accuracy": round(monitor_accuracy, 4),
                         "probe_cv_accuracy": probe["cv_accuracy"], "kept": keep}
    if not keep:
        evidence["decision"] += (f"; it scored {monitor_accuracy:.3f} against {probe['cv_accuracy']:.3f}, so a "
                                 f"linear classifier on {probe['layer']} was trained instead")
    return keep
