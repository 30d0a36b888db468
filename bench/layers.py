"""Validation accuracy of linear classifiers on CNN codes from the penultimate and earlier layers.

    python bench/layers.py [--datasets pneumoniamnist dtd10] [--layers penultimate blocks.5 blocks.4 ...]

C is chosen by cross-validation on each dataset's train split only; accuracy is on its val split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import headstart
from headstart.data.splits import find_splits

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "dtd10"])
    parser.add_argument("--layers", nargs="+",
                        default=["penultimate", "blocks.6", "blocks.5", "blocks.4", "blocks.3", "blocks.5+penultimate"])
    args = parser.parse_args()
    for name in args.datasets:
        splits = find_splits(SHARED / name)
        every = sorted({part for layer in args.layers for part in layer.split("+")})
        started = time.perf_counter()
        headstart.TransferClassifier(layer="+".join(every), C=1.0).fit(splits.train)  # fills the cache in one pass
        print(f"{name}: {len(splits.train)} train / {len(splits.val)} val; codes for {len(every)} layers in "
              f"{time.perf_counter() - started:.0f} s")
        for layer in args.layers:
            clf = headstart.TransferClassifier(layer=layer).fit(splits.train)
            result = clf.evaluate(splits.val)
            print(f"  {layer:<24} dim {clf.fit_info_['codes_dim']:>5}  C={clf.head_.info['C']:<7g} "
                  f"val accuracy {result['accuracy']:.4f}  balanced {result['balanced_accuracy']:.4f}")


if __name__ == "__main__":
    main()
