"""The plan within the budget: every (network, strategy) alternative weighed by what it is expected to reach and what
it is timed to cost here, and the best that fits chosen, with a margin for a slower machine.

Small data gets the probe (every network's, averaged: :mod:`headstart.heads.joint`). Large data weighs fine-tuning
every block, then the top blocks from cached activations, then the probe; at each level the network that trains the
most of its advised epochs, and of those the strongest on ImageNet (why: docs/explanation/auto.md). Each fine-tuning
is timed on this machine (a few steps of each kind, :mod:`headstart.training.cost`), cheapest network first, and fits
when MARGIN times its predicted run, and MARGIN times what follows it, end within the budget: a machine that much
slower still ends in time with the model chosen. A fine-tuning that fits is never passed over for a probe; the
evidence lists every alternative weighed, its timing and whether it fits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import Any

from ..data.folders import ImageSet
from ..results import AutoEvidence
from ..training.options import FineTuneConfig
from .advice import Advice

#: Epochs with the network's blocks training a fine-tuning needs at least (after a random head's epochs alone: a
#: probe-started head needs none); the top blocks alone need one.
TRAINED_EPOCHS = 2
#: A run this much slower than timed still ends within the budget (its training and what follows it).
MARGIN = 1.15
#: Seconds after training that do not grow with the images: the exports, saving the model and its report.
AFTER_S = 15.0
#: When training every block of every network does not fit, the top FALLBACK_UNFREEZE blocks of the strongest
#: network are trained from cached activations (``--loader activations``) before falling back to the probe.
FALLBACK_UNFREEZE = "3"
#: Augmented views of each training image cached for them (one: every epoch sees the same crops).
ACTIVATION_VIEWS = 1


def _time_plan(plan: dict[str, Any], config: FineTuneConfig, weights: str | None, train: ImageSet, budget: float,
               started: float, wanted: int, least: int, after_images: int) -> dict[str, Any]:
    """Time fine-tuning ``plan`` (its network, image size and training options over ``config``) and how many of
    ``wanted`` epochs fit the budget with the margin; sets ``plan["loader"]`` to the loader it will use."""
    known = {f.name for f in fields(FineTuneConfig)}
    run = replace(config, **{k: str(v) if k == "unfreeze" else v for k, v in plan.items() if k in known})
    if run.loader == "activations" and run.unfreeze_blocks() is None:  # every block trains: nothing to cache
        run = replace(run, loader="memory")
    plan["loader"] = run.loader
    from ..heads.familiarity import BANK_MAX
    from ..training.cost import fine_tune_cost  # torch and Lightning load only when fine-tuning is timed

    cost = fine_tune_cost(plan["network"], weights, train, plan.get("image_size"), run)
    per_image = cost.eval_s / cost.batch_size + cost.decode_s / max(1, cost.workers)
    after = AFTER_S + (after_images + min(len(train), BANK_MAX)) * per_image
    remaining = budget - (time.perf_counter() - started)
    fits = [n for n in range(1, wanted + 1) if MARGIN * (cost.run_s(n, run.probe_epochs) + after) <= remaining]
    epochs = max(fits, default=0)
    return {"unfreeze": run.unfreeze, "loader": run.loader, "epoch_s": round(cost.epoch_s(), 2),
            "epochs_affordable": epochs, "least_s": round(cost.run_s(least, run.probe_epochs), 1),
            "predicted_s": round(cost.run_s(max(epochs, least), run.probe_epochs), 1), "after_s": round(after, 1),
            "left_s": round(remaining, 1), "fits": epochs >= least,
            "cost": {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(cost).items()}}


def _levels(plan: dict[str, Any], networks: list[str], given: dict[str, Any], multilabel: bool
            ) -> list[list[dict[str, Any]]]:
    """The fine-tunings to weigh, by level, best expected first: every block, then (unless the user set --unfreeze)
    the top FALLBACK_UNFREEZE blocks from cached activations; within a level one per network, cheapest first (as
    named). Single-label heads start as a linear probe (LP-FT), in place of epochs training a random head alone."""
    start = {} if multilabel else {"head_init": "probe", "probe_epochs": 0}
    levels = [[{**plan, **start, "network": name} for name in networks]]
    if str(plan["unfreeze"]) == "all" and "unfreeze" not in given:
        levels.append([{**plan, **start, "network": name, "unfreeze": FALLBACK_UNFREEZE, "loader": "activations",
                        "views": ACTIVATION_VIEWS} for name in networks])
    return levels


def _name(plan: dict[str, Any]) -> str:
    blocks = "every block" if str(plan["unfreeze"]) == "all" else f"the top {plan['unfreeze']} blocks"
    return f"fine-tune {plan['network']} ({blocks})"


def _rule(advice: Advice) -> str:
    """The plan's rule, as its evidence states it."""
    if advice.strategy != "fine-tune":
        probes = ("a linear probe on each network's codes, their logits averaged" if "joint" in advice.choice else
                  "a linear probe on the network's codes")
        return f"small data: {probes} (fine-tuning is weighed from the size rule's large data on)"
    return (f"at the first level with a fine-tuning that fits: every block (at least {TRAINED_EPOCHS} epochs), then "
            f"the top {FALLBACK_UNFREEZE} blocks from cached activations (at least 1), else the probe, the head "
            f"started as a linear probe (LP-FT); within a level the network that trains the most of its advised "
            f"epochs, the strongest of those. A fine-tuning fits when {MARGIN:g} times its timed cost, and of what "
            f"follows it, end within the budget; a network costlier than one that does not fit is not timed")


def _weigh(levels: list[list[dict[str, Any]]], wanted: int, probe_epochs: int, time_it: Callable[..., dict[str, Any]],
           alternatives: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(candidate, its timing) chosen at the first level where one fits, or None; every candidate weighed is added
    to ``alternatives``. ``time_it(candidate, least)`` times one (:func:`_time_plan`)."""
    chosen = None
    for level in levels:
        trained = TRAINED_EPOCHS if str(level[0]["unfreeze"]) == "all" else 1  # the top blocks alone: one suffices
        blocked = None  # a cheaper network of this level that does not fit: the costlier ones are not timed
        for candidate in level:
            alternative = {"name": _name(candidate), "network": candidate["network"], "strategy": "fine-tune"}
            alternatives.append(alternative)
            if blocked is not None:
                alternative.update(fits=False, why=f"not timed: costs more than {blocked}, which does not fit")
                continue
            if chosen is not None and chosen[1]["epochs_affordable"] < wanted:  # it could only train fewer
                alternative.update(fits=False, why=f"not timed: costs more than {chosen[0]['network']}, which trains "
                                                   f"{chosen[1]['epochs_affordable']} of {wanted} epochs")
                continue
            alone = candidate.get("probe_epochs", probe_epochs)  # epochs of the head alone first
            least = min(alone + trained, wanted)  # fewer only when the user asked for fewer
            timed = time_it(candidate, least)
            alternative.update(fits=timed["fits"], least_epochs=least, timed=timed,
                               options={**candidate, "epochs": max(timed["epochs_affordable"], least)})
            if not timed["fits"]:
                blocked = candidate["network"]
            elif chosen is None or min(timed["epochs_affordable"], wanted) >= chosen[1]["epochs_affordable"]:
                chosen = (candidate, timed)  # a stronger network replaces it when it trains as many epochs
        if chosen is not None:
            return chosen
    return None


def _none_fits(alternatives: list[dict[str, Any]], budget: float, probe_layer: str) -> str:
    """The decision when no fine-tuning fits: the cheapest one's figures and the budget that would fit it."""
    timed_ones = [a for a in alternatives if "timed" in a]
    cheapest = timed_ones[-1]  # the last timed: the cheapest network at the cheapest level
    first = cheapest["timed"]
    needed = budget - first["left_s"] + MARGIN * (first["least_s"] + first["after_s"])
    return (f"fine-tuning advised but none of the {len(alternatives) - 1} weighed fits the budget with its {MARGIN:g}x "
            f"margin (the cheapest, {cheapest['name']}, {cheapest['least_epochs']} epoch(s): about "
            f"{first['least_s']:.0f} s with {first['after_s']:.0f} s after it, of {first['left_s']:.0f} s left): "
            f"linear classifier on {probe_layer} instead (--budget {50 * math.ceil(needed / 50):.0f} or more would "
            f"fine-tune)")


def plan_auto(advice: Advice, networks: list[str], weights: str | None, train: ImageSet, budget: float,
              started: float, given: dict[str, Any] | None = None, config: FineTuneConfig | None = None,
              after_images: int = 0) -> tuple[str, dict[str, Any], AutoEvidence]:
    """(strategy, options, evidence) for ``--strategy auto``: ``budget`` seconds from ``started`` (perf_counter);
    ``networks``: those auto may fine-tune, cheapest first (the probe's are ``advice``'s); ``given``: fine-tuning
    options the user set, which replace the advised ones; ``config``: the other fine-tuning options (loader, batch
    size, head-only epochs), as the run will use them; ``after_images``: images scored once the model is fitted
    (validation), whose time the plan keeps free.

    The fine-tuning options carry ``network``; after training, :func:`keep_fine_tuned` checks the network against
    the probe on held-out training images.
    """
    given = given or {}
    evidence: AutoEvidence = {"advice": advice.to_dict(), "budget_s": budget}
    probe_layer = advice.layer
    probe = {"name": f"probe {advice.network}", "network": advice.network, "strategy": "feature-extractor",
             "options": {"layer": probe_layer}, "fits": True,
             "expected": {"cv_accuracy": advice.layers.get(probe_layer),
                          "images": len(advice.measured.images) if advice.measured is not None else None}}
    plan_evidence: dict[str, Any] = {"rule": _rule(advice), "margin": MARGIN, "alternatives": []}
    evidence["plan"] = plan_evidence
    if advice.strategy != "fine-tune":
        plan_evidence.update(alternatives=[probe], chosen=probe["name"])
        evidence["decision"] = f"linear classifier on {probe_layer} (advisor; cross-validated layers)"
        return "feature-extractor", {"layer": probe_layer}, evidence
    evidence["probe"] = {"layer": probe_layer, "cv_accuracy": advice.layers.get(probe_layer, 0.0)}
    spent = time.perf_counter() - started
    if spent >= budget:  # nothing could fit: timing fine-tuning would only spend more (seconds to tens of seconds)
        plan_evidence.update(alternatives=[probe], chosen=probe["name"])
        evidence["decision"] = (f"fine-tuning advised but measuring took {spent:.0f} s of the {budget:g} s budget: "
                                f"linear classifier on {probe_layer} instead (a larger --budget would time it)")
        return "feature-extractor", {"layer": probe_layer}, evidence
    plan = {**advice.options, **{k: v for k, v in given.items() if k in advice.options}}
    wanted = int(plan["epochs"])
    config = config or FineTuneConfig()
    alternatives = plan_evidence["alternatives"]
    chosen = _weigh(_levels(plan, networks, given, train.multilabel), wanted, config.probe_epochs,
                    lambda candidate, least: _time_plan(candidate, config, weights, train, budget, started, wanted,
                                                        least, after_images), alternatives)
    alternatives.append(probe)
    evidence["plans_tried"] = [a["timed"] for a in alternatives if "timed" in a]
    if chosen is None:
        plan_evidence["chosen"] = probe["name"]
        evidence["decision"] = _none_fits(alternatives, budget, probe_layer)
        return "feature-extractor", {"layer": probe_layer}, evidence
    candidate, timed = chosen
    epochs = timed["epochs_affordable"]
    plan_evidence["chosen"] = _name(candidate)
    evidence.update(fine_tune_epoch_s=timed["epoch_s"], epochs_advised=wanted, epochs_affordable=epochs,
                    fine_tune_cost=timed["cost"], fine_tune_predicted_s=timed["predicted_s"])
    passed = [a["name"] for a in alternatives if not a.get("fits") and a is not probe]
    evidence["decision"] = (f"{_name(candidate)} for {epochs} of {wanted} advised epochs (about {timed['epoch_s']:.0f} "
                            f"s each, {timed['predicted_s']:.0f} s in all, {timed['after_s']:.0f} s after it) within "
                            f"the budget with a {MARGIN:g}x margin"
                            + (f" ({', '.join(passed)}: too long)" if passed else "")
                            + f"; kept unless clearly below the {probe_layer} probe on held-out training images")
    max_seconds = round(timed["left_s"] - timed["after_s"], 1)  # a hard stop: the best epoch so far is kept
    return "fine-tune", {**candidate, "epochs": epochs, "max_seconds": max_seconds}, evidence


def keep_fine_tuned(evidence: AutoEvidence, monitor_accuracy: float, monitor_images: int) -> bool:
    """Whether auto keeps the fine-tuned network: its accuracy on the ``monitor_images`` training images it held out
    against the best probe's cross-validated accuracy on training images (both unseen in their fitting). A tie within
    one standard error of that held-out accuracy keeps the fine-tuning the plan chose (a few images' noise should not
    overturn it); clearly worse, the probe is trained instead. Records the check."""
    probe = evidence["probe"]
    p = probe["cv_accuracy"]
    q = min(p, monitor_accuracy)  # the held-out accuracy's variance, at the lower of the two (never 0 when they differ)
    error = math.sqrt(max(q * (1 - q), 1e-6) / max(1, monitor_images))
    keep = monitor_accuracy >= p - error
    evidence["check"] = {"fine_tune_held_out_accuracy": round(monitor_accuracy, 4), "held_out_images": monitor_images,
                         "probe_cv_accuracy": p, "standard_error": round(error, 4), "kept": keep,
                         "rule": "kept unless more than one standard error below the probe"}
    if not keep:
        evidence["decision"] += (f"; it scored {monitor_accuracy:.3f} against {p:.3f} (more than one standard error, "
                                 f"{error:.3f}, below), so a linear classifier on {probe['layer']} was trained "
                                 f"instead")
    return keep
