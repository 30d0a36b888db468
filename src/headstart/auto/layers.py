"""Scoring candidate layers by cross-validated log loss (folds keep duplicates together) and choosing one by the
tie rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..codes.backbones import PENULTIMATE, Backbone, candidate_layers
from ..data.imagestats import STATS
from ..heads.basis import Standardised, column_gram
from ..heads.linear import (
    FIRST_ITERATIONS,
    PATH_CLASSES,
    PATIENCE,
    WALK_FROM,
    WALK_VARIANCE,
    Search,
    search_C,
    search_rows,
)
from .measure import Measured, say

#: Candidates whose out-of-fold log loss is within this many paired standard errors of the lowest are tied.
TIE_SE = 1.0
#: The chosen layer's out-of-fold logits are cached with its scores up to this many numbers (a joint probe's
#: evidence averages them; 3000 images of 100 classes hold 300,000).
OOF_KEPT = 2_000_000


def fold_groups(measured: Measured, seed: int = 0) -> np.ndarray | None:
    """Duplicate sets among the measured images (exact and near duplicates share an id), for folds that keep them
    together; None without the figures."""
    from ..auditing.duplicates import fold_groups as groups

    if STATS not in measured.parts or PENULTIMATE not in measured.parts:
        return None
    return groups(measured.parts[PENULTIMATE], measured.parts[STATS], measured.images.labels, seed)


def score_layers(measured: Measured, candidates: list[str], seed: int = 0, progress: bool = False,
                 groups: np.ndarray | None = None) -> dict[str, Search]:
    """The final fit's C search (same folds, grid and criterion) on each candidate's codes.

    Layers are compared with softmax regression, whose out-of-fold log loss is smooth and calibrated; a linear SVM
    searches its own C afterwards on the chosen layer. Folds keep duplicate sets together (:func:`fold_groups`).
    The penultimate layer is scored first; with many classes the other layers' C walks start near its C (the best
    C of one network's layers differ little: on a 100-class set 0.01-0.1 everywhere), which took the scoring of
    the 8 candidates from 31.1 s to 21.3 s there at the same C, layer and validation accuracy (bench/search.py).
    """
    from tqdm.auto import tqdm

    n_classes, targets = len(measured.images.class_names), measured.images.targets
    searches = {}
    groups = fold_groups(measured, seed) if groups is None else groups
    # the penultimate layer (a joint backbone member's: network:penultimate) is scored first
    first = next((c for c in candidates if c.rpartition(":")[2] == PENULTIMATE), PENULTIMATE)
    ordered = sorted(candidates, key=lambda layer: layer != first)
    shared = _SharedGram(measured, candidates) if targets is None else None
    for layer in tqdm(ordered, desc="scoring layers", unit="layer", disable=not progress, leave=False):
        if targets is not None:  # multi-label: summed binary log loss, each label at its own C
            from ..heads.multilabel import search_labels

            search = search_labels(measured.codes(layer), targets, seed, groups=groups)
        else:
            penultimate = searches.get(first)
            codes = measured.codes(layer)
            search = search_C(codes, measured.images.labels, n_classes, "logistic", seed,
                              shared.standardised(layer, codes), groups=groups,
                              near=None if penultimate is None else penultimate.C,
                              start=_penultimate_models(penultimate, layer, first, measured))
        if search is not None:
            searches[layer] = search
    return {layer: searches[layer] for layer in candidates if layer in searches}


def _penultimate_models(penultimate: Search | None, layer: str, first: str, measured: Measured) -> tuple | None:
    """The penultimate layer's fold models half a decade below its C (its search's ``below``) as models of
    ``layer``'s codes, a join holding it (zero on its other parts): where the join's walk starts. From there its
    first C reaches in WARM_ITERATIONS the out-of-fold loss that FIRST_ITERATIONS reach from zero (the 100-class set
    of bench/search.py, Lite0's three joins: within 0.008 of it), about 0.85 s of the 8 candidates' scoring."""
    import torch

    parts = layer.split("+")
    if penultimate is None or penultimate.below is None or first not in parts or len(parts) == 1:
        return None
    c, w, b = penultimate.below
    widths = [measured.parts[part].shape[1] for part in parts]
    offset = sum(widths[:parts.index(first)])
    joined = torch.zeros(w.shape[0], sum(widths), w.shape[2])
    joined[:, offset:offset + w.shape[1]] = w
    return c, joined, b


class _SharedGram:
    """The candidates' standardised column Grams as blocks of one: the widest join's, computed once (every
    candidate's columns are some of its parts'), where the C search runs on every row and at least two candidates
    have as many rows as columns (with fewer, :class:`Standardised` solves the rows' kernel instead). On the 100-class
    set of bench/search.py it saves about 0.4 s of the 8 layers' scoring."""

    def __init__(self, measured: Measured, candidates: list[str]):
        parts = sorted({part for layer in candidates for part in layer.split("+")})
        widths = {part: measured.parts[part].shape[1] for part in parts}
        starts = np.cumsum([0, *widths.values()])
        self.columns = {part: np.arange(start, start + widths[part]) for part, start in zip(parts, starts)}
        by_columns = [layer for layer in candidates if len(measured.images) >= sum(map(widths.get, layer.split("+")))]
        self.gram = None
        if len(by_columns) > 1 and search_rows(measured.images.labels, 0) is None:
            self.gram = column_gram(measured.codes("+".join(parts)))

    def standardised(self, layer: str, codes: np.ndarray) -> Standardised | None:
        """``layer``'s ``codes`` standardised, their Gram taken from the shared one (None: none shared)."""
        if self.gram is None:
            return None
        columns = np.concatenate([self.columns[part] for part in layer.split("+")])
        mean, scale, gram = self.gram
        return Standardised(codes, (mean[columns], scale[columns], gram[columns][:, columns]))


def _scores_file(cache_dir: Path | None, backbone: Backbone, candidates: list[str], measured: Measured,
                 seed: int, precision: dict[str, str], groups: np.ndarray | None = None) -> Path | None:
    """Where the layer scores of exactly these codes are cached (they depend on nothing else)."""
    import hashlib

    from ..disk import file_identities, key_of

    if cache_dir is None:
        return None
    files = hashlib.sha256("\n".join(map(str, file_identities(measured.images.paths))).encode()).hexdigest()
    key = key_of({"weights": backbone.digest, "preprocess": backbone.preprocess.to_dict(), "candidates": candidates,
                  "files": files, "labels": measured.images.labels.tolist(), "seed": seed, "v": 3, **precision,
                  **({"targets": measured.images.targets.tolist(), "thresholds": "half the best F1"}
                     if measured.images.multilabel else {}),
                  **({"groups": key_of({"groups": groups.tolist()})} if groups is not None else {}),
                  **({"walk": f"from grid[{WALK_FROM}], then near the penultimate's C, patience {PATIENCE}, "
                              f"{WALK_VARIANCE} of the variance, first C {FIRST_ITERATIONS} steps from zero, "
                              "joins from the penultimate's models"}
                     if len(measured.images.class_names) >= PATH_CLASSES and not measured.images.multilabel else {})})
    return cache_dir / "scores" / f"{backbone.name}-{key}.json"


def _search_class(multilabel: bool) -> type:
    from ..heads.multilabel import LabelSearch

    return LabelSearch if multilabel else Search


def scored_layers(measured: Measured, candidates: list[str], backbone: Backbone, cache_dir: Path | None,
                  seed: int = 0, progress: bool = False, precision: dict[str, str] | None = None,
                  groups: np.ndarray | None = None) -> tuple[dict[str, Search], str, dict[str, Any]]:
    """(searches, chosen layer, evidence): from the cache when these codes were scored before, else computed.
    ``groups``: the duplicate sets the folds keep together (default: found in these codes)."""
    import json

    from ..disk import write_cache

    path = _scores_file(cache_dir, backbone, candidates, measured, seed, precision or {}, groups)
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text())
            kind = _search_class(measured.images.multilabel)
            chosen = saved["choice"]["chosen"]  # its per-image losses are kept: networks are compared on them
            searches = {layer: kind(**{**fields, "rows_index": None, "sample_losses": np.asarray(
                saved.get("chosen_sample_losses", []) if layer == chosen else [], np.float64)})
                        for layer, fields in saved["searches"].items()}
            if saved.get("chosen_oof_logits") is not None:  # a joint probe's evidence averages them
                searches[chosen].oof_logits = np.asarray(saved["chosen_oof_logits"], np.float32)
            say("layer scores of these codes found in the cache", progress)
            return searches, saved["choice"]["chosen"], saved["choice"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # damaged: scored again and rewritten
    say(f"scoring {len(candidates)} candidate layer{'s' if len(candidates) > 1 else ''} (5-fold cross-validated C "
        f"search on {len(measured.images)} images)", progress)
    searches = score_layers(measured, candidates, seed, progress, groups)
    if not searches:
        return searches, PENULTIMATE, {"rule": "no cross-validation possible: a class has a single image"}
    layer, choice = choose_layer(searches)
    for name, search in searches.items():  # the chosen one's basis serves the final fit; the others' are let go
        if name != layer:
            search.basis = search.start = None
        search.below = None
    if path is not None:
        stored = {name: {k: v for k, v in vars(search).items() if k not in ("sample_losses", "oof_logits", "oof",
                                                                              "rows_index", "basis", "start", "below")}
                  for name, search in searches.items()}
        oof = getattr(searches[layer], "oof_logits", None)
        write_cache(path, json.dumps({"searches": stored, "choice": choice,
                                      "chosen_sample_losses": searches[layer].sample_losses.tolist(),
                                      "chosen_oof_logits": None if oof is None or oof.size > OOF_KEPT else
                                      np.round(oof, 5).tolist()}).encode())
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


def scored_members(measured: Measured, backbone: Backbone, cache_dir: Path | None, seed: int = 0,
                   progress: bool = False, precision: dict[str, str] | None = None,
                   groups: np.ndarray | None = None) -> tuple[dict[str, Search], str, dict[str, Any]]:
    """A joint backbone's (searches, chosen layers, evidence): each member's own candidates scored and chosen as
    :func:`scored_layers` does, then the members' probes and their joint compared on the same out-of-fold rows
    (:func:`headstart.heads.joint.joint_evidence`). The chosen layer joins every member's choice (the joint probe)
    or is one member's alone."""
    from ..heads.joint import joint_evidence

    groups = fold_groups(measured, seed) if groups is None else groups
    searches: dict[str, Search] = {}
    chosen: dict[str, str] = {}
    members: dict[str, Any] = {}
    candidates = candidate_layers(backbone)
    for member in backbone.members:
        own = [c for c in candidates if c.startswith(f"{member.name}:")]
        found, layer, choice = scored_layers(measured, own, backbone, cache_dir, seed, progress, precision, groups)
        searches.update(found)
        chosen[member.name], members[member.name] = layer, choice
    if len(searches) < len(candidates):  # no cross-validation possible: every member's penultimate, joined
        layer = "+".join(f"{m.name}:{PENULTIMATE}" for m in backbone.members)
        return searches, layer, {"rule": "no cross-validation possible: a class has a single image"}
    joint = joint_evidence({name: searches[layer] for name, layer in chosen.items()}, measured.images.labels)
    layer = "+".join(chosen.values()) if joint["chosen"] == "joint" else chosen[joint["chosen"]]
    return searches, layer, {"rule": "each network's layer by its own scores, then " + joint["rule"],
                             "members": members, "joint": joint, "chosen": layer}
