"""Each embedded network's own best layer by auto's rule, and joins of two networks' chosen layers, on the same data.

    python bench/networks.py [--datasets dtd10 cats_vs_dogs] [--models tf_efficientnet_lite0 tf_efficientnet_lite1 ...]

For every network: the seconds to extract the training and validation codes of every candidate layer (cold, its own
temporary cache), the layer auto's tie rule chooses, that layer's 5-fold cross-validated log loss and accuracy on the
training images, and its validation accuracy. Then every join of two networks' chosen layers, scored the same way,
with its out-of-fold log loss against the first network's (mean paired difference and its standard error).
Validation images are used only to score, never for a choice. The groundwork of issue 24 (auto choosing the network).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

from headstart.auto.layers import choose_layer
from headstart.codes.backbones import candidate_layers
from headstart.codes.create import create_backbone
from headstart.codes.extract import FeatureExtractor
from headstart.data.folders import read_class_folders
from headstart.heads.linear import fit_linear, search_C

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LITE = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


def by_layer(codes, parts: list[str]) -> dict[str, np.ndarray]:
    offsets = np.cumsum([0, *codes.widths])
    return {p: codes.codes[:, offsets[i]:offsets[i + 1]] for i, p in enumerate(parts)}


def joined(codes: dict[str, np.ndarray], layer: str) -> np.ndarray:
    return np.concatenate([codes[p] for p in layer.split("+")], 1)


def dataset(name: str, models: list[str], cache: Path) -> None:
    train, val = read_class_folders(DATA / name / "train"), read_class_folders(DATA / name / "val")
    k = len(train.class_names)
    chosen = {}
    for model in models:
        backbone = create_backbone(model)
        candidates = candidate_layers(backbone)
        parts = sorted({p for c in candidates for p in c.split("+")})
        started = time.perf_counter()
        extractor = FeatureExtractor(backbone, parts, cache / model)
        tr, va = extractor.transform(train.paths), extractor.transform(val.paths)
        seconds = time.perf_counter() - started
        y, val_y = train.labels[tr.kept], val.labels[va.kept]
        t, v = by_layer(tr, parts), by_layer(va, parts)
        searches = {c: search_C(joined(t, c), y, k) for c in candidates}
        layer = choose_layer(searches)[0]
        head = fit_linear(joined(t, layer), y, k, search=searches[layer])
        accuracy = float((head.predict_proba(joined(v, layer)).argmax(1) == val_y).mean())
        chosen[model] = (layer, t, v, searches[layer], y, val_y)
        print(f"{name} {model:<24}{seconds:6.1f} s  {layer:<50} cv loss {searches[layer].cv_log_loss:.4f} "
              f"cv acc {searches[layer].cv_accuracy:.4f} val {accuracy:.4f}", flush=True)
    for a, b in combinations(models, 2):
        (la, ta, va_, sa, y, val_y), (lb, tb, vb, _, _, _) = chosen[a], chosen[b]
        codes = np.concatenate([joined(ta, la), joined(tb, lb)], 1)
        search = search_C(codes, y, k)
        head = fit_linear(codes, y, k, search=search)
        accuracy = float((head.predict_proba(np.concatenate([joined(va_, la), joined(vb, lb)], 1)).argmax(1)
                          == val_y).mean())
        diff = search.sample_losses - sa.sample_losses
        print(f"{name} join {a}+{b}: cv loss {search.cv_log_loss:.4f} ({diff.mean():+.4f} against {a}, standard "
              f"error {diff.std(ddof=1) / np.sqrt(len(diff)):.4f}) cv acc {search.cv_accuracy:.4f} val {accuracy:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["dtd10", "cats_vs_dogs"])
    parser.add_argument("--models", nargs="+", default=LITE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-networks-") as tmp:
        for name in args.datasets:
            dataset(name, args.models, Path(tmp))


if __name__ == "__main__":
    main()
