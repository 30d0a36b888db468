"""CNN-code extraction speed: the usual eager-PyTorch pipeline against headstart's, on the same images, one process.

    python bench/extract.py [--data ../shared/data/cats_vs_dogs] [--limit 1000] [--model tf_efficientnet_lite0]

Prints images/s for: the baseline (timm model in eager PyTorch, single process, PIL + timm's eval transforms,
batch 32), headstart cold (empty code cache; the ONNX export is built beforehand and timed apart), the frozen
network alone under ONNX Runtime (pre-decoded batches: the upper bound), and headstart warm (cached codes); with ratios.
With --fit: the whole cold default `headstart fit DATA` command (empty cache: the export, deciding, the classifier,
validation, the leak check, saving, the report), and the same with `--model` the baseline's network alone, against
the baseline's extraction alone of the same train and val images (every image, not --limit), in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headstart.codes.codesnet import CodesNet
from headstart.codes.create import create_backbone
from headstart.codes.extract import FeatureExtractor
from headstart.data.folders import files_under


def baseline(backbone, paths: list[Path], batch_size: int = 32) -> np.ndarray:
    """What most users write: PIL + timm transforms + eager PyTorch, one process."""
    import timm

    config = timm.data.resolve_data_config({}, model=backbone.model)
    transform = timm.data.create_transform(**config)
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i:i + batch_size]])
            out.append(backbone.model(batch).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/cats_vs_dogs"))
    parser.add_argument("--limit", type=int, default=1000, help="images used (0: all)")
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--fit", action="store_true", help="also the whole cold fit against the baseline's extraction")
    args = parser.parse_args()

    paths = files_under(Path(args.data))
    paths = paths[:: max(1, len(paths) // args.limit)][: args.limit] if args.limit else paths
    n = len(paths)
    backbone = create_backbone(args.model)
    print(f"{n} images from {args.data}; model {args.model}; torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        started = time.perf_counter()
        extractor = FeatureExtractor(backbone, ["penultimate"], cache_dir=cache, engine="onnx")
        extractor.runner()
        print(f"ONNX export + session (once per model/layer, cached on disk): {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        ours = extractor.transform(paths)
        cold = time.perf_counter() - started

        started = time.perf_counter()
        again = FeatureExtractor(backbone, ["penultimate"], cache_dir=cache, engine="onnx").transform(paths)
        warm = time.perf_counter() - started
        assert again.extracted == 0

        batches = [np.stack([backbone.preprocess.load(p) for p in paths[i:i + 8]]) for i in range(0, n, 8)]
        runner = extractor.runner()
        runner(batches[0])
        started = time.perf_counter()
        for batch in batches:
            runner(batch)
        alone = time.perf_counter() - started

    started = time.perf_counter()
    reference = baseline(backbone, paths)
    base = time.perf_counter() - started
    with torch.inference_mode():
        eager = torch.cat(CodesNet(backbone, ["penultimate"])(torch.from_numpy(batches[0])), 1).numpy()

    rate = {name: n / seconds for name, seconds in
            (("baseline", base), ("cold", cold), ("alone", alone), ("warm", warm))}
    print(f"baseline (eager PyTorch, PIL + timm transforms, batch 32): {rate['baseline']:8.1f} img/s")
    print(f"headstart, cold cache (decode overlapped, ONNX Runtime):   {rate['cold']:8.1f} img/s")
    print(f"network alone under ONNX Runtime (pre-decoded, batch 8):    {rate['alone']:8.1f} img/s")
    print(f"headstart, warm cache:                                      {rate['warm']:8.1f} img/s ({warm:.3f} s)")
    print(f"ratio cold / baseline: {rate['cold'] / rate['baseline']:.2f}x (target >= 5x)")
    print(f"ratio cold / network alone: {rate['cold'] / rate['alone']:.0%} (target >= 70%)")
    print(f"ratio warm / cold: {cold / warm:.0f}x faster (target >= 50x)")
    print(f"max |headstart - baseline| over all codes: {np.abs(ours.codes - reference[ours.kept]).max():.2e}; "
          f"ONNX vs eager on the same batch: {np.abs(ours.codes[:len(eager)] - eager).max():.2e}")
    if args.fit:
        whole_fit(backbone, Path(args.data))


def whole_fit(backbone, data: Path) -> None:
    """The whole cold default `fit` (a child process, empty cache), and the same with ``--model`` the baseline's
    network alone, against the baseline extraction of their images."""
    import json
    import subprocess
    import sys

    paths = files_under(data)
    started = time.perf_counter()
    baseline(backbone, paths)
    base = time.perf_counter() - started
    print(f"baseline extraction alone ({backbone.name}) of all {len(paths)} images: {base:.1f} s")
    for options in ([], ["--model", backbone.name]):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "headstart", "fit", str(data), *options, "--cache-dir",
                                   f"{tmp}/cache", "--out", f"{tmp}/model", "--json", "--quiet"],
                                  capture_output=True, text=True)
            fit_s = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        result = json.loads(done.stdout)
        print(f"whole cold `headstart fit {data.name}{' ' if options else ''}{' '.join(options)}`: {fit_s:.1f} s "
              f"({result['strategy']}, {result['model']}, validation accuracy {result['validation']['accuracy']:.4f},"
              f" parts {result['seconds']}); ratio {base / fit_s:.2f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
