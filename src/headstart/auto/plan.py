"""The plan within the budget: fine-tune (and how) when the data is large and the timed cost fits, else the probe."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codes.backbones import Backbone
from ..data.folders import ImageSet
from ..results import AutoEvidence
from ..training.options import FineTuneConfig

if TYPE_CHECKING:
    from .advice import Advice  # advice.py imports this module

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


def _time_plan(plan: dict[str, Any], config: FineTuneConfig, backbone_name: str, weights: str | None,
               train: ImageSet, budget: float, started: float, wanted: int, least: int) -> dict[str, Any]:
    """Time fine-tuning ``plan`` (its unfreeze, loader and image size over ``config``) and how many of ``wanted``
    epochs fit PLAN_SHARE of what is left of ``budget``; sets ``plan["loader"]`` to the loader it will use."""
    run = replace(config, unfreeze=str(plan["unfreeze"]), loader=plan.get("loader", config.loader))
    if run.loader == "activations" and run.unfreeze_blocks() is None:  # every block trains: nothing to cache
        run = replace(run, loader="memory")
    plan["loader"] = run.loader
    from ..training.cost import fine_tune_cost  # torch and Lightning load only when fine-tuning is timed

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
    Fine-tuning, when advised, is timed on a few steps of each kind (:class:`~headstart.training.cost.TrainingCost`) and
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
    spent = time.perf_counter() - started
    if spent >= budget:  # nothing could fit: timing fine-tuning would only spend more (seconds to tens of seconds)
        evidence["decision"] = (f"fine-tuning advised but measuring took {spent:.0f} s of the {budget:g} s budget: "
                                f"linear classifier on {probe_layer} instead (a larger --budget would time it)")
        return "feature-extractor", {"layer": probe_layer}, evidence
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
