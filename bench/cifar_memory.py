"""Peak resident memory on CIFAR-10 train (50000 images): cold CNN-code extraction, and auto's probe path.

    python bench/cifar_memory.py [extract] [probe] [--limit 0] [--cache-dir DIR]

extract: cold extraction of the penultimate codes in this process: time and peak resident memory.
probe:   the whole `headstart fit cifar10 --budget 200` (too small to fine-tune: auto measures all 40000 training
         images, scores its 8 candidate layers and fits the chosen linear probe), a child process: its peak
         resident memory, seconds, layer and validation accuracy. With --cache-dir, a cache that already holds the
         codes makes it a run of the probe path alone (goal: under 2.5 GB); without, the codes are computed too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from headstart.codes.create import create_backbone
from headstart.codes.extract import FeatureExtractor
from headstart.data.folders import read_class_folders

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def extract(limit: int) -> None:
    images = read_class_folders(SHARED / "cifar10" / "train")
    paths = images.paths[:limit] if limit else images.paths
    with tempfile.TemporaryDirectory() as tmp:
        extractor = FeatureExtractor(create_backbone(), ["penultimate"], cache_dir=Path(tmp), engine="onnx")
        extractor.runner()
        started = time.perf_counter()
        codes = extractor.transform(paths)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{len(codes.kept)} images -> codes {codes.codes.shape} in {seconds:.0f} s "
          f"({len(paths) / seconds:.0f} img/s); peak resident memory {peak:.2f} GiB (target < 3 GiB)")


def probe(cache_dir: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_dir or f"{tmp}/cache"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "headstart", "fit", str(SHARED / "cifar10"), "--budget", "200",
                               "--cache-dir", cache, "--out", f"{tmp}/model", "--json", "--quiet"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    result = json.loads(done.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    print(f"fit cifar10 --budget 200 ({'given' if cache_dir else 'empty'} cache): {result['strategy']} on "
          f"{'+'.join(result['layers'])}, validation accuracy {result['validation']['accuracy']:.4f}, "
          f"{seconds:.0f} s, peak resident memory {peak:.2f} GB (goal < 2.5 GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["extract", "probe"])
    parser.add_argument("--limit", type=int, default=0, help="images extracted (0: all)")
    parser.add_argument("--cache-dir", help="probe: a code cache to use (and fill)")
    args = parser.parse_args()
    if "extract" in args.parts:
        extract(args.limit)
    if "probe" in args.parts:
        probe(args.cache_dir)


if __name__ == "__main__":
    main()
