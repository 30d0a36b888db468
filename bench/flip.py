"""Test-time flips for the probe (issue 24, item 5): the codes of each image averaged with its mirror image's, against
the codes of the image alone, on the same layer, C search and validation images; in one run.

    python bench/flip.py [--datasets cats_vs_dogs dtd10 pneumoniamnist]

For each dataset: auto's probe layer (advised on the training images), then a linear classifier (softmax regression,
C by the usual cross-validated search on the training images) trained and scored both ways: plain codes for training
and validation images, and flip-averaged codes for both. Prints the validation accuracy of each, the gain, and the
cost (the seconds of the second forward pass over every image). The issue keeps flips only if the gain averages at
least 0.3 point over the shared datasets.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from headstart.auto.advice import advise
from headstart.codes.create import create_backbone
from headstart.codes.extract import FeatureExtractor
from headstart.data.decode import decoded_batches
from headstart.data.splits import find_splits
from headstart.heads.linear import fit_linear

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def flipped_codes(extractor: FeatureExtractor, paths: list[Path]) -> np.ndarray:
    """Codes of the mirror images (left-right) of ``paths``, in order (every image must decode)."""
    rows: dict[int, np.ndarray] = {}
    for index, batch, failed in decoded_batches(paths, extractor.backbone.preprocess, 32, extractor.workers):
        assert not failed and batch is not None
        rows.update(zip(index, extractor.transform_arrays(np.ascontiguousarray(batch[:, :, ::-1])).codes))
    return np.stack([rows[i] for i in range(len(paths))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cats_vs_dogs", "dtd10", "pneumoniamnist"])
    args = parser.parse_args()
    gains = []
    with tempfile.TemporaryDirectory() as cache:
        backbone = create_backbone(cache_dir=Path(cache))
        for name in args.datasets:
            splits = find_splits(SHARED / name)
            advice = advise(backbone, splits.train, cache)
            layers = advice.layer.split("+")
            extractor = FeatureExtractor(backbone, layers, cache)
            n = len(splits.train.class_names)
            plain, flip = {}, {}
            for split, images in (("train", splits.train), ("val", splits.val)):
                codes = extractor.transform(images.paths)
                assert len(codes.kept) == len(images), "every image must decode"
                plain[split] = codes.codes
                started = time.perf_counter()
                flip[split] = (codes.codes + flipped_codes(extractor, images.paths)) / 2
                flip[f"{split}_seconds"] = time.perf_counter() - started
            accuracy = {}
            for label, codes in (("plain", plain), ("flip-averaged", flip)):
                head = fit_linear(codes["train"], splits.train.labels, n)
                accuracy[label] = float((head.predict_proba(codes["val"]).argmax(1) == splits.val.labels).mean())
            gain = 100 * (accuracy["flip-averaged"] - accuracy["plain"])
            gains.append(gain)
            seconds = flip["train_seconds"] + flip["val_seconds"]
            print(f"{name}: layer {advice.layer}; val plain {accuracy['plain']:.4f}, flip-averaged "
                  f"{accuracy['flip-averaged']:.4f} ({gain:+.2f} points); the mirror pass took {seconds:.1f} s for "
                  f"{len(splits.train) + len(splits.val)} images", flush=True)
    print(f"mean gain {np.mean(gains):+.2f} points over {len(gains)} datasets (keep flips only from +0.30)")


if __name__ == "__main__":
    main()
