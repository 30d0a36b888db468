"""Whether the probe runs on int8 codes: auto's own choice for large collections, where the codes still to compute
are many. int8 is chosen when, on the images auto already measured, it is predicted to save at least INT8_MIN_SAVING
seconds of the rest of the pass and its codes score within the noise of the fp32 ones (the layer rule's paired test,
on the same folds). Measured with bench/int8.py: the int8 network runs at 2.33x fp32's speed on this CPU, and a
whole `extract --precision int8` of cifar10 took 1/1.78 of fp32's time.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..codes.backbones import PENULTIMATE
from ..data.imagestats import STATS
from ..heads.linear import search_C
from .layers import TIE_SE, fold_groups
from .measure import say

#: int8 is considered only when it is predicted to save at least this many seconds of the training images' codes
#: still to compute (the check itself costs the quantisation and an int8 pass over the measured images, 2-5 s).
INT8_MIN_SAVING = 30.0


def choose_precision(settings: Any, backbone: Any, advice: Any, n_train: int, also: list[str]) -> dict[str, Any]:
    """The evidence of the choice for the codes of the probe's layer (``advice.layer``) of ``n_train`` training
    images, of which ``advice.measured`` covers some (``chosen``: "int8" or "fp32"). ``also``: the layers the final
    extraction computes alongside (the check runs the very network it will use, so the measured images' int8 codes
    are cached for it)."""
    measured, layer = advice.measured, advice.layer
    rest = n_train - len(measured.images)
    evidence: dict[str, Any] = {"chosen": settings.precision or "fp32", "images_to_compute": int(rest)}
    why = _not_considered(settings, advice, rest)
    if why:
        return {**evidence, "why": why}
    fp32_rate = measured.computed / measured.seconds
    fp32_s = rest / fp32_rate
    parts = layer.split("+")
    say(f"checking int8 codes on the {len(measured.images)} measured images", settings.progress)
    extractor = settings.extractor_for(backbone, parts + ([] if PENULTIMATE in parts else [PENULTIMATE]), "int8",
                                       [*also, STATS])
    started = time.perf_counter()
    extractor.network()  # quantised once (cached): not part of the rate
    quantised = time.perf_counter()
    codes = extractor.transform(measured.images.paths)
    extractor.release()
    int8_rate = codes.extracted / max(time.perf_counter() - quantised, 1e-9)
    int8_s = rest / int8_rate if codes.extracted else fp32_s
    fp32 = advice.searches[layer]
    columns = sum(codes.widths[:len(parts)])
    int8 = search_C(codes.codes[:, :columns], measured.images.labels[codes.kept], len(measured.images.class_names),
                    "logistic", settings.seed, groups=fold_groups(measured, settings.seed))
    paired = int8 is not None and len(codes.kept) == len(measured.images) and len(fp32.sample_losses) == len(
        int8.sample_losses)
    diff = int8.sample_losses - fp32.sample_losses if paired else np.zeros(0)
    above = float(diff.mean()) if paired else float("inf")
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    keeps = above <= TIE_SE * se
    saves = fp32_s - int8_s >= INT8_MIN_SAVING
    evidence.update(
        chosen="int8" if keeps and saves else evidence["chosen"], fp32_img_s=round(fp32_rate, 1),
        int8_img_s=round(int8_rate, 1),
        predicted_s={"fp32": round(fp32_s, 1), "int8": round(int8_s, 1)},
        check_s=round(time.perf_counter() - started, 1), quantise_s=round(quantised - started, 1),
        cv_log_loss={"fp32": round(fp32.cv_log_loss, 5), "int8": None if int8 is None else round(int8.cv_log_loss, 5)},
        log_loss_above_fp32=round(above, 5) if paired else None, standard_error=round(se, 5) if paired else None,
        why=("int8 codes score within the noise of fp32's on the measured images and save about "
             f"{fp32_s - int8_s:.0f} s of the rest" if keeps and saves else
             "int8 codes could not be cross-validated like fp32's on the measured images" if not paired else
             "int8 codes scored worse than fp32's on the measured images, beyond the noise" if not keeps else
             f"int8 would save {fp32_s - int8_s:.0f} s, under the {INT8_MIN_SAVING:.0f} s worth its check"))
    return evidence


def _not_considered(settings: Any, advice: Any, rest: int) -> str | None:
    """Why int8 is not even tried (None: it is)."""
    measured = advice.measured
    if settings.precision is not None:
        return f"--precision {settings.precision} was given"
    if settings.engine == "torch" or (settings.engine == "auto" and torch.cuda.is_available()):
        return "the network runs in PyTorch here (CUDA), where int8 does not run"
    if measured is None or measured.images.multilabel or not advice.searches.get(advice.layer):
        return "no cross-validated measurement to check int8 against"
    if not measured.computed or not measured.seconds:
        return "the measured codes came from the cache: no rate to predict from"
    predicted = rest * measured.seconds / measured.computed
    if predicted < INT8_MIN_SAVING:
        return (f"the {rest} training images still to compute are predicted to take {predicted:.0f} s in fp32: "
                f"int8 could not save {INT8_MIN_SAVING:.0f} s")
    return None
