"""Multi-label: the default `headstart fit DATA --labels CSV` against scikit-learn's baseline, both sides in one run.

    python bench/multilabel.py [--datasets miml_scenes cifar_mosaics dtd_pairs]

Baseline: ``OneVsRestClassifier(LogisticRegression)`` on the same penultimate codes (standardised), its C picked on
the validation images (by mAP: the baseline's best case), every label called at 0.5. Ours: the whole default command
(auto: layers scored by cross-validated log loss, a C and a threshold per label), which never sees the validation
images before scoring them. Both on the same split: miml_scenes' 0.2 held out by iterative stratification (seed 0,
what `fit --labels` does by default); the generated sets have their own validation CSV (`--val-labels`).

Generated sets, data the tool was not tuned on (written to a temporary folder, never to the repository):
- cifar_mosaics: 2 x 2 mosaics of cifar10 training images (64 px), labelled with the classes they show (1-3).
- dtd_pairs: two dtd10 textures side by side (224 x 112 px), labelled with both (or one, when they are the same).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def mosaics(out: Path, n_train: int = 600, n_val: int = 300, seed: int = 0) -> None:
    """2 x 2 mosaics of cifar10 images from 2-3 classes, labelled with the classes they show."""
    rng = np.random.default_rng(seed)
    root = SHARED / "cifar10" / "train"
    classes = sorted(p.name for p in root.iterdir())
    files = {c: sorted((root / c).iterdir()) for c in classes}
    (out / "images").mkdir(parents=True)
    for name, count in (("labels.csv", n_train), ("val.csv", n_val)):
        rows = []
        for i in range(count):
            chosen = rng.choice(len(classes), rng.integers(2, 4), replace=False)
            tiles = [int(chosen[t]) if t < len(chosen) else int(rng.choice(chosen)) for t in range(4)]
            rng.shuffle(tiles)
            canvas = Image.new("RGB", (64, 64))
            for t, c in enumerate(tiles):
                tile = Image.open(files[classes[c]][rng.integers(len(files[classes[c]]))]).convert("RGB")
                canvas.paste(tile.resize((32, 32)), (32 * (t % 2), 32 * (t // 2)))
            file = f"{name[:-4]}-{i}.jpg"
            canvas.save(out / "images" / file, quality=90)
            rows.append([file, " ".join(sorted(classes[c] for c in set(tiles)))])
        _write(out / name, ["filename", "labels"], rows)


def texture_pairs(out: Path, n_train: int = 500, n_val: int = 250, seed: int = 0) -> None:
    """Two dtd10 textures side by side (a 112 px crop of each), labelled with both."""
    rng = np.random.default_rng(seed)
    sources = {"labels.csv": SHARED / "dtd10" / "train", "val.csv": SHARED / "dtd10" / "val"}
    classes = sorted(p.name for p in sources["labels.csv"].iterdir())
    (out / "images").mkdir(parents=True)
    for name, count in (("labels.csv", n_train), ("val.csv", n_val)):
        files = {c: sorted((sources[name] / c).iterdir()) for c in classes}
        rows = []
        for i in range(count):
            pair = rng.choice(len(classes), 2, replace=bool(rng.random() < 0.2))
            canvas = Image.new("RGB", (224, 112))
            for t, c in enumerate(pair):
                image = Image.open(files[classes[c]][rng.integers(len(files[classes[c]]))]).convert("RGB")
                side = min(image.size)
                canvas.paste(image.crop((0, 0, side, side)).resize((112, 112)), (112 * t, 0))
            file = f"{name[:-4]}-{i}.jpg"
            canvas.save(out / "images" / file, quality=90)
            row = [1 if j in set(pair.tolist()) else 0 for j in range(len(classes))]
            rows.append([file, *row])
        _write(out / name, ["filename", *classes], rows)


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def baseline(data: Path, labels: str, val_labels: str | None) -> tuple[dict, dict]:
    """(scores of OneVsRest logistic regression at 0.5, C picked on validation by mAP; how it was picked)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from headstart.codes.create import create_backbone
    from headstart.codes.extract import FeatureExtractor
    from headstart.data.splits import find_label_splits
    from headstart.defaults import DEFAULT_MODEL

    splits = find_label_splits(data, data / labels, None if val_labels is None else data / val_labels)
    extractor = FeatureExtractor(create_backbone(DEFAULT_MODEL), ["penultimate"], None)
    train, val = extractor.transform(splits.train.paths), extractor.transform(splits.val.paths)
    y_train, y_val = splits.train.targets[train.kept], splits.val.targets[val.kept]
    best = None
    for C in np.logspace(-4, 1, 11):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(C=C, max_iter=3000)))
            proba = model.fit(train.codes, y_train).predict_proba(val.codes)
        found = scores(y_val, proba, (proba >= 0.5).astype(np.uint8))
        if best is None or found["map"] > best[0]["map"]:
            best = found, {"C": float(C)}
    return best


def scores(truth: np.ndarray, proba: np.ndarray, called: np.ndarray) -> dict:
    """mAP, micro-F1 and Hamming loss, as scikit-learn computes them."""
    from sklearn.metrics import average_precision_score, f1_score, hamming_loss

    return {"map": float(average_precision_score(truth, proba, average="macro")),
            "micro_f1": float(f1_score(truth, called, average="micro", zero_division=0)),
            "hamming_loss": float(hamming_loss(truth, called))}


def ours(data: Path, labels: str, val_labels: str | None) -> tuple[dict, float, dict]:
    """(validation scores, seconds, fit JSON) of the whole default command on a cold cache."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "headstart", "fit", str(data), "--labels", labels, "--out", f"{tmp}/model",
                   "--cache-dir", f"{tmp}/cache", "--json", "--quiet"]
        if val_labels:
            command += ["--val-labels", val_labels]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        result = json.loads(done.stdout)
    val = result["validation"]
    return {"map": val["map"], "micro_f1": val["micro_f1"], "hamming_loss": val["hamming_loss"]}, seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["miml_scenes", "cifar_mosaics", "dtd_pairs"])
    args = parser.parse_args()
    print(f"{'dataset':<15}{'side':<44}{'mAP':>8}{'micro-F1':>10}{'Hamming':>9}{'seconds':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            if name == "miml_scenes":
                data, labels, val_labels = SHARED / "miml_scenes", "labels.csv", None
            else:
                data, labels, val_labels = Path(tmp) / name, "labels.csv", "val.csv"
                (mosaics if name == "cifar_mosaics" else texture_pairs)(data)
            started = time.perf_counter()
            base, picked = baseline(data, labels, val_labels)
            base_s = time.perf_counter() - started
            mine, seconds, result = ours(data, labels, val_labels)
            layer = "+".join(result["layers"])
            print(f"{name:<15}{'OneVsRest logistic, C ' + format(picked['C'], '.3g') + ' (on val), 0.5':<44}"
                  f"{base['map']:>8.4f}{base['micro_f1']:>10.4f}{base['hamming_loss']:>9.4f}{base_s:>9.1f}")
            print(f"{'':<15}{'headstart fit --labels (' + layer[:26] + ')':<44}"
                  f"{mine['map']:>8.4f}{mine['micro_f1']:>10.4f}{mine['hamming_loss']:>9.4f}{seconds:>9.1f}")
            print(f"{'':<15}{'difference (ours - baseline)':<44}{mine['map'] - base['map']:>+8.4f}"
                  f"{mine['micro_f1'] - base['micro_f1']:>+10.4f}{mine['hamming_loss'] - base['hamming_loss']:>+9.4f}")
            thresholds = result["classifier_search"]["thresholds"]
            print(f"{'':<15}thresholds {' '.join(f'{t:.2f}' for t in thresholds)}; "
                  f"{result['n_train_images']} train / {result['validation']['n_images']} validation images")


if __name__ == "__main__":
    main()
