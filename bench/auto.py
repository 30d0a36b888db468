"""The default path (`headstart fit DATA`, strategy auto) against its baselines, both sides in the same run.

    python bench/auto.py [speed] [search] [choice] [networks] [--datasets cats_vs_dogs dtd10 pneumoniamnist]

speed:  cold-cache wall time of the whole `headstart fit DATA` command against `--strategy feature-extractor` (each
        with its own empty cache), then the same command re-run on the warm cache with `--classifier svm` and back.
search: today's C search against the previous one (LogisticRegressionCV / GridSearchCV, copied here), same codes:
        seconds and validation accuracy.
choice: every candidate layer's cross-validated scores on training images and its validation accuracy, the layer
        auto chose, and the whole default `fit` (which fine-tunes large data) with its validation accuracy.
networks: issue 24's table: the cold default `fit` with each embedded network alone (its own best layer) and with
        `--model` naming Lite0 and Lite2, then all three (auto chooses the network, ranked at the widest join on a
        stratified 500 training images), each into an empty cache: validation accuracy and seconds, the chosen
        network, and the goals (auto at least the best of them alone minus 0.5 point; at most 1.6x Lite0 alone's
        time under 5000 images).
Validation images are used only to score here, never for a choice. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from headstart.auto.advice import advise
from headstart.codes.backbones import candidate_layers
from headstart.codes.create import create_backbone
from headstart.codes.extract import FeatureExtractor
from headstart.data.splits import find_splits
from headstart.heads.linear import fit_linear

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def fit_command(data: Path, cache: Path, *options: str) -> tuple[float, dict]:
    """Wall seconds of the whole `headstart fit` command (start-up, report and saving included), and its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "headstart.cli", "fit", str(data), "--out", f"{tmp}/m", "-q",
                              "--json", *options], capture_output=True, text=True,
                             env={**os.environ, "HEADSTART_CACHE_DIR": str(cache)})
        seconds = time.perf_counter() - started
    if run.returncode:
        raise SystemExit(run.stderr)
    return seconds, json.loads(run.stdout)


def speed(datasets: list[str]) -> None:
    for name in datasets:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            fe, fe_fit = fit_command(SHARED / name, Path(a), "--strategy", "feature-extractor")
            auto, auto_fit = fit_command(SHARED / name, Path(b))
            print(f"{name}: cold `fit --strategy feature-extractor` {fe:.1f} s "
                  f"(val {fe_fit['validation']['accuracy']:.4f}); cold `fit` (auto) {auto:.1f} s "
                  f"(val {auto_fit['validation']['accuracy']:.4f}, "
                  f"{'+'.join(auto_fit['layers'])}, deciding {auto_fit['seconds']['decide']:.1f} s): "
                  f"ratio {auto / fe:.2f} (goal <= 1.3)", flush=True)
            for classifier in ("svm", "logistic"):
                warm, fit = fit_command(SHARED / name, Path(b), "--classifier", classifier)
                print(f"  warm re-run `fit --classifier {classifier}`: {warm:.1f} s (val "
                      f"{fit['validation']['accuracy']:.4f}, C={fit['C']:.3g}): {auto / warm:.1f}x faster than the "
                      "cold run (goal >= 5)", flush=True)


def previous_search(codes: np.ndarray, labels: np.ndarray, classifier: str):
    """The C search headstart used before (scikit-learn), returning (predict_proba-like callable, C)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    grid = [float(c) for c in np.logspace(-4, 1, 6)]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if classifier == "logistic":
            scaler = StandardScaler().fit(codes)
            search = LogisticRegressionCV(Cs=grid, cv=folds, scoring="neg_log_loss", max_iter=2000)
            search.fit(scaler.transform(codes), labels)
            c = float(np.atleast_1d(search.C_)[0])
            model = make_pipeline(scaler, LogisticRegression(C=c, max_iter=2000)).fit(codes, labels)
        else:
            search = GridSearchCV(make_pipeline(StandardScaler(), LinearSVC(dual="auto", max_iter=5000)),
                                  {"linearsvc__C": grid}, cv=folds, scoring="accuracy").fit(codes, labels)
            model, c = search.best_estimator_, float(search.best_params_["linearsvc__C"])
    return model.predict, c


def search(datasets: list[str]) -> None:
    lite0 = create_backbone()
    extractor = FeatureExtractor(lite0, ["penultimate"])
    for name in datasets:
        splits = find_splits(SHARED / name)
        train, val = extractor.transform(splits.train.paths), extractor.transform(splits.val.paths)
        y, yv = splits.train.labels[train.kept], splits.val.labels[val.kept]
        k = len(splits.train.class_names)
        for classifier in ("logistic", "svm"):
            started = time.perf_counter()
            predict, c_old = previous_search(train.codes, y, classifier)
            old_s = time.perf_counter() - started
            old_acc = float((predict(val.codes) == yv).mean())
            started = time.perf_counter()
            head = fit_linear(train.codes, y, k, classifier)
            new_s = time.perf_counter() - started
            new_acc = float((head.predict_proba(val.codes).argmax(1) == yv).mean())
            shape = f"{train.codes.shape[0]}x{train.codes.shape[1]}"
            print(f"{name} {shape} {classifier}: previous {old_s:.2f} s C={c_old:.3g} val {old_acc:.4f} | "
                  f"now {new_s:.2f} s C={head.info['C']:.3g} (edge: "
                  f"{head.info['C_at_grid_edge']}) val {new_acc:.4f} | {old_s / new_s:.1f}x faster, "
                  f"{100 * (new_acc - old_acc):+.2f} points", flush=True)


def choice(datasets: list[str]) -> None:
    lite0 = create_backbone()
    parts = sorted({p for c in candidate_layers(lite0) for p in c.split("+")})
    for name in datasets:
        splits = find_splits(SHARED / name)
        advice = advise(lite0, splits.train)
        val = FeatureExtractor(lite0, parts).transform(splits.val.paths)
        offsets = np.cumsum([0, *val.widths])
        val_parts = {p: val.codes[:, offsets[i]:offsets[i + 1]] for i, p in enumerate(parts)}
        yv = splits.val.labels[val.kept]
        print(f"\n{name}: {'/'.join(advice.cell)}; measured {len(advice.measured.images)} of {len(splits.train)} "
              f"training images; auto's probe layer: {advice.layer}", flush=True)
        scores = {}
        for layer, evidence in advice.choice["candidates"].items():
            head = fit_linear(advice.measured.codes(layer), advice.measured.images.labels,
                              len(splits.train.class_names), search=advice.searches[layer])
            codes = np.concatenate([val_parts[p] for p in layer.split("+")], 1)
            scores[layer] = float((head.predict_proba(codes).argmax(1) == yv).mean())
            mark = "  <- auto" if layer == advice.layer else ""
            print(f"  {layer:<48} CV log loss {evidence['cv_log_loss']:.4f} (+{evidence['log_loss_above_lowest']:.4f}"
                  f" +- {evidence['standard_error']:.4f}{', tied' if evidence['tied'] else ''}) CV acc "
                  f"{evidence['cv_accuracy']:.4f}  val {scores[layer]:.4f}{mark}", flush=True)
        best = max(scores, key=scores.get)
        lowest = advice.choice["lowest_log_loss"]
        top_acc = max(advice.choice["candidates"], key=lambda c: advice.choice["candidates"][c]["cv_accuracy"])
        print(f"  best probe on val {best} {scores[best]:.4f}; auto's probe {scores[advice.layer]:.4f} (gap "
              f"{100 * (scores[best] - scores[advice.layer]):.2f} points); other rules: lowest log loss {lowest} "
              f"{scores[lowest]:.4f}, highest CV accuracy {top_acc} {scores[top_acc]:.4f}", flush=True)
        with tempfile.TemporaryDirectory() as cache:
            seconds, fit = fit_command(SHARED / name, Path(cache))
        print(f"  `headstart fit {name}` (auto, cold cache): {fit['auto']['decision']}; val "
              f"{fit['validation']['accuracy']:.4f} in {seconds:.0f} s; gap to the best probe "
              f"{100 * (scores[best] - fit['validation']['accuracy']):.2f} points", flush=True)


LITE = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


def networks(datasets: list[str]) -> None:
    choices = [",".join(LITE[::2]), ",".join(LITE)]  # Lite0 and Lite2 (the pair), and all three
    for name in datasets:
        runs = {}
        for model in [*LITE, *choices]:
            with tempfile.TemporaryDirectory() as cache:
                seconds, fit = fit_command(SHARED / name, Path(cache), "--model", model)
            runs[model] = (seconds, fit["validation"]["accuracy"], fit["model"])
            print(f"{name}: --model {model}: val {runs[model][1]:.4f} in {seconds:.1f} s"
                  + (f" (chose {fit['model']})" if "," in model else ""), flush=True)
        for model in choices:
            best = max(runs[m][1] for m in model.split(","))
            seconds, accuracy, chosen = runs[model]
            print(f"{name}: auto among {model}: {chosen} {accuracy:.4f} against the best of them alone {best:.4f} "
                  f"({100 * (accuracy - best):+.2f} points; goal >= -0.5) and Lite0 alone {runs[LITE[0]][1]:.4f}; "
                  f"{seconds / runs[LITE[0]][0]:.2f}x Lite0 alone's time (goal <= 1.6 under 5000 images)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["speed", "search", "choice"])
    parser.add_argument("--datasets", nargs="+")
    args = parser.parse_args()
    for part in args.parts:
        default = ["cats_vs_dogs", "dtd10", "pneumoniamnist"] if part == "choice" else ["cats_vs_dogs", "dtd10"]
        print(f"== {part}", flush=True)
        {"speed": speed, "search": search, "choice": choice, "networks": networks}[part](args.datasets or default)


if __name__ == "__main__":
    main()
