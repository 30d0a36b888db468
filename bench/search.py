"""The C search on many classes: the walk up the C grid with warm starts against the batched search, same run.

    python bench/search.py [table] [layers] [scoring] [fit] [--classes 2 10 100 1000] [--repeat 3]

table:  generated codes (30 training and 10 validation images per class, 1984 columns, as Lite0's widest candidate
        layer): seconds of the default C search, the C it chose, its out-of-fold log loss and the validation accuracy
        of the final fit at that C, for the previous search (every C of the grid solved at once) and today's.
        Below PATH_CLASSES classes both are the batched search.
layers: a 100-class set of real images (cifar_styles: cifar10's 10 classes x 10 global styles such as grayscale,
        inverted, tinted, blurred, flipped; 30 training and 10 validation images each, generated in a temporary
        folder): every candidate layer scored both ways, the layer auto's tie rule chooses from each, and the
        validation accuracy of each choice.
scoring: on the same set, auto's scoring of the 8 candidates and its final fit as `fit` runs them (one Gram shared
        by the candidates, the joins' walks started from the penultimate layer's fold models, the final fit reusing
        the chosen layer's basis and starting from its fold models) against each candidate's Gram apart, every walk
        from zero and the final fit from scratch, best of two each; and one evaluation of the solver's objective by
        hand against autograd (the previous release's).
fit:    the whole cold `headstart fit` (auto: Lite0 alone, and the default choice of network) against
        `--strategy feature-extractor` (Lite0) on cifar_styles: --repeat alternating pairs, their median ratio.
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


def measured_codes(data: Path):
    """(Lite0's candidate layers, the training codes measured as auto does, a function: validation codes of a
    layer, the validation labels)."""
    from headstart.auto.measure import measure_codes
    from headstart.codes.backbones import candidate_layers
    from headstart.codes.create import create_backbone
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

    return candidates, measured, val_codes, splits.val.labels[val.kept]


def layers(data: Path) -> None:
    from headstart.auto.layers import choose_layer

    candidates, measured, val_codes, val_y = measured_codes(data)
    y, k = measured.images.labels, len(measured.images.class_names)
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


def _evaluations(data, labels: np.ndarray, k: int, folds: list) -> dict[str, float]:
    """Milliseconds of one evaluation of the walk's objective (value and gradient, 5 fold problems) by autograd, as
    the previous release computed it, and by hand, as today's solver does; checks that they agree."""
    import torch

    import headstart.heads.solver as solver

    weights = torch.zeros(len(folds), len(labels))
    for f, (train, _test) in enumerate(folds):
        weights[f, train] = 1.0 / len(train)
    penalties = torch.full((len(folds),), 1.0 / (0.0316 * 0.8 * len(labels)))
    start = (torch.randn(len(folds), data.z.shape[1], k) * 0.01, torch.zeros(len(folds), k))
    captured = {}

    class Capture:  # the solver's objective, without running L-BFGS
        def __init__(self, params, **_options):
            captured["params"] = params

        def step(self, closure):
            captured["closure"] = closure

    kept, solver._lbfgs = solver._lbfgs, lambda: Capture
    try:
        solver.solve(data, labels, k, weights, penalties, "logistic", 1, start)
    finally:
        solver._lbfgs = kept
    (u, b), by_hand = captured["params"], captured["closure"]
    scale = 1.0 / torch.sqrt(data.variance.float()[None, :, None] * 0.25 + penalties[:, None, None])
    target = torch.nn.functional.one_hot(torch.from_numpy(labels), k).float()
    u_, b_ = u.clone().requires_grad_(), b.clone().requires_grad_()

    def autograd():
        u_.grad = b_.grad = None
        w = u_ * scale
        logits = torch.einsum("nr,prk->pnk", data.z, w) + b_[:, None, :]
        value = ((torch.logsumexp(logits, 2) - (logits * target).sum(2)) * weights).sum()
        value = value + 0.5 * (penalties * w.pow(2).sum((1, 2))).sum()
        value.backward()
        return value.detach()

    assert abs(float(by_hand()) - float(autograd())) < 1e-4 * abs(float(autograd()))
    assert torch.allclose(u.grad, u_.grad, rtol=1e-3, atol=1e-6)
    milliseconds = {}
    for name, objective in (("autograd", autograd), ("by hand", by_hand)):
        objective()
        started = time.perf_counter()
        for _ in range(20):
            objective()
        milliseconds[name] = (time.perf_counter() - started) / 20 * 1e3
    return milliseconds


def scoring(data: Path) -> None:
    """auto's scoring of Lite0's 8 candidate layers and its final fit on the chosen one, as `fit` runs them, against
    the previous release's way in the same run: each candidate's Gram computed apart, every walk from zero and the
    final fit solving the chosen layer's eigenproblem again from zero (both with today's solver and walk steps), and
    the solver's objective evaluation by autograd against by hand."""
    import torch

    import headstart.auto.layers as auto_layers
    from headstart.heads.basis import Standardised

    candidates, measured, val_codes, val_y = measured_codes(data)
    y, k = measured.images.labels, len(measured.images.class_names)
    widest = Standardised(measured.codes(candidates[-1])).leading(linear.WALK_VARIANCE)
    ms = _evaluations(widest, y, k, linear.stratified_folds(y, 0))
    print(f"one evaluation of the walk's objective on the widest join ({widest.z.shape[1]} leading axes, 5 folds, "
          f"{k} classes): autograd {ms['autograd']:.1f} ms, by hand {ms['by hand']:.1f} ms, "
          f"{ms['autograd'] / ms['by hand']:.2f}x")
    seconds = {}
    for side in ("previous", "now", "previous", "now"):
        kept = auto_layers._SharedGram.standardised, auto_layers._penultimate_models
        if side == "previous":
            auto_layers._SharedGram.standardised = lambda self, layer, codes: None
            auto_layers._penultimate_models = lambda *args: None
        try:
            torch.manual_seed(0)
            started = time.perf_counter()
            searches = auto_layers.score_layers(measured, candidates)
            scored = time.perf_counter()
            chosen = auto_layers.choose_layer(searches)[0]
            if side == "previous":
                searches[chosen].basis = searches[chosen].start = None
            head = linear.fit_linear(measured.codes(chosen), y, k, search=searches[chosen])
            fitted = time.perf_counter()
        finally:
            auto_layers._SharedGram.standardised, auto_layers._penultimate_models = kept
        acc = float((head.predict_proba(val_codes(chosen)).argmax(1) == val_y).mean())
        seconds[side] = min(seconds.get(side, np.inf), fitted - started)
        print(f"{side:<9} scoring {scored - started:5.1f} s, final fit {fitted - scored:4.1f} s; chose {chosen} "
              f"(C {searches[chosen].C:.3g}), validation accuracy {acc:.4f}", flush=True)
    print(f"scoring and final fit, best of two: previous {seconds['previous']:.1f} s, now {seconds['now']:.1f} s, "
          f"{seconds['previous'] / seconds['now']:.2f}x")


def fit(data: Path, repeat: int = 3) -> None:
    """Alternating cold pairs (feature extractor, then auto with Lite0 alone), ``repeat`` of them, and the default
    once: this machine's speed drifts by about 10% within minutes, so each pair's ratio is printed and their median
    is the figure."""
    runs = {"feature-extractor": ["--strategy", "feature-extractor"],
            "auto, Lite0 alone": ["--model", "tf_efficientnet_lite0"], "auto (default)": []}
    ratios = []
    for turn in range(repeat):
        seconds = {name: _cold_fit(data, name, options) for name, options in list(runs.items())[:2]}
        ratios.append(seconds["auto, Lite0 alone"] / seconds["feature-extractor"])
        print(f"pair {turn + 1}: auto, Lite0 alone / feature-extractor: {ratios[-1]:.3f}x", flush=True)
    print(f"auto, Lite0 alone / feature-extractor, median of {repeat} pairs: {np.median(ratios):.2f}x (goal <= 1.3)")
    default = _cold_fit(data, "auto (default)", runs["auto (default)"])
    print(f"auto (default) / the last feature-extractor run: {default / seconds['feature-extractor']:.2f}x")


def _cold_fit(data: Path, name: str, options: list[str]) -> float:
    """Seconds of one cold `headstart fit` (empty cache), printed with its parts and result."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "headstart", "fit", str(data), *options,
                               "--cache-dir", f"{tmp}/cache", "--out", f"{tmp}/model", "--json", "--quiet"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    result = json.loads(done.stdout)
    parts = {key: result["seconds"].get(key) for key in ("startup", "measure", "decide", "codes", "classifier",
                                                           "validation")}
    print(f"fit {name:<20} {seconds:6.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in parts.items() if v)}), "
          f"{result['model']}, layer {'+'.join(result['layers'])}, validation accuracy "
          f"{result['validation']['accuracy']:.4f}", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["table", "layers", "scoring", "fit"])
    parser.add_argument("--classes", nargs="+", type=int, default=[2, 10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=3, help="fit: cold pairs of feature extractor and auto")
    args = parser.parse_args()
    if "table" in args.parts:
        table(args.classes)
    if {"layers", "scoring", "fit"} & set(args.parts):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "cifar_styles"
            cifar_styles(data)
            if "layers" in args.parts:
                layers(data)
            if "scoring" in args.parts:
                scoring(data)
            if "fit" in args.parts:
                fit(data, args.repeat)


if __name__ == "__main__":
    main()
