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

from ..codes.backbones import candidate_layers
from ..codes.create import create_backbone
from ..disk import cache_folder, write_atomic
from ..strategies.feature_extractor import fit_codes
from ..strategies.fitted import Fitted, Settings
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


def _build(settings: Settings, name: str) -> Any:
    return create_backbone(name, settings.weights, image_size=settings.image_size,
                           cache_dir=cache_folder(settings.cache_dir))


def _advise(settings: Settings, images: Any, backbone: Any, names: list[str], precision: str
            ) -> tuple[Any, Any, dict[str, Any] | None]:
    """(the backbone measured, the advice, the ranking evidence when several networks were ranked). Several networks
    measure the images together (their probes are averaged unless one is clearly better alone); multi-label data
    instead ranks them and keeps one (:func:`.networks.rank_networks`), each label's threshold being its own
    network's."""
    evidence = None
    if len(names) > 1 and images.multilabel:
        backbones = builders(names, settings.weights, settings.image_size, cache_folder(settings.cache_dir), backbone)
        backbone, evidence = rank_networks(backbones, images, settings.cache_dir, settings.seed, settings.engine,
                                           settings.batch_size, precision, settings.progress)
    elif len(names) > 1:
        backbone = _build(settings, ",".join(names))
    advice = advise(backbone, images, settings.cache_dir, settings.seed, settings.classifier, settings.budget,
                    settings.progress, settings.engine, settings.batch_size, precision=precision)
    joint = advice.choice.get("joint", {})
    if joint.get("chosen", "joint") != "joint":  # one network alone is clearly better: the model holds it alone
        say(f"{joint['chosen']} alone scores better than the networks averaged, beyond the noise", settings.progress)
    return backbone, advice, evidence


def _probe(settings: Settings, images: Any, backbone: Any, evidence: dict[str, Any], layer: str, started: float,
           advice: Any, precision: str) -> Fitted:
    """The linear probe on ``layer`` (one network's, or every network's averaged): on int8 codes when auto finds
    them worth it (a large collection, measured on a sample; :mod:`.precision`), recorded in
    ``evidence["precision"]``."""
    alone = (advice.choice.get("joint") or {}).get("chosen", "joint") if advice is not None else "joint"
    if alone != "joint" and getattr(backbone, "members", None):
        backbone = backbone.alone(alone)  # its codes are the joint's: nothing is recomputed
        layer = "+".join(part.rpartition(":")[2] for part in layer.split("+"))
        advice = None
    parts = sorted({p for c in candidate_layers(backbone) for p in c.split("+")})
    if advice is not None and advice.measured is not None and not advice.measured.complete:
        evidence["precision"] = choose_precision(settings, backbone, advice, len(images), parts)
        precision = evidence["precision"]["chosen"]
        if precision == "int8":
            say(f"int8 codes: {evidence['precision']['why']}", settings.progress)
    return fit_codes(settings, images, backbone, layer.split("+"), started, precision, also=parts, advice=advice)


def fit_auto(settings: Settings, images: Any, backbone: Any, started: float, names: list[str] | None = None,
             after_images: int = 0, spent: float = 0.0, precision: str = "fp32") -> Fitted:
    """Decide and fit on ``images`` from ``backbone`` (built: the first of ``names``); the result carries the
    evidence (``auto``). ``after_images``: images the caller scores afterwards (validation), whose time the plan
    keeps within the budget, of which ``spent`` seconds were used before ``started``."""
    names = names or [backbone.name]
    workdir = Path(settings.workdir) if settings.workdir else None
    saved = workdir / AUTO_JSON if workdir else None
    advice = None
    if settings.resume and saved is not None and saved.is_file():
        evidence = json.loads(saved.read_text())
        say(f"resuming the earlier decision: {evidence['decision']}", settings.progress)
    else:
        backbone, advice, networks = _advise(settings, images, backbone, names, precision)
        strategy, options, evidence = plan_auto(advice, names if not networks else [backbone.name], settings.weights,
                                                images, settings.budget - spent, started,
                                                given_options(settings.finetune, settings.image_size),
                                                settings.finetune, after_images)
        if networks is not None:
            evidence["network"] = networks
        evidence.update(strategy=strategy, options=options, seconds=round(time.perf_counter() - started, 1))
        say(f"{evidence['decision']} ({evidence['seconds']:.0f} s to decide)", settings.progress)
    decided = time.perf_counter()
    probe_network = (evidence.get("advice", {}).get("network") or evidence.get("network", {}).get("chosen")
                     or backbone.name)  # a decision saved by 0.1.0 names its network in "network"
    if evidence["strategy"] == "fine-tune":
        if saved is not None:
            write_atomic(saved, json.dumps(evidence, indent=2).encode())
        options = evidence["options"]
        known = {f.name for f in fields(FineTuneConfig)}
        config = replace(settings.finetune or FineTuneConfig(), **{k: v for k, v in options.items() if k in known})
        fitted = fit_network(settings, images, _build(settings, options.get("network", backbone.name)), started,
                             config, options.get("image_size"))
        training = fitted.info["training"]
        if training["is_global_zero"] and not keep_fine_tuned(evidence, training["best_monitor_acc"],
                                                                   training["monitor_images"]):
            say(evidence["decision"], settings.progress)  # the probe runs on the pretrained networks
            fitted = _probe(settings, images, _build(settings, probe_network), evidence, evidence["probe"]["layer"],
                            started, advice, precision)
    else:
        if backbone.name != probe_network:  # resumed: the networks the probe was planned on
            backbone = _build(settings, probe_network)
        fitted = _probe(settings, images, backbone, evidence, evidence["options"]["layer"], started, advice,
                        precision)
    fitted.auto = evidence
    seconds = fitted.info["seconds"]
    seconds["decide"] = round(decided - started, 3)
    if advice is not None and advice.measured is not None:
        seconds["measure"] = round(advice.measured.seconds, 3)
        ranked = evidence.get("network", {}).get("networks", {})  # the networks' passes over the ranking sample
        fitted.info["n_codes_computed"] += advice.measured.computed + sum(r["computed"] for r in ranked.values())
    return fitted
