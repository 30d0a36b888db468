"""Choosing among networks (``--model a,b,c``): each network measured and advised on the same training images (its
own best layer by the layer rule), then the network by the same rule: the lowest cross-validated log loss of its
chosen layer; networks within TIE_SE paired standard errors of it are tied, and the tie goes to the first named."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .layers import TIE_SE

if TYPE_CHECKING:
    from .advice import Advice


def model_names(model: str) -> list[str]:
    """The networks a ``model`` option names: one, or several joined by commas (in the user's order)."""
    return [name.strip() for name in str(model).split(",") if name.strip()]


def choose_network(advices: dict[str, Advice]) -> tuple[str, dict[str, Any]]:
    """(the chosen network, the evidence: every network's layer, scores, noise and seconds, and the rule)."""
    names = list(advices)
    searches = {name: advices[name].searches.get(advices[name].layer) for name in names}
    scored = [name for name in names if searches[name] is not None]
    rule = ("each network's own best layer by the layer rule; then the lowest 5-fold out-of-fold log loss, networks "
            "within one paired standard error of it tied, and the tie goes to the first named")
    if not scored:
        return names[0], {"rule": "no cross-validation possible: the first named network", "chosen": names[0]}
    lowest = min(scored, key=lambda name: searches[name].cv_log_loss)
    evidence: dict[str, Any] = {"rule": rule, "lowest_log_loss": lowest, "networks": {}}
    tied = []
    for name in scored:
        search, best = searches[name], searches[lowest]
        paired = len(search.sample_losses) == len(best.sample_losses) > 1
        diff = search.sample_losses - best.sample_losses if paired else np.zeros(0)
        above = float(diff.mean()) if paired else search.cv_log_loss - best.cv_log_loss
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if paired else None
        is_tied = name == lowest or (se is not None and above <= TIE_SE * se)
        evidence["networks"][name] = {
            "layer": advices[name].layer, "cv_log_loss": round(search.cv_log_loss, 5),
            "cv_accuracy": round(search.cv_accuracy, 5), "log_loss_above_lowest": round(above, 5),
            "standard_error": None if se is None else round(se, 5), "tied": bool(is_tied),
            "images": int(getattr(search, "rows", len(search.sample_losses))),
            "seconds": round(advices[name].seconds, 1)}
        if is_tied:
            tied.append(name)
    evidence["chosen"] = next(name for name in names if name in tied)
    return evidence["chosen"], evidence


def network_line(evidence: dict[str, Any]) -> str:
    """One line for the progress output: the chosen network and what the others scored."""
    rows = evidence.get("networks", {})
    scores = ", ".join(f"{name} {row['cv_log_loss']:.4f}" for name, row in rows.items())
    return f"network {evidence['chosen']} chosen (5-fold log loss of each one's best layer: {scores})"
