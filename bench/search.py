"""The C search on many classes: the walk up the C grid with warm starts against the batched search, same run.

    python bench/search.py [table] [layers] [fit] [--classes 2 10 100 1000]

table:  generated codes (30 training and 10 validation images per class, 1984 columns, as Lite0's widest candidate
        layer): seconds of the default C search, the C it chose, its out-of-fold log loss and the validation accuracy
        of the final fit at that C, for the previous search (every C of the grid solved at once) and today's.
        Below PATH_CLASSES classes both are the batched search.
layers: a 100-class set of real images (cifar_styles: cifar10's 10 classes x 10 global styles such as grayscale,
        inverted, tinted, blurred, flipped; 30 training and 10 validation images each, generated in a temporary
        folder): every candidate layer scored both ways, the layer auto's tie rule chooses from each, and the
        validation accuracy of each choice.
fit:    the whole cold `headstart fit` (auto: Lite0 alone, and the default choice of network) against
        `--strategy feature-extractor` (Lite0) on cifar_styles.
Validation images are only scored here, never used for a choice. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import headstart.heads.linear as linear

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _tint(channel: int):
    def tint(image: Image.Image) -> Image.Image:
        bands = list(image.split())
        bands[channel] = bands[channel].point(lambda v: min(255, v + 90))
        return Image.merge("RGB", bands)
    return tint


STYLES = {"plain": lambda im: im, "gray": lambda im: ImageOps.grayscale(im).convert("RGB"), "invert": ImageOps.invert,
          "red": _tint(0), "green": _tint(1), "blue": _tint(2), "blur": lambda im: im.resize((16, 16)).resize((32, 32)),
          "posterize": lambda im: ImageOps.posterize(im, 2),
          "flip": lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
          "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_90)}


def cifar_styles(out: Path, per_train: int = 30, per_val: int = 10, seed: int = 0) -> None:
    """out/{train,val}/<class>-<style>/: 100 classes of cifar10 images, each class one object kind in one style."""
    rng = np.random.default_rng(seed)
    root = SHARED / "cifar10" / "train"
    for name in sorted(p.name for p in root.iterdir()):
        files = sorted((root / name).iterdir())
        picked = [files[i] for i in rng.permutation(len(files))[:len(STYLES) * (per_train + per_val)]]
        for s, (style, change) in enumerate(STYLES.items()):
            for k in range(per_train + per_val):
                folder = out / ("train" if k < per_train else "val") / f"{name}-{style}"
                folder.mkdir(parents=True, exist_ok=True)
                image = Image.open(picked[s * (per_train + per_val) + k]).convert("RGB")
                change(image).save(folder / f"{k}.jpg", quality=90)


def generated(n_classes: int, per_class: int, width: int = 1984, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Codes like a CNN's: non-negative, class structure in a low-dimensional subspace, noise around it."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(0, 1 / 8, (64, width))
    means = rng.normal(0, 1, (n_classes, 64))
    labels = np.repeat(np.arange(n_classes), per_class)
    latent = means[labels] + rng.normal(0, 1.6, (len(labels), 64))
    codes = np.maximum(latent @ basis + rng.normal(0, 0.3, (len(labels), width)), 0)
    return codes.astype(np.float32), labels


def timed_search(codes: np.ndarray, labels: np.ndarray, k: int, previous: bool):
    """(search, seconds): the default C search, or the previous one (the batched search at every class count)."""
    kept = linear.PATH_CLASSES
    linear.PATH_CLASSES = 10**9 if previous else kept
    try:
        started = time.perf_counter()
        return linear.search_C(codes, labels, k), time.perf_counter() - started
    finally:
        linear.PATH_CLASSES = kept


def accuracy(train: np.ndarray, labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray, k: int, C: float) -> float:
    head = linear.fit_linear(train, labels, k, C=C)
    return float((head.predict_proba(val).argmax(1) == val_labels).mean())


def table(classes: list[int]) -> None:
    warm_up, y = generated(3, 10)
    linear.search_C(warm_up, y, 3)  # torch's first call pays its start-up; keep it out of the figures
    print(f"{'classes':>8}{'rows':>7}  {'side':<10}{'seconds':>9}{'C':>9}{'cv log loss':>13}{'val acc':>9}")
    for k in classes:
        codes, all_labels = generated(k, 40, seed=k)
        is_val = np.arange(len(all_labels)) % 40 >= 30  # 30 training and 10 validation images per class
        train, labels, val, val_labels = codes[~is_val], all_labels[~is_val], codes[is_val], all_labels[is_val]
        rows = min(len(labels), linear.SEARCH_MAX_ROWS)
        sides = ["now"] if k < linear.PATH_CLASSES or k >= 1000 else ["previous", "now"]  # below: the same search;
        # 1000 classes at once would hold 45 x 8000 x 1000 logits and their gradients (several GB)
        found = {}
        for side in sides:
            search, seconds = timed_search(train, labels, k, side == "previous")
            found[side] = seconds
            acc = accuracy(train, labels, val, val_labels, k, search.C)
            print(f"{k:>8}{rows:>7}  {side:<10}{seconds:>9.1f}{search.C:>9.3g}{search.cv_log_loss:>13.4f}{acc:>9.4f}")
        if len(found) == 2:
            print(f"{'':>17}{'speed-up':<10}{found['previous'] / found['now']:>8.1f}x")


def layers(data: Path) -> None:
    from headstart.auto.layers import choose_layer
    from headstart.auto.measure import measure_codes
    from headstart.codes.backbones import candidate_layers, create_backbone
    from headstart.codes.extract import FeatureExtractor
    from headstart.data.splits import find_splits
    from headstart.defaults import DEFAULT_MODEL

    splits = find_splits(data)
    backbone = create_backbone(DEFAULT_MODEL)
    candidates = candidate_layers(backbone)
    parts = sorted({p for c in candidates for p in c.split("+")})
    extractor = FeatureExtractor(backbone, parts, None)
    measured = measure_codes(extractor, splits.train, False, None)
    val = extractor.transform(splits.val.paths)
    offsets = dict(zip(parts, np.cumsum([0, *val.widths])[:-1]))
    widths = dict(zip(parts, val.widths))

    def val_codes(layer: str) -> np.ndarray:
        return np.concatenate([val.codes[:, offsets[p]:offsets[p] + widths[p]] for p in layer.split("+")], 1)

    y, k, val_y = measured.images.labels, len(splits.train.class_names), splits.val.labels[val.kept]
    searches: dict[str, dict] = {"previous": {}, "now": {}}
    total = {"previous": 0.0, "now": 0.0}
    print(f"{'layer':<50}{'previous s / C / loss':>26}{'now s / C / loss':>26}")
    for layer in candidates:
        line = f"{layer:<50}"
        for side in searches:
            search, seconds = timed_search(measured.codes(layer), y, k, side == "previous")
            searches[side][layer] = search
            total[side] += seconds
            line += f"{seconds:>9.1f} / {search.C:.3g} / {search.cv_log_loss:.4f}"
        print(line)
    for side, found in searches.items():
        chosen = choose_layer(found)[0]
        acc = accuracy(measured.codes(chosen), y, val_codes(chosen), val_y, k, found[chosen].C)
        print(f"{side}: {total[side]:.1f} s for {len(found)} layers; chose {chosen} (C {found[chosen].C:.3g}), "
              f"validation accuracy {acc:.4f}")


def fit(data: Path) -> None:
    seconds = {}
    runs = {"feature-extractor": ["--strategy", "feature-extractor"],
            "auto, Lite0 alone": ["--model", "tf_efficientnet_lite0"], "auto (default)": []}
    for name, options in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "headstart", "fit", str(data), *options,
                                   "--cache-dir", f"{tmp}/cache", "--out", f"{tmp}/model", "--json", "--quiet"],
                                  capture_output=True, text=True)
            seconds[name] = time.perf_counter() - started
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
            result = json.loads(done.stdout)
        print(f"fit {name:<20} {seconds[name]:6.1f} s, {result['model']}, layer {'+'.join(result['layers'])}, "
              f"validation accuracy {result['validation']['accuracy']:.4f}", flush=True)
    for name in list(runs)[1:]:
        print(f"{name} / feature-extractor: {seconds[name] / seconds['feature-extractor']:.2f}x (goal <= 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["table", "layers", "fit"])
    parser.add_argument("--classes", nargs="+", type=int, default=[2, 10, 100, 1000])
    args = parser.parse_args()
    if "table" in args.parts:
        table(args.classes)
    if "layers" in args.parts or "fit" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "cifar_styles"
            cifar_styles(data)
            if "layers" in args.parts:
                layers(data)
            if "fit" in args.parts:
                fit(data)


if __name__ == "__main__":
    main()
