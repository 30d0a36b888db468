"""Cold CNN-code extraction of all of CIFAR-10 train (50000 images): time and peak resident memory.

    python bench/cifar_memory.py [--limit 0]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from headstart.codes.backbones import create_backbone
from headstart.codes.extract import FeatureExtractor
from headstart.data.folders import read_class_folders

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="images used (0: all)")
    args = parser.parse_args()
    images = read_class_folders(SHARED / "cifar10" / "train")
    paths = images.paths[: args.limit] if args.limit else images.paths
    with tempfile.TemporaryDirectory() as tmp:
        extractor = FeatureExtractor(create_backbone(), ["penultimate"], cache_dir=Path(tmp), engine="onnx")
        extractor.runner()
        started = time.perf_counter()
        codes = extractor.transform(paths)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{len(codes.kept)} images -> codes {codes.codes.shape} in {seconds:.0f} s "
          f"({len(paths) / seconds:.0f} img/s); peak resident memory {peak:.2f} GiB (target < 3 GiB)")


if __name__ == "__main__":
    main()
