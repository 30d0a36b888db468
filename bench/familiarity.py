"""Familiarity: how many images unlike the training data a model flags, and what it costs.

    python bench/familiarity.py [--datasets cats_vs_dogs dtd10]

For each dataset, the default `fit` (auto) model is trained on its training split; then its validation images (like
the training ones) and imagenet_samples (unlike: for cats_vs_dogs, every class but dogs, wolves, foxes and cats, i.e.
class_index outside 151-293) are scored. Prints the share flagged in each, the AUROC of familiarity for telling them
apart, and the cost: familiarity's share of the cold fit, and of prediction (the same files, with and without it).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import headstart
from headstart.data.splits import find_splits

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def auroc(familiar: np.ndarray, unfamiliar: np.ndarray) -> float:
    """Probability that a random familiar image scores above a random unfamiliar one (ties count half)."""
    scores = np.r_[familiar, unfamiliar]
    ranks = scores.argsort().argsort() + 1.0
    for value in np.unique(scores):  # average ranks of ties
        ranks[scores == value] = ranks[scores == value].mean()
    n, m = len(familiar), len(unfamiliar)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * m))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cats_vs_dogs", "dtd10"])
    args = parser.parse_args()
    rows = list(csv.DictReader((SHARED / "imagenet_samples" / "labels.csv").read_text().splitlines()))
    for name in args.datasets:
        keep = [r for r in rows if name != "cats_vs_dogs" or not 151 <= int(r["class_index"]) <= 293]
        imagenet = [SHARED / "imagenet_samples" / "images" / r["filename"] for r in keep]
        splits = find_splits(SHARED / name)
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            clf = headstart.TransferClassifier(strategy="auto", cache_dir=cache).fit(splits.train)
            fit_s = time.perf_counter() - started
            val = clf.predict_files(splits.val.paths)
            model = clf.familiarity_
            seconds = {}
            for label, familiarity in (("without", None), ("with", model)):  # cold codes, the same ONNX export
                fresh = Path(cache) / label
                shutil.copytree(Path(cache) / "onnx", fresh / "onnx")
                clf.cache_dir, clf.familiarity_, clf._extractor_key = fresh, familiarity, None
                started = time.perf_counter()
                other = clf.predict_files(imagenet)
                seconds[label] = time.perf_counter() - started
            with_s, without_s = seconds["with"], seconds["without"]
            penultimate = np.random.default_rng(0).normal(size=(len(imagenet), model.bank.shape[1]))
            started = time.perf_counter()
            model.score(penultimate)
            score_s = time.perf_counter() - started
        threshold = model.threshold
        print(f"{name} ({'+'.join(clf.layers_)}; familiarity {model.info()['method']}, threshold {threshold:.4f}):\n"
              f"  validation flagged {np.mean(val.familiarity < threshold):.3f} of {len(val.kept)} (goal <= 0.06); "
              f"imagenet_samples flagged {np.mean(other.familiarity < threshold):.3f} of {len(other.kept)} "
              f"(goal >= 0.90); AUROC {auroc(val.familiarity, other.familiarity):.4f}\n"
              f"  cost: fitting it {clf.fit_info_['seconds']['familiarity']:.2f} s of a {fit_s:.1f} s cold fit "
              f"({100 * clf.fit_info_['seconds']['familiarity'] / fit_s:.1f}%, goal < 5%); predicting "
              f"{len(imagenet)} files {with_s:.2f} s with it, {without_s:.2f} s without "
              f"({100 * (with_s / without_s - 1):+.1f}%, goal < 5%; the scoring itself {1000 * score_s:.0f} ms, "
              f"{100 * score_s / without_s:.1f}%)", flush=True)


if __name__ == "__main__":
    main()
