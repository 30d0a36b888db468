"""Fine-tuning against the frozen-feature baseline, and training speed and memory per --unfreeze setting.

    python bench/finetune.py accuracy --data pneumoniamnist [-- extra fit options]
    python bench/finetune.py speed [--images 256]

accuracy: runs `headstart fit` with the feature extractor (penultimate and an earlier layer) and with fine-tuning on
the same split and prints validation accuracy of each (validation is never used for any choice).
speed: one fully unfrozen epoch at 224 px on cats_vs_dogs subsets for --unfreeze 2 and all, in fresh processes:
training images/s and peak resident memory of the training process (data-loading workers not included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def fit(args: list[str]) -> tuple[dict, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "headstart.cli", "fit", *args, "--json", "-q", "--no-report"],
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return json.loads(result.stdout), time.perf_counter() - started, peak


def accuracy(data: str, extra: list[str]) -> None:
    root = SHARED / data
    with tempfile.TemporaryDirectory() as tmp:
        frozen = ["--strategy", "feature-extractor"]
        runs = [("frozen penultimate", [*frozen, "--layer", "penultimate"]),
                ("frozen blocks.5", [*frozen, "--layer", "blocks.5"]),
                ("fine-tune " + " ".join(extra), ["--strategy", "fine-tune", *extra])]
        for i, (name, options) in enumerate(runs):
            out, seconds, _ = fit([str(root), "--out", f"{tmp}/{i}", *options])
            val = out["validation"]
            print(f"{data:<16}{name:<60} val accuracy {val['accuracy']:.4f} balanced "
                  f"{val['balanced_accuracy']:.4f} ({seconds:.0f} s)", flush=True)


def _link_subset(root: Path, n_images: int) -> Path:
    """cats_vs_dogs/train subset of n_images, linked (never copied)."""
    for name in ("cat", "dog"):
        folder = root / name
        folder.mkdir(parents=True)
        for path in sorted((SHARED / "cats_vs_dogs" / "train" / name).iterdir())[: n_images // 2]:
            (folder / path.name).symlink_to(path)
    return root


def _one_epoch(data: Path, out: Path, unfreeze: str) -> tuple[float, float]:
    """(seconds, peak RSS GiB of the training process) for one fully unfrozen epoch."""
    code = ("import json,resource,time\nfrom headstart.cli import main\nt=time.perf_counter()\n"
            f"assert main(['fit','{data}','--strategy','fine-tune','--unfreeze','{unfreeze}','--epochs','1',"
            f"'--probe-epochs','0','--val-fraction','0','--out','{out}','-q','--no-report']) == 0\n"
            "print(json.dumps([time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))")
    with tempfile.TemporaryDirectory() as cache:  # a fresh code cache: no run reuses another's exports or codes
        timed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={**os.environ, "HEADSTART_CACHE_DIR": cache})
    if timed.returncode:
        sys.exit(timed.stderr)
    seconds, rss = json.loads(timed.stdout.strip().splitlines()[-1])
    return seconds, rss / 2**20


def speed(n_images: int) -> None:
    """Images/s from the difference of an n and a 2n-image epoch, so start-up and evaluation cancel out."""
    with tempfile.TemporaryDirectory() as tmp:
        small, large = _link_subset(Path(tmp) / "s", n_images), _link_subset(Path(tmp) / "l", 2 * n_images)
        for unfreeze in ("2", "all"):
            t_small, _ = _one_epoch(small, Path(tmp) / f"s{unfreeze}", unfreeze)
            t_large, rss = _one_epoch(large, Path(tmp) / f"l{unfreeze}", unfreeze)
            rate = 0.9 * n_images / (t_large - t_small)  # 90% of the images train, 10% monitor early stopping
            print(f"--unfreeze {unfreeze:<4} at 224 px: {rate:.1f} training images/s, peak RSS of the training "
                  f"process {rss:.2f} GiB (epochs of {n_images} and {2 * n_images} images: "
                  f"{t_small:.0f} s, {t_large:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("accuracy", "speed"))
    parser.add_argument("--data", default="pneumoniamnist")
    parser.add_argument("--images", type=int, default=256)
    args, extra = parser.parse_known_args()
    if args.what == "accuracy":
        accuracy(args.data, [e for e in extra if e != "--"])
    else:
        speed(args.images)


if __name__ == "__main__":
    main()
