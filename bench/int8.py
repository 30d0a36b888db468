"""int8 against fp32 on the same images, in one run: speed, accuracy, agreement and file size.

    python bench/int8.py [speed] [accuracy] [export] [large] [auto] [calibration]   (the first three by default;
                                                                                      about 7 minutes)

speed:    the network alone (pre-decoded batches of 8, ONNX Runtime, all cores), and the whole command
          `headstart extract DATA` (cats_vs_dogs, pneumoniamnist) with and without `--precision int8`, each into an
          empty code cache that already holds what does not depend on the data, made beforehand on other data: the
          network's card, its fp32 export and its int8 weights' parameters; int8's calibration on that dataset's
          training images is timed, as it is per dataset. Each side run twice, alternating; the faster run of each
          side is reported. large: the same on cifar10 (50000 images), once.
accuracy: validation accuracy with fp32 and int8 codes on cats_vs_dogs, dtd10 and pneumoniamnist, for the
          penultimate layer and for auto's linear path (the layer it chooses; the budget kept too small to fine-tune,
          so both sides stay linear probes). Validation images are used for scoring only.
calibration: how many calibration images the ranges need: Lite0 and Lite2 quantised on 16, 32 and 128 training
          images (two seeds each) of cats_vs_dogs, dtd10 and pneumoniamnist; the cosine of each candidate part's int8
          codes to its fp32 codes (mean over 500 validation images) and the seconds the quantisation took.
export:   dtd10 saved in fp32 and exported to ONNX in fp32 and in int8: file sizes, and the share of val images on
          which the int8 file's labels agree with the fp32 saved model's (calibrated on the recorded training images).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def network_speed(backbone, paths: list[Path], cache: Path) -> None:
    from headstart.codes.extract import FeatureExtractor
    from headstart.data.decode import decoded_batches

    batch = np.concatenate([b for _, b, _ in decoded_batches(paths[:256], backbone.preprocess, 64, 2)])
    rates = {}
    for precision in ("fp32", "int8", "fp32", "int8"):
        runner = FeatureExtractor(backbone, ["penultimate"], cache, "onnx", precision=precision,
                                  calibration=paths).runner()
        runner(batch[:8])
        started = time.perf_counter()
        for i in range(0, len(batch), 8):
            runner(batch[i:i + 8])
        rates[precision] = max(rates.get(precision, 0), len(batch) / (time.perf_counter() - started))
    print(f"network alone (batch 8, {os.cpu_count()} threads): fp32 {rates['fp32']:.0f} img/s, int8 "
          f"{rates['int8']:.0f} img/s, ratio {rates['int8'] / rates['fp32']:.2f}")


def whole_command(data: Path, cache: Path, precision: str) -> float:
    """Seconds for `headstart extract DATA` into a fresh code cache holding only what does not depend on the data:
    the network's card, its fp32 export and its int8 weights' parameters (made beforehand on other data)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "cache"
        (fresh / "onnx").mkdir(parents=True)
        if (cache / "backbones").is_dir():
            shutil.copytree(cache / "backbones", fresh / "backbones")
        for kept in (cache / "onnx").iterdir():
            if "-int8-" not in kept.name or "-int8-weights-" in kept.name:
                shutil.copy(kept, fresh / "onnx" / kept.name)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "headstart", "extract", str(data), "--cache-dir", str(fresh),
                        "--precision", precision, "--quiet"], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def speed(cache: Path, datasets: tuple[str, ...] = ("cats_vs_dogs", "pneumoniamnist"), repeats: int = 2) -> None:
    from headstart.codes.create import create_backbone
    from headstart.data.splits import find_splits

    backbone = create_backbone(cache_dir=cache)  # its card lands in the cache
    other = find_splits(DATA / "dtd10").train.paths  # the one-time fp32 export, made on other data
    network_speed(backbone, list(other), cache)
    for name in datasets:
        data = DATA / name
        splits = find_splits(data, val_fraction=0.0)
        n = len(splits.train) + (len(splits.val) if splits.val else 0)
        seconds: dict[str, float] = {}
        for precision in ("fp32", "int8") * repeats:
            took = whole_command(data, cache, precision)
            seconds[precision] = min(seconds.get(precision, took), took)
            print(f"  headstart extract {name} --precision {precision}: {took:.1f} s", flush=True)
        print(f"whole command, {name}, {n} images: fp32 {seconds['fp32']:.1f} s ({n / seconds['fp32']:.0f} img/s), "
              f"int8 {seconds['int8']:.1f} s ({n / seconds['int8']:.0f} img/s), "
              f"ratio {seconds['fp32'] / seconds['int8']:.2f}", flush=True)


def large(cache: Path) -> None:
    """The whole command on cifar10's 50000 images, once each way (about 5 minutes)."""
    speed(cache, ("cifar10",), repeats=1)


def accuracy(cache: Path) -> None:
    from headstart import TransferClassifier
    from headstart.data.splits import find_splits

    for name in ("cats_vs_dogs", "dtd10", "pneumoniamnist"):
        splits = find_splits(DATA / name)
        for label, params in (("penultimate", {"strategy": "feature-extractor"}),
                              ("auto's layer", {"strategy": "auto", "budget": 1.0})):
            scores = {}
            for precision in ("fp32", "int8"):
                clf = TransferClassifier(cache_dir=cache, precision=precision, **params).fit(splits.train)
                scores[precision] = clf.score(splits.val)
                layer = "+".join(clf.layers_)
            print(f"{name:15s} {label:13s} ({layer}): val accuracy fp32 {scores['fp32']:.4f}, int8 "
                  f"{scores['int8']:.4f}, difference {100 * (scores['int8'] - scores['fp32']):+.2f} points",
                  flush=True)


def calibration(cache: Path, counts: tuple[int, ...] = (16, 32, 128)) -> None:
    from headstart.codes.backbones import candidate_layers, embedded_weights_path
    from headstart.codes.create import create_backbone
    from headstart.codes.quantize import calibration_sample, quantize
    from headstart.codes.runners import fp32_network
    from headstart.codes.session import onnx_session
    from headstart.data.splits import find_splits

    for model in ("tf_efficientnet_lite0", "tf_efficientnet_lite2"):
        if embedded_weights_path(model) is None:
            print(f"{model}: weights not installed, skipped")
            continue
        backbone = create_backbone(model)
        parts = sorted({p for c in candidate_layers(backbone) for p in c.split("+")})
        network = fp32_network(backbone, parts, cache)
        reference = onnx_session(network)
        decoded = functools.partial(_decoded, backbone.preprocess)
        for name in ("cats_vs_dogs", "dtd10", "pneumoniamnist"):
            splits = find_splits(DATA / name)
            val = decoded(list(splits.val.paths)[::2][:500], 8)
            fp32 = _codes(reference, val)
            for count in counts:
                for seed in (0, 1):
                    started = time.perf_counter()
                    int8 = onnx_session_from(quantize(network, decoded(calibration_sample(splits.train.paths, count,
                                                                                          seed), 4)))
                    took = time.perf_counter() - started
                    cosine = [float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
                              for a, b in zip(fp32, _codes(int8, val))]
                    print(f"{model} {name:15s} {count:4d} images (seed {seed}): decoded and quantised in {took:.2f} s; "
                          f"cosine to fp32 ({', '.join(parts)}) {' '.join(f'{c:.4f}' for c in cosine)}", flush=True)


def _decoded(preprocess, paths: list[Path], size: int) -> list[np.ndarray]:
    from headstart.data.decode import decoded_batches

    return [b for _, b, _ in decoded_batches(paths, preprocess, size, 2) if b is not None]


def _codes(session, batches: list[np.ndarray]) -> list[np.ndarray]:
    """Every output of ``session`` over ``batches``, concatenated per output."""
    outputs = [session.run(None, {"images": b}) for b in batches]
    return [np.concatenate([out[k] for out in outputs]) for k in range(len(outputs[0]))]


def onnx_session_from(data: bytes):
    import onnxruntime

    return onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])


def export(cache: Path) -> None:
    from headstart import TransferClassifier
    from headstart.data.splits import find_splits
    from headstart.deploy.export import export as export_model
    from headstart.deploy.runtime import OnnxClassifier

    splits = find_splits(DATA / "dtd10")
    with tempfile.TemporaryDirectory() as tmp:
        clf = TransferClassifier(cache_dir=cache, strategy="auto").fit(splits.train)
        reference = clf.predict_proba(splits.val.paths).argmax(1)
        sizes, agree = {}, {}
        for precision in ("fp32", "int8"):
            out = export_model(clf, Path(tmp) / f"{precision}.onnx", precision=precision)
            sizes[precision] = out.stat().st_size / 2**20
            labels = OnnxClassifier(out).predict_files(splits.val.paths).proba.argmax(1)
            agree[precision] = float(np.mean(labels == reference))
            accuracy = float(np.mean(labels == splits.val.labels))
            print(f"dtd10 exported {precision}: {sizes[precision]:.1f} MB, val accuracy {accuracy:.4f}, labels agree "
                  f"with the fp32 saved model on {agree[precision]:.2%} of {len(reference)} val images")
        print(f"int8 file: {sizes['int8'] / sizes['fp32']:.1%} of the fp32 file's size")


def auto(cache: Path, budget: str = "200") -> None:
    """auto choosing int8 by itself: the cold default `fit` of cifar10 with a budget too small to fine-tune or to
    measure every image (the probe path), against the same with --precision fp32; each into an empty cache."""
    import json

    for label, options in (("auto's choice", []), ("--precision fp32", ["--precision", "fp32"])):
        with tempfile.TemporaryDirectory() as own:
            started = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "headstart", "fit", str(DATA / "cifar10"), "--budget", budget,
                                  "--out", f"{own}/model", "--json", "-q", *options], capture_output=True, text=True,
                                 env={**os.environ, "HEADSTART_CACHE_DIR": f"{own}/cache"})
            seconds = time.perf_counter() - started
        if run.returncode:
            raise SystemExit(run.stderr[-2000:])
        fit = json.loads(run.stdout)
        said = fit["auto"].get("precision", {})
        print(f"cifar10 --budget {budget}, {label}: {seconds:.0f} s, codes {fit['precision']}, val accuracy "
              f"{fit['validation']['accuracy']:.4f}; {fit['auto']['decision']}; precision: "
              f"{json.dumps(said)}", flush=True)


def main() -> None:
    parts = sys.argv[1:] or ["speed", "accuracy", "export"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        for part in parts:
            started = time.perf_counter()
            {"speed": speed, "large": large, "accuracy": accuracy, "export": export, "auto": auto,
             "calibration": calibration}[part](cache)
            print(f"[{part}: {time.perf_counter() - started:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
