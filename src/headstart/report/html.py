"""The HTML report: one self-contained file with metrics, confusion matrix, worst mistakes and training curves."""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.folders import ImageSet
from ..disk import write_atomic
from .metrics import classification_metrics
from .parts import GENERATOR, IMAGES_LOADED, STYLE, table, thumbnail

GALLERY = 24  # most confidently wrong images shown


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def confusion_table(matrix: np.ndarray, names: list[str]) -> str:
    """The confusion matrix as an HTML table (rows: true, columns: predicted), each cell shaded by its share of the
    row; counts shown up to 25 classes, and in every cell's tooltip. No plotting library, crisp at any zoom."""
    k = len(names)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    show = k <= 25
    head = "".join(f"<th class=col title='{html.escape(str(n))}'>{html.escape(str(n))}</th>" for n in names)
    rows = []
    for i, name in enumerate(names):
        cells = "".join(
            f"<td style='background:rgba(31,119,180,{rates[i, j]:.3f});color:{'#fff' if rates[i, j] > 0.5 else '#222'}'"
            f" title='true {html.escape(str(name))}, predicted {html.escape(str(names[j]))}: {matrix[i, j]}'>"
            f"{matrix[i, j] if show else ''}</td>" for j in range(k))
        rows.append(f"<tr><th>{html.escape(str(name))}</th>{cells}</tr>")
    return (f"<table class=confusion aria-label='confusion matrix'><tr><th>true \\ predicted</th>{head}</tr>"
            f"{''.join(rows)}</table>")


def curves_figure(metrics_csv: Path) -> str | None:
    """Training loss and early-stopping accuracy per epoch from Lightning's CSV log, or None."""
    if not metrics_csv.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[int, float]] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            for key in ("train_loss", "monitor_loss", "monitor_acc"):
                if row.get(key) and row.get("epoch"):
                    series.setdefault(key, {})[int(float(row["epoch"]))] = float(row[key])
    if not series:
        return None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("train_loss", "monitor_loss"):
        if key in series:
            loss_ax.plot(list(series[key]), list(series[key].values()), marker="o", label=key)
    loss_ax.set_xlabel("epoch")
    loss_ax.legend()
    if "monitor_acc" in series:
        acc_ax.plot(list(series["monitor_acc"]), list(series["monitor_acc"].values()), marker="o", color="green")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_title("accuracy on held-out training images")
    return _png(fig)




def _layer_evidence(accuracy: float, evidence: dict[str, Any] | None, chosen: bool) -> str:
    text = f"{accuracy:.4f} CV accuracy on training images"
    if evidence:
        text += f", log loss {evidence['cv_log_loss']:.4f}" + (" (tied)" if evidence.get("tied") else "")
    return text + (" - chosen" if chosen else "")


def auto_section(auto: dict[str, Any]) -> str:
    """How ``--strategy auto`` chose: the measurements, the advice, the decision and its check."""
    advice = auto.get("advice", {})
    size, sim = advice.get("size", {}), advice.get("similarity", {})
    network = auto.get("network", {})
    rows = [*[[f"network {name}", f"{row['layer']}: 5-fold log loss {row['cv_log_loss']:.4f}, accuracy "
                                  f"{row['cv_accuracy']:.4f} ({row['seconds']:.0f} s)"
               + ("; chosen" if name == network.get("chosen") else "; tied" if row["tied"] else "")]
              for name, row in network.get("networks", {}).items()],
            *([["network rule", network["rule"]]] if network else []),
            *([["networks ranked on", network["sample"]["why"]]] if "sample" in network else []),
            ["cell", " / ".join(advice.get("cell", []))],
            ["size", f"{size.get('images')} images, median {size.get('median_per_class')} per "
                     f"{size.get('unit', 'class')} ({size.get('rule')})"],
            ["similarity to ImageNet", f"ratio {sim.get('ratio')} (similar from {sim.get('threshold')})"
             if "ratio" in sim else sim.get("method")],
            *[[f"layer {k}", _layer_evidence(v, advice.get("layer_choice", {}).get("candidates", {}).get(k),
                                             k == advice.get("layer"))]
              for k, v in advice.get("layer_scores", {}).items()],
            ["layer rule", advice.get("layer_choice", {}).get("rule")],
            ["advice", advice.get("reason")], ["decision", auto.get("decision")]]
    joint = advice.get("layer_choice", {}).get("joint", {})
    for name, row in joint.get("scores", {}).items():
        noise = (f"; {row['log_loss_above_joint']:+.4f} +- {row['standard_error']:.4f} against the average"
                 if "standard_error" in row else "")
        rows.insert(-2, [f"probe {'averaged' if name == 'joint' else name}",
                         f"5-fold log loss {row['cv_log_loss']:.4f}, accuracy {row['cv_accuracy']:.4f}{noise}"
                         + ("; chosen" if name == joint.get("chosen") else "")])
    if joint.get("rule"):
        rows.insert(-2, ["networks rule", joint["rule"]])
    for alternative in auto.get("plan", {}).get("alternatives", []):
        timed = alternative.get("timed")
        cost = (f"about {timed['predicted_s']:.0f} s + {timed['after_s']:.0f} s after, {timed['left_s']:.0f} s left"
                if timed else "")
        rows.append([f"weighed: {alternative['name']}", ("fits" if alternative.get("fits") else "does not fit")
                     + (f" ({cost})" if cost else "")
                     + ("; chosen" if alternative["name"] == auto["plan"].get("chosen") else "")])
    if "check" in auto:
        check = auto["check"]
        error = f" (standard error {check['standard_error']:.4f})" if "standard_error" in check else ""
        rows.append(["check", f"fine-tuned {check['fine_tune_held_out_accuracy']:.4f} on held-out training images vs "
                              f"probe {check['probe_cv_accuracy']:.4f}{error}: "
                              + ("fine-tuning kept" if check["kept"] else "probe trained instead")])
    return "<h2>How the strategy was chosen</h2>" + table(rows, ["", ""])


def unfamiliar_section(images: ImageSet, kept: np.ndarray, familiarity: np.ndarray, model: Any) -> str:
    """The least familiar images, with how many fall below the threshold."""
    flagged = int((familiarity < model.threshold).sum())
    order = np.argsort(familiarity)[:GALLERY // 2]
    gallery = "".join(
        f'<figure><img src="{thumbnail(images.paths[kept[i]])}" alt="unfamiliar image">'
        f"<figcaption>familiarity {familiarity[i]:.3f}" + (" <span class=wrong>unfamiliar</span>"
                                                            if familiarity[i] < model.threshold else "")
        + f"<br>{html.escape(Path(images.paths[kept[i]]).name)}</figcaption></figure>" for i in order)
    return (f"<h2>Least familiar images ({flagged} of {len(kept)} below the threshold {model.threshold:.3f})</h2>"
            f"<div class=sub>familiarity: {html.escape(model.info()['method'])}; about "
            f"{100 * model.flag_rate:.0f}% of images like the training ones fall below the threshold</div>"
            f"<div class=gallery>{gallery}</div>")


def _mistakes(images: ImageSet, kept: np.ndarray, labels: np.ndarray, proba: np.ndarray, names: list[str]
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """(the wrong predictions, the GALLERY most confidently wrong, their figures as HTML)."""
    predicted = proba.argmax(1) if len(proba) else np.zeros(0, int)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-proba[wrong, predicted[wrong]])][:GALLERY] if len(wrong) else np.zeros(0, int)
    gallery = "".join(
        f'<figure><img src="{thumbnail(images.paths[kept[i]])}" alt="misclassified">'
        f"<figcaption>true <b>{html.escape(str(names[labels[i]]))}</b><br><span class=wrong>predicted "
        f"{html.escape(str(names[predicted[i]]))} ({proba[i, predicted[i]]:.2f})</span><br>"
        f"{html.escape(Path(images.paths[kept[i]]).name)}</figcaption></figure>"
        for i in worst
    )
    return wrong, worst, gallery


def _about(clf: Any, config: dict[str, Any]) -> list[list[Any]]:
    """The "Model and data" table's rows."""
    data = config.get("data", {})
    about = [["model", f"{clf.backbone_.name} ({clf.backbone_.weights})"], ["strategy", clf.strategy_],
             ["layers", " + ".join(clf.layers_)], ["labels" if clf.multilabel_ else "classes", len(clf.classes_)],
             ["input", "x".join(map(str, clf.backbone_.preprocess.input_size))]]
    if data:
        about += [["training data", f"{data.get('path')} ({data.get('split')})"],
                  ["training images", (config.get("fit") or {}).get("n_train_images") if data.get("multilabel")
                   else sum((data.get("train_counts") or {}).values())]]
    relabelled = config.get("relabelled")
    if relabelled is not None:
        about.append(["labels changed (--relabel)", ", ".join(f"{n} {split}" for split, n in relabelled.items())
                      or "none"])
    leaks = config.get("leaks")
    if leaks:
        from ..auditing.leakcheck import leak_line

        about.append(["leaks", leak_line(leaks, (config.get("validation") or {}).get("accuracy"),
                                         "subset accuracy" if clf.multilabel_ else "accuracy")])
    return about


def _class_sections(clf: Any, images: ImageSet, found: Any) -> tuple[list[str], list[str]]:
    """(cards, sections) of a one-class-per-image model: accuracy, per class, confusion matrix, worst mistakes."""
    proba, kept, _ = found
    labels, names = images.labels[kept], clf.classes_
    metrics = classification_metrics(labels, proba, names)
    wrong, worst, gallery = _mistakes(images, kept, labels, proba, names)
    per_class = [[n, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"]]
                 for n, m in metrics.get("per_class", {}).items()]
    matrix = np.asarray(metrics["confusion_matrix"]["matrix"]) if len(labels) else np.zeros((len(names),) * 2, int)
    accuracy, balanced = metrics["accuracy"], metrics.get("balanced_accuracy")
    cards = [f"<div class=card id=accuracy>accuracy<b>{accuracy:.4f}</b></div>" if accuracy is not None else "",
             f"<div class=card>balanced accuracy<b>{balanced:.4f}</b></div>" if balanced is not None else ""]
    sections = ["<h2>Per class</h2>", table(per_class, ["class", "precision", "recall", "F1", "images"]),
                "<h2>Confusion matrix</h2>", confusion_table(matrix, names),
                f"<h2>Most confidently wrong ({len(worst)} of {len(wrong)} errors)</h2><div class=gallery>{gallery}"
                "</div>"]
    return cards, sections


def build_report(clf: Any, images: ImageSet, title: str | None = None) -> str:
    """The report's HTML for ``clf`` scored on the labelled ``images``."""
    found = clf.predict_files(images.paths)
    _, kept, skipped = found
    config = getattr(clf, "config_", {})
    if clf.multilabel_:
        from .label_page import label_sections

        cards, sections = label_sections(clf, images, found)
    else:
        cards, sections = _class_sections(clf, images, found)
    run_dir = getattr(clf, "path_", None)
    curves = curves_figure(Path(run_dir) / "logs" / "metrics.csv") if run_dir else None
    parts = [
        f"<h1>{html.escape(title or 'headstart report')}</h1>",
        f"<div class=sub>{len(kept)} images scored from {html.escape(str(images.root or ''))}</div>",
        "<div class=cards>", *cards,
        f"<div class=card>images<b>{len(kept)}</b></div><div class=card>skipped<b>{len(skipped)}</b></div>",
        "</div>",
        "<h2>Model and data</h2>", table(_about(clf, config), ["", ""]), *sections,
    ]
    if found.familiarity is not None and len(kept):
        parts.append(unfamiliar_section(images, kept, found.familiarity, clf.familiarity_))
    if config.get("auto"):
        parts.append(auto_section(config["auto"]))
    if curves:
        parts += ["<h2>Training curves</h2>", f'<img class=plot alt="training curves" src="{curves}">']
    if skipped:
        parts += [f"<h2>Skipped files ({len(skipped)})</h2>", table([list(s) for s in skipped], ["file", "reason"])]
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title or 'headstart')}"
            f"</title>{GENERATOR}<style>{STYLE}</style></head><body>{''.join(parts)}{IMAGES_LOADED}</body></html>")


def write_report(clf: Any, images: ImageSet, out: str | os.PathLike, title: str | None = None) -> Path:
    """Write the report to ``out`` atomically."""
    out = Path(out).expanduser()
    write_atomic(out, build_report(clf, images, title).encode())
    return out
