"""The audit against planted faults and against a baseline, both in the same run.

    python bench/audit.py [labels] [leaks] [clean] [outliers] [quality] [cost] [fitcost] [shared]

labels:   10% and 20% of training labels flipped at random (cats_vs_dogs, dtd10): precision, recall and F1 of the
          flagged label errors, the area under the precision-recall curve of the ranking, and the baseline "the
          out-of-fold prediction differs from the label" on the same out-of-fold probabilities.
leaks:    copies of 50 training images per dataset (cats_vs_dogs, dtd10) put into validation, by each of exact copy,
          JPEG quality 50, half size, a 10% crop, a mirror image and +20% brightness: recall per kind, as leaks.
clean:    nothing planted: near-duplicate pairs flagged on imagenet_samples and on each shared set's own images.
outliers: 3% of dtd10's training images replaced by imagenet_samples: AUROC of the outlier score, precision and
          recall at the default threshold.
quality:  darkened (x0.15), blurred (Gaussian radius 3) and 16 x 16 copies of 50 images: recall per kind, and the
          share of the 100 clean originals flagged for any of those kinds.
cost:     cold `headstart audit` against cold `headstart extract` on cats_vs_dogs (each with an empty cache), and a
          warm audit.
fitcost:  what the fit pays for trusting less: a cold default `fit` of cats_vs_dogs and dtd10 and its leak check's
          seconds; with --previous SRC (another checkout's src/), the same fit by that code, and the ratio.
shared:   what the audit finds on every shared dataset as it is: counts per kind.
Planted files go to a temporary folder; the shared data is never written to. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from headstart import audit
from headstart.data.folders import ImageSet, read_class_folders

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COPIES = {
    "exact": None,
    "jpeg50": lambda im: im,
    "half": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC),
    "crop10": lambda im: im.crop((int(im.width * .05), int(im.height * .05), int(im.width * .95),
                                  int(im.height * .95))),
    "flip": ImageOps.mirror,
    "bright20": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
}
DAMAGE = {
    "dark": lambda im: ImageEnhance.Brightness(im).enhance(0.15),
    "blurry": lambda im: im.filter(ImageFilter.GaussianBlur(3)),
    "small": lambda im: im.resize((16, 16), Image.Resampling.BICUBIC),
}


def prf(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = float((flagged & truth).sum())
    precision, recall = tp / max(1, flagged.sum()), tp / max(1, truth.sum())
    return precision, recall, 2 * precision * recall / max(1e-12, precision + recall)


def average_precision(score: np.ndarray, truth: np.ndarray) -> float:
    order = np.argsort(-score)
    hits = truth[order].astype(float)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / max(1, hits.sum()))


def auroc(score: np.ndarray, truth: np.ndarray) -> float:
    ranks = np.argsort(np.argsort(score)) + 1.0
    n_pos, n_neg = truth.sum(), (~truth).sum()
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def labels() -> None:
    from headstart.auditing.duplicates import find_pairs, groups_of
    from headstart.auditing.labels import find_label_issues
    from headstart.auditing.run import code_images, out_of_fold
    from headstart.codes.backbones import PENULTIMATE
    from headstart.codes.create import create_backbone
    from headstart.codes.extract import FeatureExtractor
    from headstart.data.imagestats import STATS

    extractor = FeatureExtractor(create_backbone("tf_efficientnet_lite0"), [PENULTIMATE, STATS])
    print("| data | flipped | flagged | precision | recall | F1 | AP of ranking | baseline P / R / F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("cats_vs_dogs", "dtd10"):
        train = read_class_folders(SHARED / name / "train")
        coded = code_images(extractor, train)
        clean_images = coded.images
        groups = groups_of(len(coded.codes), find_pairs(coded.codes, coded.stats))
        for rate in (0.1, 0.2):
            rng = np.random.default_rng(1)
            k = len(train.class_names)
            noisy = clean_images.labels.copy()
            flip = rng.choice(len(noisy), int(rate * len(noisy)), replace=False)
            noisy[flip] = (noisy[flip] + rng.integers(1, k, len(flip))) % k
            truth = np.zeros(len(noisy), bool)
            truth[flip] = True
            coded.images = ImageSet(clean_images.paths, noisy, train.class_names)
            proba, _ = out_of_fold(coded, groups, seed=0)
            issues = find_label_issues(proba, noisy)
            p, r, f = prf(issues.flagged, truth)
            bp, br, bf = prf(proba.argmax(1) != noisy, truth)
            print(f"| {name} | {rate:.0%} | {issues.flagged.sum()} | {p:.3f} | {r:.3f} | **{f:.3f}** | "
                  f"{average_precision(issues.score, truth):.3f} | {bp:.3f} / {br:.3f} / {bf:.3f} |", flush=True)


def plant_copies(tmp: Path, name: str, n: int, seed: int = 0) -> tuple[ImageSet, dict[str, list[tuple[Path, Path]]]]:
    """Copies of ``n`` training images of ``name`` by every kind in COPIES, filed under their true class."""
    train = read_class_folders(SHARED / name / "train")
    pick = np.random.default_rng(seed).choice(len(train), n, replace=False)
    planted: dict[str, list[tuple[Path, Path]]] = {}
    for kind, change in COPIES.items():
        for i in pick:
            source = train.paths[i]
            target = tmp / name / train.class_names[train.labels[i]] / f"{kind}_{source.stem}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            if change is None:
                target.write_bytes(source.read_bytes())
            else:
                change(Image.open(source).convert("RGB")).save(target, quality=50 if kind == "jpeg50" else 95)
            planted.setdefault(kind, []).append((target, source))
    return train, planted


def leaks() -> None:
    recall: dict[str, list[bool]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cats_vs_dogs", "dtd10"):
            train, planted = plant_copies(Path(tmp), name, 50)
            val_dir = SHARED / name / "val"
            val = read_class_folders(val_dir, train.class_names)
            copies = [c for pairs in planted.values() for c, _ in pairs]
            names = [train.class_names.index(c.parent.name) for c in copies]
            val = ImageSet(val.paths + copies, np.concatenate([val.labels, names]), train.class_names)
            result = audit(train_images=train, val_images=val)
            found = {(f["path"], f["other"]) for f in result["findings"] if f["issue"] == "leak"}
            found_paths = {f["path"] for f in result["findings"] if f["issue"] == "leak"}
            real = result["counts"]["leak"] - sum(str(c) in found_paths for c in copies)
            for kind, pairs in planted.items():
                recall.setdefault(kind, []).extend((str(c), str(s)) in found for c, s in pairs)
            print(f"{name}: {result['counts']['leak']} leaks flagged, {real} of them among the real val images")
    print("| copy | recall as a leak (100 copies: 50 cats_vs_dogs + 50 dtd10) |")
    print("|---|---|")
    for kind, hits in recall.items():
        print(f"| {kind} | **{np.mean(hits):.2f}** ({sum(hits)}/{len(hits)}) |")


def clean() -> None:
    for name in ("imagenet_samples", "cats_vs_dogs", "dtd10", "pneumoniamnist"):
        root = SHARED / name
        if name == "imagenet_samples":
            from headstart.data.folders import files_under

            files = files_under(root / "images")
            result = audit(train_images=ImageSet(files, np.full(len(files), -1), [], root))
        else:
            result = audit(root)
        sets = result["duplicate_sets"]
        print(f"{name}: near-duplicate findings {result['counts']['near_duplicate']}, exact "
              f"{result['counts']['exact_duplicate']}, leaks {result['counts']['leak']}, "
              f"in {len(sets)} sets (sizes {sorted((len(s['paths']) for s in sets), reverse=True)[:10]})")
        for s in sets[:5]:
            print(f"   {s['split']} {s['kind']}: {' | '.join(Path(p).name for p in s['paths'][:4])}")


def outliers() -> None:
    train = read_class_folders(SHARED / "dtd10" / "train")
    from headstart.data.folders import files_under

    strays = files_under(SHARED / "imagenet_samples" / "images")
    rng = np.random.default_rng(0)
    n = int(round(0.03 * len(train)))
    replaced = rng.choice(len(train), n, replace=False)
    paths = list(train.paths)
    for i, stray in zip(replaced, rng.choice(len(strays), n, replace=False)):
        paths[i] = strays[stray]
    truth = np.zeros(len(paths), bool)
    truth[replaced] = True
    result = audit(train_images=ImageSet(paths, train.labels, train.class_names))
    from headstart.auditing.quality import outlier_scores
    from headstart.auditing.run import code_images
    from headstart.codes.backbones import PENULTIMATE
    from headstart.codes.create import create_backbone
    from headstart.codes.extract import FeatureExtractor
    from headstart.data.imagestats import STATS

    coded = code_images(FeatureExtractor(create_backbone("tf_efficientnet_lite0"), [PENULTIMATE, STATS]),
                        ImageSet(paths, train.labels, train.class_names))
    score, threshold = outlier_scores(coded.codes)
    flagged = np.array([str(p) in {f["path"] for f in result["findings"] if f["issue"] == "outlier"}
                        for p in paths])
    p, r, f = prf(flagged, truth)
    print(f"dtd10 with {n} imagenet_samples strays ({n / len(paths):.1%}): outlier AUROC **{auroc(score, truth):.3f}**;"
          f" at the default threshold {threshold:.3f}: {flagged.sum()} flagged, precision {p:.3f}, recall {r:.3f}")
    labelled = {f["path"] for f in result["findings"] if f["issue"] == "label_error"}
    print(f"   the same strays flagged as label errors: {sum(str(paths[i]) in labelled for i in replaced)} of {n}")


def quality() -> None:
    rng = np.random.default_rng(0)
    for name in ("cats_vs_dogs", "dtd10"):
        train = read_class_folders(SHARED / name / "train")
        originals = [train.paths[i] for i in rng.choice(len(train), 25, replace=False)]
        with tempfile.TemporaryDirectory() as tmp:
            damaged: dict[str, list[Path]] = {}
            for kind, change in DAMAGE.items():
                for i, source in enumerate(originals):
                    target = Path(tmp) / f"{kind}_{i}.jpg"
                    change(Image.open(source).convert("RGB")).save(target, quality=95)
                    damaged.setdefault(kind, []).append(target)
            files = list(train.paths) + [p for paths in damaged.values() for p in paths]
            result = audit(train_images=ImageSet(files, np.full(len(files), -1), [], None))
        flagged = {(f["path"], f["issue"]) for f in result["findings"]}
        recall = {kind: np.mean([(str(p), kind) in flagged for p in paths]) for kind, paths in damaged.items()}
        false = [p for p in originals if any((str(p), kind) in flagged for kind in DAMAGE)]
        clean = {f["path"] for f in result["findings"] if f["issue"] in DAMAGE} & {str(p) for p in train.paths}
        print(f"{name}: recall " + ", ".join(f"{k} **{v:.2f}**" for k, v in recall.items())
              + f" (25 copies each); clean originals flagged dark/blurry/small: {len(false)} of 25; all "
              f"{len(train)} clean training images: {len(clean)} ({len(clean) / len(train):.2%})", flush=True)


def command(*args: str, cache: Path) -> float:
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "headstart.cli", *args, "-q"], capture_output=True, text=True,
                         env={**os.environ, "HEADSTART_CACHE_DIR": str(cache)})
    if run.returncode:
        raise SystemExit(run.stderr)
    return time.perf_counter() - started


def cost() -> None:
    data = str(SHARED / "cats_vs_dogs")
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        extract = command("extract", data, cache=Path(a))
        cold = command("audit", data, "--json", cache=Path(b))
        warm = command("audit", data, "--json", cache=Path(b))
        fit_after = command("fit", data, "--out", f"{b}/model", cache=Path(b))
    print(f"cats_vs_dogs (3000 images): cold `extract` {extract:.1f} s, cold `audit` {cold:.1f} s: ratio "
          f"**{cold / extract:.2f}** (goal <= 1.2); warm `audit` **{warm:.1f} s** (goal <= 5); a `fit` after the "
          f"audit {fit_after:.1f} s")


def _fit(data: Path, src: str | None) -> tuple[float, dict]:
    """Wall seconds and JSON of a cold default `headstart fit` (``src``: another checkout's code)."""
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "HEADSTART_CACHE_DIR": cache, **({"PYTHONPATH": src} if src else {})}
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "headstart.cli", "fit", str(data), "--out", f"{out}/m", "-q",
                              "--json"], capture_output=True, text=True, env=env)
        if run.returncode:
            raise SystemExit(run.stderr)
        return time.perf_counter() - started, json.loads(run.stdout)


def fitcost(previous: str | None = None) -> None:
    for name in ("cats_vs_dogs", "dtd10"):
        wall, result = _fit(SHARED / name, None)
        line = (f"{name}: cold `fit` {wall:.1f} s; its leak check {result['leaks']['seconds']:.2f} s "
                f"({result['leaks']['seconds'] / wall:.1%}); {result['leaks']['n_leaks']} leaks, val "
                f"{result['validation']['accuracy']:.4f}, without them {result['leaks'].get('accuracy_without_leaks')}")
        if previous:  # the whole difference: figures measured while decoding, grouped folds, the leak check
            before, old = _fit(SHARED / name, previous)
            line += (f"; previous release {before:.1f} s (val {old['validation']['accuracy']:.4f}): "
                     f"**{wall / before:.2f}x** (goal <= 1.05)")
        print(line, flush=True)


def shared() -> None:
    for name in ("cats_vs_dogs", "dtd10", "pneumoniamnist", "cifar10", "miml_scenes", "imagenet_samples"):
        root = SHARED / name
        if name in ("miml_scenes", "imagenet_samples"):
            root = root / "images"
        started = time.perf_counter()
        result = audit(root)
        counts = {k: v for k, v in result["counts"].items() if v}
        print(f"{name} ({result['data']['train_images']} + {result['data']['val_images']} images, "
              f"{time.perf_counter() - started:.0f} s): {json.dumps(counts)}", flush=True)
        for issue in ("exact_duplicate", "near_duplicate", "leak", "label_error", "outlier"):
            top = [f for f in result["findings"] if f["issue"] == issue][:3]
            for f in top:
                print(f"   {issue} {f['score']:.3f} {f['path']} {f['other']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ("labels", "leaks", "clean", "outliers", "quality", "cost", "fitcost", "shared")
    parser.add_argument("parts", nargs="*", choices=parts, default=list(parts[:-1]))
    parser.add_argument("--previous", help="src/ of another checkout, for fitcost's comparison")
    args = parser.parse_args()
    for part in args.parts:
        print(f"\n## {part}", flush=True)
        globals()[part](args.previous) if part == "fitcost" else globals()[part]()


if __name__ == "__main__":
    main()
