"""The default path as a library call: measure (one pass) -> plan -> check by experiment -> fit.

``TransferClassifier(strategy="auto")`` and ``headstart fit`` both run :func:`fit_auto`. With several networks (by
default Lite0 and Lite2) every network measures the same images in one pass (a joint backbone,
:mod:`headstart.codes.joint`), each chooses its own layer, and the plan (:mod:`.plan`) weighs their averaged probe
against fine-tuning each of them within the budget. When the measurement covered all training images, the final
probe is fitted on those same codes with the Cs the search already chose, so nothing is extracted or searched twice.
A fine-tuning is checked against the probe on held-out training images.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ..codes.backbones import candidate_layers, create_backbone
from ..disk import cache_folder, write_atomic
from ..strategies.feature_extractor import fit_codes
from ..strategies.network import fit_network
from ..training.options import FineTuneConfig
from .advice import advise
from .measure import say
from .networks import builders, rank_networks
from .plan import keep_fine_tuned, plan_auto
from .precision import choose_precision

AUTO_JSON = "auto.json"  # the decision of an auto run that fine-tunes, kept in its workdir for --resume
#: Fine-tuning options that auto plans, unless the user set them (a value other than FineTuneConfig's default).
PLANNED = ("unfreeze", "epochs", "lr", "backbone_lr_mult")


def given_options(config: FineTuneConfig | None, image_size: int | None) -> dict[str, Any]:
    """The fine-tuning options the user set explicitly; auto keeps them instead of its own."""
    default, given = FineTuneConfig(), {}
    for key in PLANNED:
        if config is not None and str(getattr(config, key)) != str(getattr(default, key)):
            given[key] = getattr(config, key)
    if image_size is not None:
        given["image_size"] = image_size
    return given


def _build(clf: Any, name: str) -> Any:
    return create_backbone(name, clf.weights, image_size=clf.image_size, cache_dir=cache_folder(clf.cache_dir))


def _advise(clf: Any, images: Any, names: list[str]) -> tuple[Any, dict[str, Any] | None]:
    """(the advice, the ranking evidence when several networks were ranked). Several networks measure the images
    together (their probes are averaged unless one is clearly better alone); multi-label data instead ranks them and
    keeps one (:func:`.networks.rank_networks`), each label's threshold being its own network's."""
    evidence = None
    if len(names) > 1 and images.multilabel:
        backbones = builders(names, clf.weights, clf.image_size, cache_folder(clf.cache_dir), clf.backbone_)
        clf.backbone_, evidence = rank_networks(backbones, images, clf.cache_dir, clf.seed, clf.engine,
                                                clf.batch_size, clf.precision_, clf.progress)
    elif len(names) > 1:
        clf.backbone_ = _build(clf, ",".join(names))
    advice = advise(clf.backbone_, images, clf.cache_dir, clf.seed, clf.classifier, clf.budget, clf.progress,
                    clf.engine, clf.batch_size, precision=clf.precision_)
    joint = advice.choice.get("joint", {})
    if joint.get("chosen", "joint") != "joint":  # one network alone is clearly better: the model holds it alone
        say(f"{joint['chosen']} alone scores better than the networks averaged, beyond the noise", clf.progress)
    return advice, evidence


def _probe(clf: Any, images: Any, evidence: dict[str, Any], layer: str, started: float, advice: Any) -> None:
    """The linear probe on ``layer`` (one network's, or every network's averaged): on int8 codes when auto finds
    them worth it (a large collection, measured on a sample; :mod:`.precision`), recorded in
    ``evidence["precision"]``."""
    alone = (advice.choice.get("joint") or {}).get("chosen", "joint") if advice is not None else "joint"
    if alone != "joint" and getattr(clf.backbone_, "members", None):
        clf.backbone_ = clf.backbone_.alone(alone)  # its codes are the joint's: nothing is recomputed
        layer = "+".join(part.rpartition(":")[2] for part in layer.split("+"))
        advice = None
    parts = sorted({p for c in candidate_layers(clf.backbone_) for p in c.split("+")})
    if advice is not None and advice.measured is not None and not advice.measured.complete:
        evidence["precision"] = choose_precision(clf, advice, len(images), parts)
        if clf.precision_ == "int8":
            say(f"int8 codes: {evidence['precision']['why']}", clf.progress)
    fit_codes(clf, images, layer.split("+"), started, also=parts, advice=advice)


def fit_auto(clf: Any, images: Any, started: float, names: list[str] | None = None, after_images: int = 0,
             spent: float = 0.0) -> None:
    """Decide and fit ``clf`` (a TransferClassifier whose ``backbone_`` is built, the first of ``names``) on
    ``images``; sets ``auto_``. ``after_images``: images the caller scores afterwards (validation), whose time the
    plan keeps within the budget, of which ``spent`` seconds were used before ``started``."""
    names = names or [clf.backbone_.name]
    workdir = Path(clf.workdir) if clf.workdir else None
    saved = workdir / AUTO_JSON if workdir else None
    advice = None
    if clf.resume and saved is not None and saved.is_file():
        evidence = json.loads(saved.read_text())
        say(f"resuming the earlier decision: {evidence['decision']}", clf.progress)
    else:
        advice, networks = _advise(clf, images, names)
        strategy, options, evidence = plan_auto(advice, names if not networks else [clf.backbone_.name],
                                                clf.weights, images, clf.budget - spent, started,
                                                given_options(clf.finetune, clf.image_size), clf.finetune,
                                                after_images)
        if networks is not None:
            evidence["network"] = networks
        evidence.update(strategy=strategy, options=options, seconds=round(time.perf_counter() - started, 1))
        say(f"{evidence['decision']} ({evidence['seconds']:.0f} s to decide)", clf.progress)
    decided = time.perf_counter()
    probe_network = (evidence.get("advice", {}).get("network") or evidence.get("network", {}).get("chosen")
                     or clf.backbone_.name)  # a decision saved by 0.1.0 names its network in "network"
    if evidence["strategy"] == "fine-tune":
        if saved is not None:
            write_atomic(saved, json.dumps(evidence, indent=2).encode())
        options = evidence["options"]
        clf.backbone_ = _build(clf, options.get("network", clf.backbone_.name))
        known = {f.name for f in fields(FineTuneConfig)}
        config = replace(clf.finetune or FineTuneConfig(), **{k: v for k, v in options.items() if k in known})
        fit_network(clf, images, started, config, options.get("image_size"))
        training = clf.fit_info_["training"]
        if training["is_global_zero"] and not keep_fine_tuned(evidence, training["best_monitor_acc"]):
            say(evidence["decision"], clf.progress)
            clf.backbone_ = _build(clf, probe_network)  # the probe runs on the pretrained networks
            _probe(clf, images, evidence, evidence["probe"]["layer"], started, advice)
    else:
        if clf.backbone_.name != probe_network:  # resumed: the networks the probe was planned on
            clf.backbone_ = _build(clf, probe_network)
        _probe(clf, images, evidence, evidence["options"]["layer"], started, advice)
    clf.auto_ = evidence
    seconds = clf.fit_info_["seconds"]
    seconds["decide"] = round(decided - started, 3)
    if advice is not None and advice.measured is not None:
        seconds["measure"] = round(advice.measured.seconds, 3)
        ranked = evidence.get("network", {}).get("networks", {})  # the networks' passes over the ranking sample
        clf.fit_info_["n_codes_computed"] += advice.measured.computed + sum(r["computed"] for r in ranked.values())
