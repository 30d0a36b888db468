"""One image from a model folder, three ways, in one run: the folder's own model.onnx (the default, torch-free), the
folder through PyTorch and timm (`--engine torch`, what the default was before folders held model.onnx), and the
file `headstart export` writes.

    python bench/predict.py [--model runs/dtd10] [--repeats 5]

Without --model, dtd10 is fitted first into a temporary folder (a default `fit`). Each way runs as its own command
`headstart predict ... --json` on the same image, alternating, --repeats times; the median wall time of the
command and its own `seconds` (start-up, predict) are printed, with the ratio to the exported file's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def headstart(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "headstart.cli", *args], capture_output=True, text=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        model = args.model
        if model is None:
            model = Path(tmp) / "dtd10"
            headstart("fit", str(DATA / "dtd10"), "--out", str(model), "--no-report", "-q")
        exported = Path(tmp) / "exported.onnx"
        headstart("export", str(model), "--out", str(exported), "-q")
        image = next((DATA / "dtd10" / "val").rglob("*.jpg"))
        ways = {"folder (its model.onnx)": [str(model)], "folder --engine torch": [str(model), "--engine", "torch"],
                "exported file": [str(exported)]}
        runs: dict[str, list[tuple[float, dict]]] = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way, target in ways.items():
                started = time.perf_counter()
                done = headstart("predict", *target, str(image), "--json")
                runs[way].append((time.perf_counter() - started, json.loads(done.stdout)["seconds"]))
        base = statistics.median(wall for wall, _ in runs["exported file"])
        print(f"one image ({image.name}), median of {args.repeats} commands each, {model}")
        print(f"{'way':<26}{'wall s':>8}{'start-up s':>12}{'predict s':>11}{'x exported':>12}")
        for way, found in runs.items():
            wall = statistics.median(w for w, _ in found)
            startup = statistics.median(s["startup"] for _, s in found)
            predict = statistics.median(s["predict"] for _, s in found)
            print(f"{way:<26}{wall:>8.3f}{startup:>12.3f}{predict:>11.3f}{wall / base:>12.2f}")


if __name__ == "__main__":
    main()
