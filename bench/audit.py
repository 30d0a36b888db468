"""The audit against planted faults and against a baseline, both in the same run.

    python bench/audit.py [labels] [leaks] [twins] [clean] [outliers] [quality] [cost] [fitcost]
    python bench/audit.py relabel | shared | million | crossover     (not run by default)

labels:   10% and 20% of training labels flipped at random (omniglot5 as 136 classes of 14 images, a 10,000-image
          sample of cifar10, cats_vs_dogs, dtd10): precision, recall and F1 of the audit's flags, the area under the
          precision-recall curve of its ranking, the previous release's check (confident learning on Lite0's
          penultimate codes), and cleanlab 2.9's find_label_issues on 5-fold logistic regression of the same Lite0
          codes (its image recipe; C 1, 0.1, 0.01) as the baseline.
twins:    byte- and pixel-identical twins planted inside near-duplicate sets (40 per dataset, cats_vs_dogs and
          dtd10): the share of twin pairs named together as exact_duplicate or an exact leak, and exact rows whose
          two images' pixels differ.
leaks:    copies of 50 training images per dataset (cats_vs_dogs, dtd10) put into validation, by each of exact copy,
          JPEG quality 50, half size, a 10% crop, a mirror image and +20% brightness: recall per kind, as leaks.
million:  1,000,000 x 1280 generated float16 codes (memory-mapped) with 5000 planted near-duplicate pairs: the
          share found by the duplicate search, its seconds and peak memory (its own process).
crossover: the exact and the faiss search on 15k, 30k and 60k of those codes: where faiss starts to pay.
clean:    nothing planted: near-duplicate pairs flagged on imagenet_samples and on each shared set's own images.
outliers: 3% of dtd10's training images replaced by imagenet_samples: AUROC of the outlier score, precision and
          recall at the default threshold.
quality:  darkened (x0.15), blurred (Gaussian radius 3) and 16 x 16 copies of 50 images: recall per kind, and the
          share of the 100 clean originals flagged for any of those kinds.
cost:     cold `headstart audit` against cold `headstart extract` of the same networks (and of Lite0 alone) on
          cats_vs_dogs and a 10,000-image sample of cifar10 (each with an empty cache), and a warm audit.
fitcost:  what the fit pays for trusting less: a cold default `fit` of cats_vs_dogs and dtd10 and its leak check's
          seconds; with --previous SRC (another checkout's src/), the same fit by that code, and the ratio.
relabel:  10% of dtd10's training images filed under a wrong class (links): the audit's --suggest list, then `fit
          --relabel` with their true labels against the default fit of the clean folders (layers, validation
          accuracy), and the misfiled folder's hash before and after.
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


def label_sets() -> dict[str, ImageSet]:
    """Training images of the label study: omniglot5 as 136 classes (alphabet and character: 14 images each), a
    10,000-image fixed-seed sample of cifar10, and every other single-label shared collection's training images."""
    paths = sorted((SHARED / "omniglot5" / "train").rglob("*.png"))
    classes = [f"{p.parent.name}/{p.name.split('_')[0]}" for p in paths]
    names = sorted(set(classes))
    cifar = read_class_folders(SHARED / "cifar10" / "train")
    pick = np.sort(np.random.default_rng(0).choice(len(cifar), 10_000, replace=False))
    return {"omniglot136": ImageSet(paths, np.array([names.index(c) for c in classes]), names),
            "cifar10 (10k)": cifar.subset(pick),
            "cats_vs_dogs": read_class_folders(SHARED / "cats_vs_dogs" / "train"),
            "dtd10": read_class_folders(SHARED / "dtd10" / "train"),
            **{name: read_class_folders(SHARED / name / "train")
               for name in ("pneumoniamnist", "sign_digits", "retinamnist", "omniglot5")},
            "flowers": read_class_folders(SHARED / "flowers")}


def cleanlab_flags(codes: np.ndarray, labels: np.ndarray) -> dict[float, np.ndarray]:
    """cleanlab 2.9's ``find_label_issues`` on 5-fold out-of-fold probabilities of scikit-learn's logistic regression
    (standardised codes), for each C its image recipe is run with."""
    from cleanlab.filter import find_label_issues as cleanlab_find
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flags = {}
    for c in (1.0, 0.1, 0.01):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300))
        proba = cross_val_predict(model, codes, labels, cv=5, method="predict_proba")
        flags[c] = cleanlab_find(labels, proba)
    return flags


def labels(names: tuple[str, ...] | None = None) -> None:
    """Flipped labels found by the audit's check (its networks and layers), by the previous release's check
    (confident learning on Lite0's penultimate codes) and by cleanlab on the same Lite0 codes, in one run; ``names``:
    some of the collections of :func:`label_sets`."""
    from headstart.auditing.duplicates import find_pairs, groups_of
    from headstart.auditing.labels import find_label_issues, prune_by_noise_rate
    from headstart.auditing.neighbours import nearest, unit_rows
    from headstart.auditing.run import NEIGHBOURS, audit_layers, check_labels, code_images, out_of_fold
    from headstart.codes.backbones import candidate_layers
    from headstart.codes.create import create_backbone
    from headstart.codes.extract import FeatureExtractor
    from headstart.data.imagestats import STATS
    from headstart.defaults import AUTO_MODELS

    backbone = create_backbone(",".join(AUTO_MODELS))
    compare, label_layers = audit_layers(backbone)
    extractor = FeatureExtractor(backbone, [compare, *(p for layers in label_layers for p in layers), STATS],
                                 also=sorted({p for c in candidate_layers(backbone) for p in c.split("+")}))
    print("| data | flipped | flagged | precision | recall | F1 | AP of ranking | previous release: F1 | "
          "cleanlab 2.9 F1 (C 1 / 0.1 / 0.01) | ours - best cleanlab |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, train in label_sets().items():
        if names and name not in names:
            continue
        started = time.perf_counter()
        coded = code_images(extractor, train, label_layers)
        clean_images = coded.images
        groups = groups_of(len(coded.codes), find_pairs(coded.codes, coded.stats))
        neighbours = nearest(unit_rows(coded.codes), unit_rows(coded.codes), NEIGHBOURS, same=True)
        k = len(train.class_names)
        for rate in (0.1, 0.2):
            rng = np.random.default_rng(1)
            noisy = clean_images.labels.copy()
            flip = rng.choice(len(noisy), int(rate * len(noisy)), replace=False)
            noisy[flip] = (noisy[flip] + rng.integers(1, k, len(flip))) % k
            truth = noisy != clean_images.labels
            coded.images = ImageSet(clean_images.paths, noisy, train.class_names)
            issues, _, _ = check_labels(coded, groups, neighbours, seed=0)
            p, r, f = prf(issues.flagged, truth)
            proba, _ = out_of_fold(coded.codes, coded.images, groups, seed=0)
            before = find_label_issues(proba, noisy)
            previous = prune_by_noise_rate(proba, noisy, before.joint) & (before.suggested != noisy)
            baseline = [prf(flags, truth)[2] for flags in cleanlab_flags(coded.codes, noisy).values()]
            print(f"| {name} | {rate:.0%} | {issues.flagged.sum()} | {p:.3f} | {r:.3f} | **{f:.3f}** | "
                  f"{average_precision(issues.score, truth):.3f} | {prf(previous, truth)[2]:.3f} | "
                  f"{' / '.join(f'{b:.3f}' for b in baseline)} | {100 * (f - max(baseline)):+.1f} |", flush=True)
        print(f"  ({name}: {time.perf_counter() - started:.0f} s)", flush=True)


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


def plant_twins(tmp: Path, name: str, n: int, seed: int = 0) -> tuple[ImageSet, ImageSet, list[tuple[str, str]]]:
    """``n`` near-duplicate sets of ``name``'s training images (the original, a mirror, a half-size copy), each with
    identical twins planted inside: a byte copy of the half-size file, the original re-encoded as PNG (same pixels,
    other bytes), and for half of them a byte copy of the mirror in validation. Returns (train, val, twin pairs)."""
    train = read_class_folders(SHARED / name / "train")
    val = read_class_folders(SHARED / name / "val", train.class_names)
    pick = np.random.default_rng(seed).choice(len(train), n, replace=False)
    paths, labels, val_paths, val_labels, twins = list(train.paths), list(train.labels), list(val.paths), \
        list(val.labels), []
    for j, i in enumerate(pick):
        source, label = train.paths[i], int(train.labels[i])
        folder = tmp / name / "train" / train.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.open(source).convert("RGB")
        mirror, half = folder / f"mirror_{source.stem}.jpg", folder / f"half_{source.stem}.jpg"
        ImageOps.mirror(image).save(mirror, quality=95)
        image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC).save(half, quality=95)
        half_bytes, png = folder / f"half_bytes_{source.stem}.jpg", folder / f"png_{source.stem}.png"
        half_bytes.write_bytes(half.read_bytes())
        image.save(png)
        new = [mirror, half, half_bytes, png]
        paths += new
        labels += [label] * len(new)
        twins += [(str(half), str(half_bytes)), (str(source), str(png))]
        if j % 2 == 0:
            copy = tmp / name / "val" / train.class_names[label] / f"mirror_bytes_{source.stem}.jpg"
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(mirror.read_bytes())
            val_paths.append(copy)
            val_labels.append(label)
            twins.append((str(copy), str(mirror)))
    return (ImageSet(paths, np.array(labels), train.class_names), ImageSet(val_paths, np.array(val_labels),
                                                                             train.class_names), twins)


def twins() -> None:
    """Identical twins planted inside near-duplicate sets: each pair named together, and no exact row wrong."""
    print("| data | twin pairs planted | named together | exact rows | of them not identical |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cats_vs_dogs", "dtd10"):
            train, val, planted = plant_twins(Path(tmp), name, 40)
            result = audit(train_images=train, val_images=val)
            exact = [f for f in result["findings"] if f["issue"] == "exact_duplicate" or
                     (f["issue"] == "leak" and f["evidence"]["kind"] == "exact")]
            named = {frozenset((f["path"], f["other"])) for f in exact}
            hits = sum(frozenset(pair) in named for pair in planted)
            wrong = sum(not np.array_equal(np.asarray(Image.open(f["path"]).convert("RGB")),
                                           np.asarray(Image.open(f["other"]).convert("RGB"))) for f in exact)
            print(f"| {name} | {len(planted)} | **{hits / len(planted):.2f}** ({hits}) | {len(exact)} | "
                  f"**{wrong}** |", flush=True)


def generate_codes(path: Path, n: int, width: int = 1280, seed: int = 0) -> np.ndarray:
    """``n`` x ``width`` float16 codes written to ``path`` (.npy) in blocks: non-negative like pooled activations,
    around 2000 centres, with one near-duplicate pair planted per 200 rows (a copy with 5% noise). Returns the
    planted pairs (rows a < b)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, width), dtype=np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, width))
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        out[start:start + m] = np.maximum(centres[rng.integers(0, 2000, m)] +
                                          rng.standard_normal((m, width), dtype=np.float32), 0)
    rows = rng.choice(n, 2 * (n // 200), replace=False)
    pairs = np.sort(rows.reshape(2, -1).T, axis=1)
    for start in range(0, len(pairs), 10_000):
        a, b = pairs[start:start + 10_000, 0], pairs[start:start + 10_000, 1]
        copy = out[a].astype(np.float32)
        out[b] = np.maximum(copy * (1 + 0.05 * rng.standard_normal(copy.shape, dtype=np.float32)), 0)
    out.flush()
    return pairs


def _search_stage(path: str, n: int, exact: str) -> None:
    """One search in a process of its own (its peak memory is its own): prints JSON."""
    import resource

    from headstart.auditing.duplicates import find_pairs
    from headstart.auditing.neighbours import nearest_within

    codes = np.load(path, mmap_mode="r")[:n]
    started = time.perf_counter()
    found = nearest_within(codes, 10, exact={"exact": True, "faiss": False, "auto": None}[exact])
    pairs = find_pairs(codes, None, found=found)
    seconds = time.perf_counter() - started
    planted = np.load(path.replace(".npy", ".pairs.npy"))
    planted = planted[planted[:, 1] < n]
    found_pairs = set(zip(pairs.query.tolist(), pairs.reference.tolist()))
    hits = sum((int(a), int(b)) in found_pairs for a, b in planted)
    print(json.dumps({"n": n, "way": exact, "seconds": round(seconds, 1), "planted": len(planted), "found": hits,
                      "other_pairs": len(found_pairs) - hits,
                      "peak_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


def million(sizes: tuple[int, ...] = (1_000_000,), ways: tuple[str, ...] = ("auto",)) -> None:
    """Generated codes with planted near-duplicate pairs: the duplicate search's recall, seconds and peak memory (in
    a process of its own, the codes a memory-mapped float16 .npy)."""
    print("| rows | search | seconds | planted pairs found | other pairs | peak memory GB |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.npy"
        np.save(Path(tmp) / "codes.pairs.npy", generate_codes(path, max(sizes)))
        for n in sizes:
            for way in ways:
                out = subprocess.run([sys.executable, __file__, "_search", str(path), str(n), way], check=True,
                                     capture_output=True, text=True).stdout
                r = json.loads(out.splitlines()[-1])
                print(f"| {n} | {way} | {r['seconds']} | **{r['found'] / r['planted']:.3f}** ({r['found']} of "
                      f"{r['planted']}) | {r['other_pairs']} | {r['peak_gb']} |", flush=True)


def crossover() -> None:
    """Exact against faiss at sizes around EXACT_UP_TO: where the faiss path starts to pay."""
    million((15_000, 30_000, 60_000), ("exact", "faiss"))


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


def linked_sample(tmp: Path, name: str, n: int, seed: int = 0) -> Path:
    """A fixed-seed sample of ``n`` of ``name``'s training images as class folders of links (nothing copied)."""
    train = read_class_folders(SHARED / name / "train")
    for i in np.sort(np.random.default_rng(seed).choice(len(train), n, replace=False)):
        link = tmp / name / train.class_names[train.labels[i]] / train.paths[i].name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(train.paths[i])
    return tmp / name


def cost(sets: tuple[str, ...] = ("cats_vs_dogs", "cifar10:10000")) -> None:
    """Cold `audit` against cold `extract` of the same networks (and of Lite0 alone, extract's default), and a warm
    audit; ``name:n`` audits a fixed-seed sample of n training images."""
    from headstart.defaults import AUTO_MODELS

    print("| data | images | cold extract, audit's networks | cold extract, Lite0 | cold audit | ratio | warm audit |")
    print("|---|---|---|---|---|---|---|")
    for entry in sets:
        name, _, size = entry.partition(":")
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b, \
                tempfile.TemporaryDirectory() as c, tempfile.TemporaryDirectory() as links:
            data = str(linked_sample(Path(links), name, int(size)) if size else SHARED / name)
            images = len(list(Path(data).rglob("*.*")))
            every = "+".join(f"{network}:penultimate" for network in AUTO_MODELS)  # each network runs, as in the audit
            both = command("extract", data, "--model", ",".join(AUTO_MODELS), "--layer", every, cache=Path(a))
            lite0 = command("extract", data, cache=Path(c))
            cold = command("audit", data, "--json", cache=Path(b))
            warm = command("audit", data, "--json", cache=Path(b))
        print(f"| {name} | {images} | {both:.1f} s | {lite0:.1f} s | {cold:.1f} s | **{cold / both:.2f}** | "
              f"{warm:.1f} s |", flush=True)


def folder_digest(folder: Path) -> str:
    """A hash of every path below ``folder`` with its link target or bytes: proof that nothing there changed."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_symlink():
            h.update(str(path.readlink()).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def relabel(name: str = "dtd10", rate: float = 0.1) -> None:
    """A collection with ``rate`` of its training images filed under a wrong class (links in a temporary folder):
    the audit's --suggest list, then the true labels of the misfiled images given to `fit --relabel`, against the
    default fit of the clean collection: chosen layers, validation accuracy, and the folder's hash before and after."""
    import csv

    train = read_class_folders(SHARED / name / "train")
    rng = np.random.default_rng(1)
    flip = set(rng.choice(len(train), int(rate * len(train)), replace=False).tolist())
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        clean, flipped = Path(tmp) / "clean", Path(tmp) / "flipped"
        truth = {}
        for i, (path, label) in enumerate(zip(train.paths, train.labels)):
            filed = (label + rng.integers(1, len(train.class_names))) % len(train.class_names) if i in flip else label
            for root, cls in ((clean, label), (flipped, filed)):
                link = root / "train" / train.class_names[cls] / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
            if i in flip:
                truth[str(flipped / "train" / train.class_names[filed] / path.name)] = train.class_names[label]
        for root in (clean, flipped):
            (root / "val").symlink_to(SHARED / name / "val")
        before = folder_digest(flipped)
        command("audit", str(flipped), "--suggest", f"{tmp}/suggested.csv", cache=Path(cache))
        with open(f"{tmp}/suggested.csv") as f:
            suggested = {row["path"]: row["label"] for row in csv.DictReader(f)}
        right = sum(truth.get(path) == label for path, label in suggested.items())
        (Path(tmp) / "fix.csv").write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in truth.items()))
        runs = {}
        for key, data, extra in (("clean", clean, []), ("relabelled", flipped, ["--relabel", f"{tmp}/fix.csv"])):
            run = subprocess.run([sys.executable, "-m", "headstart.cli", "fit", str(data), "--out",
                                  f"{tmp}/model-{key}", "--json", "-q", *extra], capture_output=True, text=True,
                                 env={**os.environ, "HEADSTART_CACHE_DIR": cache}, check=True)
            runs[key] = json.loads(run.stdout)
        same = folder_digest(flipped) == before
    a, b = runs["clean"], runs["relabelled"]
    print(f"{name}: {len(truth)} of {len(train)} training images misfiled; --suggest listed {len(suggested)}, "
          f"{right} of them with the true label")
    print("| fit | layers | validation accuracy | labels changed | folder unchanged |")
    print("|---|---|---|---|---|")
    print(f"| clean folders | {' + '.join(a['layers'])} | {a['validation']['accuracy']:.4f} | - | - |")
    print(f"| misfiled + --relabel | {' + '.join(b['layers'])} | {b['validation']['accuracy']:.4f} | "
          f"{b['relabelled']} | **{same}** |")


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
    if sys.argv[1:2] == ["_search"]:
        return _search_stage(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    parts = ("labels", "leaks", "twins", "clean", "outliers", "quality", "cost", "fitcost")
    parser.add_argument("parts", nargs="*", choices=(*parts, "relabel", "shared", "million", "crossover"),
                        default=list(parts))
    parser.add_argument("--previous", help="src/ of another checkout, for fitcost's comparison")
    parser.add_argument("--sets", nargs="+", help="labels' collections (default: all), or cost's: a name, or name:n "
                                                  "for a fixed-seed sample (default: cats_vs_dogs cifar10:10000)")
    args = parser.parse_args()
    for part in args.parts:
        print(f"\n## {part}", flush=True)
        sets = (tuple(args.sets),) if args.sets else ()
        arguments = {"fitcost": (args.previous,), "cost": sets, "labels": sets}.get(part, ())
        globals()[part](*arguments)


if __name__ == "__main__":
    main()
