"""The advisor: how large the dataset is, how similar to ImageNet, which layer transfers best, and what to do.

One pass: every candidate layer's codes come out of the same forward pass (and land in the cache, where the final fit
finds them). Size: median images per class against LARGE_PER_CLASS. Similarity: how confidently the pretrained ImageNet
classifier recognises the images (mean top-1 softmax probability), relative to the same figure on ImageNet's own
images (REFERENCE_CONFIDENCE, measured on ../shared/data/imagenet_samples). Transferability: per candidate layer, the
cross-validated C search that the final fit uses (:func:`headstart.linear.search_C`), on all training images unless a
full pass would not fit the budget.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .backbones import PENULTIMATE, Backbone
from .data import ImageSet, stratified_split
from .features import FeatureExtractor
from .images import typical_short_side
from .imagestats import STATS
from .linear import Search, search_C
from .options import FineTuneConfig
from .results import AutoEvidence

if TYPE_CHECKING:
    from .finetune import TrainingCost

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
#: Share of the budget left after deciding that fine-tuning may be planned to take: the rest is for what follows
#: (the familiarity bank's codes, saving) and for the timing's error.
PLAN_SHARE = 0.9
#: When training every block does not fit the budget, auto tries this many top blocks from cached activations
#: (``--loader activations``) before falling back to the probe.
FALLBACK_UNFREEZE = "3"
#: When fine-tuning is likely (large data), the layers are first measured on this many training images; the rest
#: are measured too only if their pass is predicted to take at most FULL_PASS_SHARE of the budget.
PROBE_SAMPLE = 2000
FULL_PASS_SHARE = 0.25
#: When the sample's codes all came from the cache, this many of the other images are measured to time the rest.
RATE_SLICE = 256
#: Candidates whose out-of-fold log loss is within this many paired standard errors of the lowest are tied.
TIE_SE = 1.0


@dataclass
class Measured:
    """Codes of every candidate layer part for the measured training images, from one pass."""

    parts: dict[str, np.ndarray]
    images: ImageSet  # the measured images that could be used, labels aligned with the codes
    skipped: list[tuple[str, str]]
    computed: int  # images run through the network (the rest came from the cache)
    complete: bool  # every training image was measured
    seconds: float

    def codes(self, layer: str) -> np.ndarray:
        return np.concatenate([self.parts[p] for p in layer.split("+")], 1)


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
    measured: Measured | None = field(default=None, repr=False)  # kept for the fit; not serialised
    searches: dict[str, Search] = field(default_factory=dict, repr=False)

    @property
    def cell(self) -> tuple[str, str]:
        return ("large" if self.size["large"] else "small",
                "similar" if self.similarity.get("similar") else "different")

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "similarity": self.similarity, "layer_scores": self.layers,
                "layer_choice": self.choice, "cell": list(self.cell), "strategy": self.strategy, "layer": self.layer,
                "options": self.options, "reason": self.reason, "seconds": round(self.seconds, 2),
                "notes": self.notes}


def candidate_layers(backbone: Backbone) -> list[str]:
    """The penultimate layer, the four blocks before it, and three joins of the last blocks with the penultimate
    (for Lite0: blocks.5+penultimate, blocks.4+blocks.5+penultimate, blocks.3+...+blocks.6+penultimate)."""
    blocks = backbone.layers()[:-1]
    last = blocks[-4:]
    candidates = [PENULTIMATE, *reversed(last)]
    for n in (1, 2):
        if len(blocks) > n:
            candidates.append("+".join([*blocks[-1 - n:-1], PENULTIMATE]))
    if len(last) == 4:
        candidates.append("+".join([*last, PENULTIMATE]))
    return list(dict.fromkeys(candidates))


def measure_size(images: ImageSet, sample: int = 64) -> dict[str, Any]:
    """Counts per class, the size rule's verdict, and the images' typical shorter side (from file headers)."""
    counts = np.bincount(images.labels, minlength=len(images.class_names))
    median = float(np.median(counts))
    return {"images": int(len(images)), "classes": len(images.class_names), "min_per_class": int(counts.min()),
            "median_per_class": median, "large": median >= LARGE_PER_CLASS,
            "rule": f"large when the median class has at least {LARGE_PER_CLASS} training images",
            "median_short_side": typical_short_side(images.paths, sample)}


def _subsample(images: ImageSet, n: int, seed: int = 0) -> ImageSet:
    if len(images) <= n:
        return images
    _, keep = stratified_split(images.labels, n / len(images), seed)
    return images.subset(keep)


def say(message: str, progress: bool) -> None:
    """A progress line on stderr (a phase of deciding), so that a slow machine never looks hung."""
    if progress:
        print(f"auto: {message}", file=sys.stderr, flush=True)


def measure_codes(extractor: FeatureExtractor, train: ImageSet, large: bool, budget: float | None, seed: int = 0,
                  progress: bool = False) -> Measured:
    """One pass over the training images for every layer of ``extractor``: all of them, or (large data) a stratified
    PROBE_SAMPLE when the full pass is predicted to take more than FULL_PASS_SHARE of ``budget``."""
    started = time.perf_counter()
    first = _subsample(train, PROBE_SAMPLE, seed) if large else train
    say(f"measuring {len(first)} training images (one pass: {len(extractor.layers) - 1} layers, the ImageNet "
        "classifier and the images' figures)", progress)
    result = extractor.transform(first.paths)
    measured, skipped, computed = [(first, result)], list(result.skipped), result.extracted
    if len(first) < len(train):
        seconds, timed = time.perf_counter() - started, result.extracted
        chosen = set(map(str, first.paths))
        rest = train.subset(np.array([i for i, p in enumerate(train.paths) if str(p) not in chosen], np.int64))
        if not timed and budget is not None:  # the sample came from the cache: time a slice of the rest instead
            slice_started = time.perf_counter()
            piece = rest.subset(np.arange(min(RATE_SLICE, len(rest))))
            more = extractor.transform(piece.paths)
            measured.append((piece, more))
            skipped += more.skipped
            computed += more.extracted
            rest = rest.subset(np.arange(len(piece), len(rest)))
            seconds, timed = time.perf_counter() - slice_started, more.extracted
        predicted = seconds * len(rest) / timed if timed else 0.0  # nothing computed: the rest is cached too
        if len(rest) and (budget is None or predicted <= FULL_PASS_SHARE * budget):
            say(f"measuring the other {len(rest)} training images", progress)
            more = extractor.transform(rest.paths)
            measured.append((rest, more))
            skipped += more.skipped
            computed += more.extracted
    offsets = np.cumsum([0, *measured[0][1].widths])
    parts = {layer: np.concatenate([r.codes[:, offsets[i]:offsets[i + 1]] for _, r in measured if len(r.kept)])
             for i, layer in enumerate(extractor.layers)}
    paths = [s.paths[i] for s, r in measured for i in r.kept]
    labels = np.concatenate([s.labels[r.kept] for s, r in measured])
    images = ImageSet(paths, labels, train.class_names, train.root)
    return Measured(parts, images, skipped, computed, sum(len(s) for s, _ in measured) == len(train),
                    time.perf_counter() - started)


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
            "images": len(codes), "confidence": round(confidence, 4), "reference_confidence": REFERENCE_CONFIDENCE,
            "ratio": round(ratio, 4), "threshold": SIMILAR_RATIO, "similar": ratio >= SIMILAR_RATIO}


def fold_groups(measured: Measured, seed: int = 0) -> np.ndarray | None:
    """Duplicate sets among the measured images (exact and near duplicates share an id), for folds that keep them
    together; None without the figures."""
    from .auditing.duplicates import fold_groups as groups

    if STATS not in measured.parts or PENULTIMATE not in measured.parts:
        return None
    return groups(measured.parts[PENULTIMATE], measured.parts[STATS], measured.images.labels, seed)


def score_layers(measured: Measured, candidates: list[str], seed: int = 0, progress: bool = False
                 ) -> dict[str, Search]:
    """The final fit's C search (same folds, grid and criterion) on each candidate's codes.

    Layers are compared with softmax regression, whose out-of-fold log loss is smooth and calibrated; a linear SVM
    searches its own C afterwards on the chosen layer. Folds keep duplicate sets together (:func:`fold_groups`).
    """
    from tqdm.auto import tqdm

    n_classes = len(measured.images.class_names)
    searches = {}
    groups = fold_groups(measured, seed)
    for layer in tqdm(candidates, desc="scoring layers", unit="layer", disable=not progress, leave=False):
        search = search_C(measured.codes(layer), measured.images.labels, n_classes, "logistic", seed, groups=groups)
        if search is not None:
            searches[layer] = search
    return searches


def _scores_file(cache_dir: Path | None, backbone: Backbone, candidates: list[str], measured: Measured,
                 seed: int, precision: dict[str, str]) -> Path | None:
    """Where the layer scores of exactly these codes are cached (they depend on nothing else)."""
    import hashlib

    from .cache import file_identity, key_of

    if cache_dir is None:
        return None
    files = hashlib.sha256("\n".join(str(file_identity(p)) for p in measured.images.paths).encode()).hexdigest()
    key = key_of({"weights": backbone.digest, "preprocess": backbone.preprocess.to_dict(), "candidates": candidates,
                  "files": files, "labels": measured.images.labels.tolist(), "seed": seed, "v": 2, **precision})
    return cache_dir / "scores" / f"{backbone.name}-{key}.json"


def scored_layers(measured: Measured, candidates: list[str], backbone: Backbone, cache_dir: Path | None,
                  seed: int = 0, progress: bool = False, precision: dict[str, str] | None = None
                  ) -> tuple[dict[str, Search], str, dict[str, Any]]:
    """(searches, chosen layer, evidence): from the cache when these codes were scored before, else computed."""
    import json

    from .cache import write_cache

    path = _scores_file(cache_dir, backbone, candidates, measured, seed, precision or {})
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text())
            searches = {layer: Search(**{**fields, "sample_losses": np.zeros(0), "rows_index": None})
                        for layer, fields in saved["searches"].items()}
            say("layer scores of these codes found in the cache", progress)
            return searches, saved["choice"]["chosen"], saved["choice"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # damaged: scored again and rewritten
    say(f"scoring {len(candidates)} candidate layers (5-fold cross-validated C search on "
        f"{len(measured.images)} images)", progress)
    searches = score_layers(measured, candidates, seed, progress)
    if not searches:
        return searches, PENULTIMATE, {"rule": "no cross-validation possible: a class has a single image"}
    layer, choice = choose_layer(searches)
    if path is not None:
        stored = {name: {k: v for k, v in vars(search).items() if k not in ("sample_losses", "oof_logits",
                                                                              "rows_index")}
                  for name, search in searches.items()}
        write_cache(path, json.dumps({"searches": stored, "choice": choice}).encode())
    return searches, layer, choice


def choose_layer(searches: dict[str, Search]) -> tuple[str, dict[str, Any]]:
    """The candidate with the lowest out-of-fold log loss; among those within TIE_SE paired standard errors of it,
    the one joining the most layers (a join holds what its parts hold, and the C search regularises it). Measured
    with bench/auto.py: the lowest-loss candidate was the best or within 0.1 point of the best on validation images
    for cats_vs_dogs, dtd10 and pneumoniamnist, and the tie-break never changed it there; it is a prior for ties."""
    lowest = min(searches, key=lambda layer: searches[layer].cv_log_loss)
    evidence: dict[str, Any] = {"rule": "lowest 5-fold out-of-fold log loss; candidates within one paired standard "
                                        "error of it are tied, and the tie goes to the join of the most layers",
                                "lowest_log_loss": lowest, "candidates": {}}
    tied = []
    for layer, search in searches.items():
        diff = search.sample_losses - searches[lowest].sample_losses
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        is_tied = layer == lowest or diff.mean() <= TIE_SE * se
        evidence["candidates"][layer] = {"cv_log_loss": round(search.cv_log_loss, 5),
                                         "cv_accuracy": round(search.cv_accuracy, 5), "C": search.C,
                                         "log_loss_above_lowest": round(float(diff.mean()), 5),
                                         "standard_error": round(se, 5), "tied": bool(is_tied)}
        if is_tied:
            tied.append(layer)
    chosen = max(tied, key=lambda layer: (layer.count("+"), -searches[layer].cv_log_loss))
    evidence["chosen"] = chosen
    return chosen, evidence


def suggested_image_size(backbone: Backbone, short_side: int | None) -> int | None:
    """A smaller input for small images (e.g. 28 px X-rays): three times their side, at least 96, multiple of 32.

    On pneumoniamnist (28 px) fine-tuning everything at 96 px reached 0.952-0.970 validation accuracy (7-10 epochs),
    at 64 px 0.9485 (8 epochs).
    """
    full = backbone.model.pretrained_cfg.get("input_size", (3, *backbone.preprocess.input_size))[1]  # not a user's
    if not short_side or 3 * short_side >= full:
        return None
    return max(96, int(np.ceil(3 * short_side / 32) * 32))


def fine_tune_options(n_train: int, similar: bool, image_size: int | None, batch_size: int = 32) -> dict[str, Any]:
    """Hyper-parameters for fine-tuning the whole network: about FINE_TUNE_STEPS updates, 3 to 10 epochs."""
    steps_per_epoch = max(1, int(n_train * 0.9) // batch_size)  # 10 % of train is held out for early stopping
    epochs = int(np.clip(np.ceil(FINE_TUNE_STEPS / steps_per_epoch), MIN_FINE_TUNE_EPOCHS, 10))
    return {"unfreeze": "all", "epochs": epochs, "lr": 1e-3, "backbone_lr_mult": 0.1 if similar else 0.3,
            "image_size": image_size}


def advise(backbone: Backbone | str, train: ImageSet | str | Path, cache_dir: str | Path | None | bool = None,
           seed: int = 0, classifier: str = "logistic", budget: float | None = None, progress: bool = False,
           engine: str = "auto", batch_size: int | None = None, weights: str | None = None,
           precision: str = "fp32") -> Advice:
    """Measure ``train`` (a folder of class folders or an ImageSet) against ``backbone`` (a model name or a built
    Backbone) in one pass, and recommend a strategy, a layer and hyper-parameters (``precision``: of the codes,
    "fp32" or "int8" calibrated on ``train``)."""
    from .backbones import create_backbone
    from .data import read_class_folders

    started = time.perf_counter()
    backbone = create_backbone(backbone, weights) if isinstance(backbone, str) else backbone
    train = train if isinstance(train, ImageSet) else read_class_folders(train)
    size = measure_size(train)
    candidates = candidate_layers(backbone)
    parts = sorted({p for c in candidates for p in c.split("+")})
    extractor = FeatureExtractor(backbone, [*parts, STATS], cache_dir, engine, batch_size, progress=progress,
                                 precision=precision, calibration=train.paths)
    measured = measure_codes(extractor, train, size["large"], budget, seed, progress)
    notes = [] if measured.complete else [
        f"layers measured on a stratified {len(measured.images)} of {len(train)} training images: a full pass was "
        f"predicted to take more than {FULL_PASS_SHARE:.0%} of the {budget:.0f} s budget"]
    similarity = measure_similarity(backbone, measured.parts[PENULTIMATE])
    searches, layer, choice = scored_layers(measured, candidates, backbone, extractor.cache_dir, seed, progress,
                                            extractor.precision_key())
    if not searches:
        notes.append("a class has a single usable training image: layers could not be compared, penultimate used")
    scores = {c: round(s.cv_accuracy, 4) for c, s in searches.items()}
    large, similar = size["large"], similarity["similar"]
    image_size = suggested_image_size(backbone, size["median_short_side"])
    if large:
        strategy = "fine-tune"
        options = fine_tune_options(size["images"], similar, image_size)
        reason = (f"{size['median_per_class']:.0f} images per class is enough to adapt every layer, "
                  + ("and the images resemble ImageNet, so the pretrained weights move little (lr x0.1)."
                     if similar else "and the images differ from ImageNet, so the pretrained layers need to move "
                                     "further (backbone lr x0.3); with far more data, try --strategy scratch."))
    else:
        strategy = "feature-extractor"
        options = {"classifier": classifier, "layer": layer}
        score = f" ({scores[layer]:.3f} cross-validated accuracy on training images)" if scores else ""
        reason = (f"with {size['median_per_class']:.0f} images per class, a linear classifier on frozen codes "
                  "avoids overfitting; " + ("the images resemble ImageNet" if similar else
                                            "the images differ from ImageNet")
                  + f", and {layer} transferred best{score}.")
    advice = Advice(size, similarity, scores, strategy, layer, options, reason, notes=notes, choice=choice,
                    measured=measured, searches=searches)
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


def fine_tune_cost(backbone_name: str, weights: str | None, train: ImageSet, image_size: int | None,
                   config: FineTuneConfig) -> TrainingCost:
    """What fine-tuning ``train`` with ``config`` costs on this machine (timed steps; see
    :func:`headstart.finetune.training_cost`)."""
    from .backbones import create_backbone
    from .finetune import training_cost

    backbone = create_backbone(backbone_name, weights, image_size=image_size)
    return training_cost(backbone, train, config)


def _time_plan(plan: dict[str, Any], config: FineTuneConfig, backbone_name: str, weights: str | None,
               train: ImageSet, budget: float, started: float, wanted: int, least: int) -> dict[str, Any]:
    """Time fine-tuning ``plan`` (its unfreeze, loader and image size over ``config``) and how many of ``wanted``
    epochs fit PLAN_SHARE of what is left of ``budget``; sets ``plan["loader"]`` to the loader it will use."""
    run = replace(config, unfreeze=str(plan["unfreeze"]), loader=plan.get("loader", config.loader))
    if run.loader == "activations" and run.unfreeze_blocks() is None:  # every block trains: nothing to cache
        run = replace(run, loader="memory")
    plan["loader"] = run.loader
    cost = fine_tune_cost(backbone_name, weights, train, plan.get("image_size"), run)
    remaining = budget - (time.perf_counter() - started)
    fits = [n for n in range(1, wanted + 1) if cost.run_s(n, run.probe_epochs) <= PLAN_SHARE * remaining]
    epochs = max(fits, default=0)
    return {"unfreeze": run.unfreeze, "loader": run.loader, "epoch_s": round(cost.epoch_s(), 2),
            "epochs_affordable": epochs, "least_s": round(cost.run_s(least, run.probe_epochs), 1),
            "predicted_s": round(cost.run_s(epochs, run.probe_epochs), 1), "left_s": round(remaining, 1),
            "cost": {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(cost).items()}}


def plan_auto(advice: Advice, backbone_name: str, weights: str | None, train: ImageSet, budget: float,
              started: float, given: dict[str, Any] | None = None, config: FineTuneConfig | None = None
              ) -> tuple[str, dict[str, Any], AutoEvidence]:
    """(strategy, options, evidence) for ``--strategy auto``: ``budget`` seconds from ``started`` (perf_counter);
    ``given``: fine-tuning options the user set, which replace the advised ones; ``config``: the other fine-tuning
    options (loader, batch size, head-only epochs), as the run will use them.

    Linear probes were already compared by cross-validation on training images (the advisor's layer choice).
    Fine-tuning, when advised, is timed on a few steps of each kind (:class:`~headstart.finetune.TrainingCost`) and
    planned for as many of the advised epochs as fit PLAN_SHARE of the time left, at least MIN_FINE_TUNE_EPOCHS;
    when training every block does not fit (and the user did not set --unfreeze), the top FALLBACK_UNFREEZE blocks
    from cached activations are timed and planned the same way; else the chosen probe is used and the decision says
    which budget would have fitted. After training, :func:`keep_fine_tuned` checks the network against that probe on
    held-out training images.
    """
    evidence: AutoEvidence = {"advice": advice.to_dict(), "budget_s": budget}
    probe_layer = advice.layer
    if advice.strategy != "fine-tune":
        evidence["decision"] = f"linear classifier on {advice.layer} (advisor; cross-validated layers)"
        return "feature-extractor", {"layer": advice.layer}, evidence
    evidence["probe"] = {"layer": probe_layer, "cv_accuracy": advice.layers.get(probe_layer, 0.0)}
    plan = {**advice.options, **{k: v for k, v in (given or {}).items() if k in advice.options}}
    plans = [plan]
    if str(plan["unfreeze"]) == "all" and "unfreeze" not in (given or {}):
        plans.append({**plan, "unfreeze": FALLBACK_UNFREEZE, "loader": "activations"})
    wanted = int(plan["epochs"])
    least = min(MIN_FINE_TUNE_EPOCHS, wanted)  # fewer only when the user asked for fewer
    tried = []
    for candidate in plans:
        tried.append(_time_plan(candidate, config or FineTuneConfig(), backbone_name, weights, train, budget, started,
                                wanted, least))
        epochs, remaining = tried[-1]["epochs_affordable"], tried[-1]["left_s"]
        if epochs >= least:
            break
    chosen, first = tried[-1], tried[0]
    evidence.update(fine_tune_epoch_s=chosen["epoch_s"], epochs_advised=wanted, epochs_affordable=epochs,
                    fine_tune_cost=chosen["cost"], fine_tune_predicted_s=chosen["predicted_s"], plans_tried=tried)
    too_long = (f"{least} epochs ({first['cost']['n_fit']} images each) would take about {first['least_s']:.0f} s, "
                f"more than the {first['left_s']:.0f} s left allow")
    if epochs < least:
        needed = budget - first["left_s"] + first["least_s"] / PLAN_SHARE
        fallback = "" if len(tried) == 1 else (f", and the top {FALLBACK_UNFREEZE} blocks from cached activations "
                                               f"about {tried[1]['least_s']:.0f} s")
        evidence["decision"] = (f"fine-tuning advised but {too_long}{fallback}: linear classifier on {probe_layer} "
                                f"instead (--budget {50 * math.ceil(needed / 50):.0f} or more would fine-tune)")
        return "feature-extractor", {"layer": probe_layer}, evidence
    what = (f"fine-tune for {epochs} of {wanted} advised epochs" if len(tried) == 1 else
            f"training every block: {too_long}; fine-tune the top {FALLBACK_UNFREEZE} blocks from cached "
            f"activations for {epochs} epochs")
    evidence["decision"] = (f"{what} (about {chosen['epoch_s']:.0f} s each, {chosen['predicted_s']:.0f} s in all) "
                            f"within the budget; kept if it beats the {probe_layer} probe on held-out training images")
    return "fine-tune", {**candidate, "epochs": epochs, "max_seconds": round(remaining * 0.95, 1)}, evidence


def keep_fine_tuned(evidence: AutoEvidence, monitor_accuracy: float) -> bool:
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
