"""Choosing among networks (``--model a,b,c``, and by default Lite0 and Lite2): every network's codes of the same
stratified RANK_IMAGES training images at one layer, the widest candidate join (:func:`rank_layer`), scored by the
layer search's cross-validated log loss with the same folds; the lowest wins, and networks within TIE_SE paired
standard errors of it are tied. Names go from the cheapest to the most accurate on ImageNet (as AUTO_MODELS does).
On small data, where the probe is planned, the tie goes to the first named: the cheaper. On large data, where
fine-tuning is planned, it goes to the last named: fine-tuned, a network's ImageNet accuracy carries over more than
its frozen codes show (Kornblith et al., "Do Better ImageNet Models Transfer Better?", 2019); on pneumoniamnist,
where Lite0 and Lite2 tied on the sample, Lite2 fine-tuned to 0.9733 against Lite0's 0.9656. Only the chosen
network then measures every image and chooses its own layer.

One layer rather than each network's own best: advising every network with all its candidate layers on the sample,
then the chosen one again on every image, took dtd10 with Lite0 and Lite2 21.8 s against 11.9 s for Lite0 alone;
this takes 17.1 s (12.3 s), with the same choice and scores there, where the widest join was each network's best.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codes.backbones import Backbone, candidate_layers
from ..codes.create import create_backbone
from ..codes.extract import FeatureExtractor
from ..data.imagestats import STATS
from .layers import TIE_SE, fold_groups, scored_layers
from .measure import is_large, measure_codes, say, subsample

if TYPE_CHECKING:
    from ..data.folders import ImageSet
    from ..heads.linear import Search

#: Networks are compared on a stratified sample of this many training images when there are more.
RANK_IMAGES = 500


@dataclass
class Ranked:
    """A network's score on the ranking sample: its layer, that layer's C search (None: no cross-validation)."""

    layer: str
    search: Search | None
    seconds: float
    computed: int = 0  # images run through the network (the rest came from the cache)


def rank_layer(backbone: Backbone) -> str:
    """The layer networks are compared on: the widest candidate join (every candidate part side by side)."""
    return candidate_layers(backbone)[-1]


def builders(names: list[str], weights: Any = None, image_size: int | None = None, cache_dir: Any = None,
             built: Backbone | None = None) -> dict[str, Any]:
    """``rank_networks``' networks: name -> a function that builds it (``built``, if one of them, as it is)."""
    build = functools.partial(create_backbone, weights=weights, image_size=image_size, cache_dir=cache_dir)
    return {name: built if built is not None and name == built.name else functools.partial(build, name)
            for name in names}


def rank_networks(backbones: dict[str, Any], images: ImageSet, cache_dir: Any, seed: int = 0, engine: str = "auto",
                  batch_size: int | None = None, precision: str = "fp32", progress: bool = False
                  ) -> tuple[Backbone, dict[str, Any]]:
    """(the chosen network, the evidence) among ``backbones`` (name -> a Backbone, or a function that builds one,
    called only when its turn comes). Each measures the same sample with every candidate part (they land in the
    cache, where the chosen one's full pass finds them); every network's folds keep together the duplicate sets the
    first one found: like for like."""
    sample = subsample(images, RANK_IMAGES, seed)
    ranked, built, groups = {}, {}, None
    for name, backbone in backbones.items():
        started = time.perf_counter()
        say(f"ranking network {name} on " + (f"a stratified {len(sample)} of {len(images)}" if sample is not images
                                               else f"all {len(images)}") + " training images", progress)
        backbone = built[name] = backbone if isinstance(backbone, Backbone) else backbone()
        parts = sorted({p for c in candidate_layers(backbone) for p in c.split("+")})
        extractor = FeatureExtractor(backbone, [*parts, STATS], cache_dir, engine, batch_size, progress=progress,
                                     precision=precision, calibration=sample.paths)
        measured = measure_codes(extractor, sample, False, None, seed, progress)
        extractor.release()
        if groups is None:
            groups = fold_groups(measured, seed)
        layer = rank_layer(backbone)
        search = scored_layers(measured, [layer], backbone, extractor.cache_dir, seed, False,
                               extractor.precision_key(), groups)[0].get(layer)  # cached: warm runs rank at once
        ranked[name] = Ranked(layer, search, time.perf_counter() - started, measured.computed)
    chosen, evidence = choose_network(ranked, tie_to_last=is_large(images))
    say(network_line(evidence), progress)
    if sample is not images:
        evidence["sample"] = {"images": len(sample), "of": len(images), "why": (
            f"networks are ranked on a stratified {len(sample)} of the {len(images)} training images (each extra "
            "network costs a forward pass); the chosen one is then measured on them all")}
    return built[chosen], evidence


def choose_network(ranked: dict[str, Ranked], tie_to_last: bool = False) -> tuple[str, dict[str, Any]]:
    """(the chosen network, the evidence: every network's layer, scores, noise and seconds, and the rule). A tie
    goes to the first named, or with ``tie_to_last`` (large data: fine-tuning planned) to the last named."""
    names = list(ranked)
    scored = [name for name in names if ranked[name].search is not None]
    rule = ("every network's codes of the same training images at the widest candidate join; the lowest 5-fold "
            "out-of-fold log loss, networks within one paired standard error of it tied, and the tie goes to the "
            + ("last named (large data: fine-tuning is planned, and fine-tuned, the network named last, the most "
               "accurate on ImageNet, carries over more than its frozen codes show)" if tie_to_last else
               "first named (small data: the probe is planned, and the network named first is the cheapest)"))
    if not scored:
        return names[0], {"rule": "no cross-validation possible: the first named network", "chosen": names[0]}
    lowest = min(scored, key=lambda name: ranked[name].search.cv_log_loss)
    evidence: dict[str, Any] = {"rule": rule, "lowest_log_loss": lowest, "networks": {}}
    tied = []
    for name in scored:
        search, best = ranked[name].search, ranked[lowest].search
        paired = len(search.sample_losses) == len(best.sample_losses) > 1
        diff = search.sample_losses - best.sample_losses if paired else np.zeros(0)
        above = float(diff.mean()) if paired else search.cv_log_loss - best.cv_log_loss
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if paired else None
        is_tied = name == lowest or (se is not None and above <= TIE_SE * se)
        evidence["networks"][name] = {
            "layer": ranked[name].layer, "cv_log_loss": round(search.cv_log_loss, 5),
            "cv_accuracy": round(search.cv_accuracy, 5), "log_loss_above_lowest": round(above, 5),
            "standard_error": None if se is None else round(se, 5), "tied": bool(is_tied),
            "images": int(getattr(search, "rows", len(search.sample_losses))),
            "seconds": round(ranked[name].seconds, 1), "computed": ranked[name].computed}
        if is_tied:
            tied.append(name)
    evidence["chosen"] = next(name for name in (names[::-1] if tie_to_last else names) if name in tied)
    return evidence["chosen"], evidence


def network_line(evidence: dict[str, Any]) -> str:
    """One line for the progress output: the chosen network and what the others scored."""
    rows = evidence.get("networks", {})
    scores = ", ".join(f"{name} {row['cv_log_loss']:.4f}" for name, row in rows.items())
    return f"network {evidence['chosen']} chosen (5-fold log loss at the widest join: {scores})"
