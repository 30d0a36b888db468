"""``headstart fit`` as one library call: fit on the training split, score the validation split, save the model
folder (atomically), write its report; the typed result is what ``fit --json`` prints.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .data.splits import Splits
from .results import DataSummary, FitResult


def summarise_data(data: str | Path, splits: Splits, class_names: list[str]) -> DataSummary:
    """Where the images came from, how many per class, and how imbalanced they are."""
    train = splits.train.counts()
    summary: DataSummary = {
        "path": str(Path(data).resolve()), "split": splits.how, "class_names": class_names, "train_counts": train,
        "val_counts": splits.val.counts() if splits.val else None,
        "imbalance_ratio": round(max(train.values()) / max(1, min(train.values())), 2)}
    if splits.train.multilabel:
        summary.update(multilabel=True, train_images_without_label=int((splits.train.targets.sum(1) == 0).sum()))
    if splits.notes:
        summary["notes"] = list(splits.notes)
    return summary


def fit_folder(clf, data: str | Path, splits: Splits, out: str | Path, overwrite: bool = False,
               workdir: Path | None = None, report: bool = True, leak_check: bool = True, spent: float = 0.0
               ) -> FitResult | None:
    """Fit ``clf`` (a TransferClassifier) on ``splits.train``, save it to ``out`` with its validation metrics and
    report, and return what was done; None in the other processes of a data-parallel run (rank 0 writes).
    ``workdir``: where a network trains (checkpoints, logs), removed once the model is saved. ``leak_check``:
    count validation images that repeat a training image, and score validation without them too. ``spent``:
    seconds of auto's budget used before (the command's start-up); scoring validation is kept within it too."""
    out = Path(out).expanduser()
    clf.fit(splits.train, after_images=len(splits.val) if splits.val is not None else 0, spent=spent)
    network = clf.strategy_ in ("fine-tune", "scratch")
    if network and not clf.fit_info_["training"]["is_global_zero"]:
        return None
    auto = getattr(clf, "auto_", None)
    clock = [time.perf_counter()]
    seconds = dict(clf.fit_info_["seconds"])

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        seconds[name] = round(clock[-1] - clock[-2], 3)

    val = clf.evaluate(splits.val) if splits.val is not None else None
    lap("validation")
    leaks = None
    if leak_check and splits.val is not None:
        from .auditing.leakcheck import check_leaks

        leaks = check_leaks(clf, splits.train, splits.val, str(data))
        lap("leak_check")
    summary = summarise_data(data, splits, clf.classes_)
    result: FitResult = {
        "out": str(out), "model": clf.backbone_.name, "weights": clf.backbone_.weights, "precision": clf.precision_,
        "strategy": clf.strategy_, "layers": clf.layers_, "classifier": clf.classifier,
        "C": clf.head_.info.get("C"), "data": summary, "validation": val,
        **{k: v for k, v in clf.fit_info_.items() if k != "classifier"}, "classifier_search": clf.head_.info,
        "seconds": seconds}
    if auto:
        result["auto"] = auto
    if leaks is not None:
        result["leaks"] = leaks
    if splits.excluded:
        result["excluded"] = splits.excluded
    if splits.relabelled is not None:
        result["relabelled"] = splits.relabelled
    files = {"logs/metrics.csv": workdir / "logs" / "metrics.csv"} if network and workdir else None
    extra = {"data": summary, "validation": val, "fit": clf.fit_info_, "auto": auto, "leaks": leaks,
             "relabelled": splits.relabelled}
    clf.save(out, overwrite=overwrite, extra=extra, files=files)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
    lap("save")
    if report and splits.val is not None:
        from .report.html import write_report

        result["report"] = str(write_report(clf, splits.val, out / "report.html", f"headstart: {out.name}"))
        lap("report")
    return result
