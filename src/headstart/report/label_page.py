"""The report's sections for a multi-label model: its figures, per label results, and examples of misses (a label
the image carries but the model did not call) and false alarms (a label called that the image does not carry)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from ..data.folders import ImageSet
from .metrics import multilabel_metrics
from .parts import table, thumbnail

EXAMPLES = 12  # misses and false alarms shown, each


def _examples(images: ImageSet, kept: np.ndarray, proba: np.ndarray, mask: np.ndarray, names: list[str],
              missed: bool) -> str:
    """The most confident errors of one kind: misses (lowest probability of a carried label) or false alarms
    (highest probability of a label not carried)."""
    rows, cols = np.nonzero(mask)
    order = np.argsort(proba[rows, cols] if missed else -proba[rows, cols])[:EXAMPLES]
    what = "missed" if missed else "false alarm"
    return "".join(
        f'<figure><img src="{thumbnail(images.paths[kept[rows[i]]])}" alt="{what}">'
        f"<figcaption><span class=wrong>{what} <b>{html.escape(names[cols[i]])}</b> "
        f"({proba[rows[i], cols[i]]:.2f})</span><br>carries "
        f"{html.escape(', '.join(n for n, t in zip(names, images.targets[kept[rows[i]]]) if t) or '(none)')}<br>"
        f"{html.escape(Path(images.paths[kept[rows[i]]]).name)}</figcaption></figure>" for i in order)


def label_sections(clf: Any, images: ImageSet, found: Any) -> tuple[list[str], list[str]]:
    """(cards, sections) of a multi-label model scored on ``images`` (which carry ``targets``)."""
    proba, kept, _ = found
    names = clf.classes_
    truth = images.targets[kept].astype(bool)
    called = clf.head_.decide(proba).astype(bool)
    metrics = multilabel_metrics(truth, proba, called, names)
    cards = [f"<div class=card id={key}>{label}<b>{metrics[key]:.4f}</b></div>"
             for key, label in (("map", "mAP"), ("micro_f1", "micro-F1"), ("subset_accuracy", "subset accuracy"),
                                ("hamming_loss", "Hamming loss")) if metrics.get(key) is not None]
    thresholds = clf.head_.thresholds
    per_label = [[n, f"{thresholds[j]:.3f}", f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
                  "-" if m["ap"] is None else f"{m['ap']:.3f}", m["support"]]
                 for j, (n, m) in enumerate(metrics.get("per_label", {}).items())]
    misses, alarms = truth & ~called, ~truth & called
    sections = [
        "<h2>Per label</h2>",
        table(per_label, ["label", "threshold", "precision", "recall", "F1", "AP", "images"]),
        f"<h2>Misses ({min(EXAMPLES, int(misses.sum()))} of {int(misses.sum())}: labels the image carries that were "
        f"not called, least probable first)</h2><div class=gallery>"
        f"{_examples(images, kept, proba, misses, names, True)}</div>",
        f"<h2>False alarms ({min(EXAMPLES, int(alarms.sum()))} of {int(alarms.sum())}: labels called that the image "
        f"does not carry, most probable first)</h2><div class=gallery>"
        f"{_examples(images, kept, proba, alarms, names, False)}</div>",
    ]
    return cards, sections
