"""Fine-tuning against the frozen-feature baseline, and training speed and memory per --unfreeze setting.

    python bench/finetune.py accuracy --data pneumoniamnist [-- extra fit options]
    python bench/finetune.py speed [--images 256]
    python bench/finetune.py profile [--images 256]
    python bench/finetune.py loader [--images 5000] [--epochs 2] [--previous WORKTREE/src]
    python bench/finetune.py activations [--images 5000] [--epochs 4] [--unfreeze 2]

accuracy: runs `headstart fit` with the feature extractor (penultimate and an earlier layer) and with fine-tuning on
the same split and prints validation accuracy of each (validation is never used for any choice).
speed: one fully unfrozen epoch at 224 px on cats_vs_dogs subsets for --unfreeze 2 and all, in fresh processes:
training images/s and peak resident memory of the training process (data-loading workers not included).
profile: where a fully unfrozen training step's time goes at 96 px on cifar10 (decode + augment, collate, forward,
backward, optimiser, checkpoint), NCHW against channels-last and float32 against bfloat16 autocast.
loader: training images/s per epoch, fully unfrozen at 96 px on a fixed cifar10 subset (every n-th image of each
class), with `--loader stream` (decoded and augmented per image in every epoch, the previous path) and with the
default `--loader memory`, in the same run, and their ratio; the trainer's own epoch timing, monitor pass excluded.
activations: `--unfreeze N` at 96 px on the same cifar10 subset, validated on a disjoint fixed 2000-image cifar10
subset: the memory loader (the frozen blocks run in every epoch), `--loader activations` for the same epochs, and
`--loader activations` for as many epochs as fit in the memory loader's wall time: accuracy, time, images/s.
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def fit(args: list[str], env: dict[str, str] | None = None) -> tuple[dict, float, float]:
    """(`fit --json` output, wall seconds, peak RSS GiB of that process alone); ``env``: added to the environment."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "headstart.cli", "fit", *args, "--json", "-q",
                                    "--no-report"], stdout=out, stderr=err, text=True,
                                   env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0), err.seek(0)
        if process.returncode:
            sys.exit(err.read())
        return json.loads(out.read()), seconds, usage.ru_maxrss / 2**20


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


def profile(n_images: int, image_size: int = 96, batch_size: int = 32, steps: int = 8) -> None:
    """Where one training step's time goes, fully unfrozen at ``image_size`` px on cifar10 (issue 15's case):
    decoding + augmenting one image (one core), collating a batch, forward, backward, optimiser step, and a
    checkpoint; the network in NCHW and channels-last, float32 and bfloat16 autocast."""
    import statistics

    import numpy as np
    import torch

    from headstart.codes.create import create_backbone
    from headstart.data.folders import read_class_folders
    from headstart.training.datamodule import ImageFiles, collate_usable
    from headstart.training.module import ClassifierNet

    train = read_class_folders(SHARED / "cifar10" / "train")
    images = train.subset(np.arange(0, len(train), max(1, len(train) // n_images))[:n_images])
    backbone = create_backbone(image_size=image_size)
    dataset = ImageFiles(images, backbone.preprocess, augment=True)
    started = time.perf_counter()
    items = [dataset[i] for i in range(len(images))]
    decode_ms = 1000 * (time.perf_counter() - started) / len(images)
    started = time.perf_counter()
    batches = [collate_usable(items[i:i + batch_size]) for i in range(0, len(items) - batch_size + 1, batch_size)]
    collate_ms = 1000 * (time.perf_counter() - started) / (len(batches) * batch_size)
    print(f"{len(images)} cifar10 images at {image_size} px, batch {batch_size}, torch threads "
          f"{torch.get_num_threads()}: decode + augment {decode_ms:.2f} ms/img (one core), collate "
          f"{collate_ms:.3f} ms/img", flush=True)
    backbone.model.reset_classifier(len(train.class_names))
    net = ClassifierNet(backbone.model, backbone.preprocess).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    for layout in ("NCHW", "channels-last"):
        net = net.to(memory_format=torch.channels_last if layout == "channels-last" else torch.contiguous_format)
        for bf16 in (False, True):
            parts: dict[str, list[float]] = {"forward": [], "backward": [], "optimiser": []}
            for step in range(steps + 2):
                x, y, _ = batches[step % len(batches)]
                t0 = time.perf_counter()
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    loss = torch.nn.functional.cross_entropy(net(x), y)
                t1 = time.perf_counter()
                optimizer.zero_grad()
                loss.backward()
                t2 = time.perf_counter()
                optimizer.step()
                t3 = time.perf_counter()
                if step >= 2:  # the first steps allocate
                    for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                        parts[name].append(1000 * seconds / batch_size)
            ms = {name: statistics.median(values) for name, values in parts.items()}
            total = sum(ms.values())
            print(f"  {layout:<13} {'bf16' if bf16 else 'fp32'}: forward {ms['forward']:.2f}, backward "
                  f"{ms['backward']:.2f}, optimiser {ms['optimiser']:.2f} ms/img = {1000 / total:.0f} img/s "
                  "for the network alone", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        torch.save({"state_dict": net.state_dict(), "optimizer": optimizer.state_dict()}, Path(tmp) / "c.ckpt")
        print(f"checkpoint (weights + AdamW state): {time.perf_counter() - started:.2f} s per epoch")


def _cifar_subset(root: Path, n_images: int, offset: int = 0) -> Path:
    """A fixed n_images subset of cifar10/train, every k-th file of each class from ``offset``, linked (never
    copied); subsets with different offsets (below the step) are disjoint."""
    classes = sorted(p for p in (SHARED / "cifar10" / "train").iterdir() if p.is_dir())
    for folder in classes:
        files = sorted(folder.iterdir())
        step = max(1, len(files) * len(classes) // n_images)
        (root / folder.name).mkdir(parents=True)
        for path in files[offset::step][: n_images // len(classes)]:
            (root / folder.name / path.name).symlink_to(path)
    return root


def loader(n_images: int, epochs: int, previous: str | None, rounds: int = 2) -> None:
    """Both loaders (and, with ``previous``, the previous release's code: its src folder) on the same subset, in fresh
    processes, alternating for ``rounds`` rounds; the best of each side: the last epoch's training images/s (the
    first includes the network's warm-up) and the whole training time (image check or decoding, epochs, monitor)."""
    sides = ["stream", "memory"] + (["previous"] if previous else [])
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = _cifar_subset(Path(tmp) / "data", n_images)
        for round_ in range(rounds):
            for name in sides:
                args = [str(data), "--out", f"{tmp}/{name}{round_}", "--strategy", "fine-tune", "--unfreeze", "all",
                        "--image-size", "96", "--epochs", str(epochs), "--probe-epochs", "0", "--patience",
                        str(epochs), "--val-fraction", "0"]
                if name == "previous":
                    out, _, _ = fit(args, env={"PYTHONPATH": previous})
                    rate = float("nan")
                else:
                    out, _, _ = fit([*args, "--loader", name])
                    rate = out["training"]["epochs"][-1]["images_per_s"]
                train_s = out["seconds"]["train"]
                print(f"round {round_ + 1} {name:<8} last epoch {rate:.1f} training images/s, training {train_s:.1f} s",
                      flush=True)
                kept = best.get(name, (0.0, float("inf")))
                best[name] = (max(kept[0], rate) if rate == rate else kept[0], min(kept[1], train_s))
    (stream_rate, stream_s), (memory_rate, memory_s) = best["stream"], best["memory"]
    print(f"memory / stream: {memory_rate / stream_rate:.2f}x training images/s ({memory_rate:.1f} vs "
          f"{stream_rate:.1f}), {stream_s / memory_s:.2f}x on the training time ({memory_s:.1f} s vs {stream_s:.1f} s);"
          f" {n_images} cifar10 images, 96 px, all layers unfrozen, {epochs} epochs, best of {rounds}")
    if previous:
        print(f"memory / previous release: {best['previous'][1] / memory_s:.2f}x on the training time "
              f"({memory_s:.1f} s vs {best['previous'][1]:.1f} s)")


def _training_seconds(training: dict) -> tuple[float, float]:
    """(seconds before the first epoch: decoding and caching; seconds per epoch: training part, last epoch)."""
    cache = training["image_cache"]
    return cache.get("seconds", 0) + cache.get("activation_seconds", 0), training["epochs"][-1]["train_s"]


def activations(n_images: int, epochs: int, unfreeze: str) -> None:
    """Streaming the frozen blocks (memory loader) against their cached activations, same subset and validation;
    the third run gets as many epochs as fit in the memory run's training time (caching included)."""
    with tempfile.TemporaryDirectory() as tmp:
        data, val = _cifar_subset(Path(tmp) / "data", n_images), _cifar_subset(Path(tmp) / "val", 2000, offset=1)
        common = [str(data), "--val", str(val), "--strategy", "fine-tune", "--unfreeze", unfreeze, "--image-size",
                  "96", "--patience", "100"]
        runs = [("memory", epochs), ("activations", epochs)]
        timing = {}
        for i, (name, n) in enumerate(runs):
            out, seconds, peak = fit([*common, "--out", f"{tmp}/{i}", "--loader", name, "--epochs", str(n)])
            training = out["training"]
            before, per_epoch = timing[i] = _training_seconds(training)
            cache = {k: v for k, v in training["image_cache"].items() if "bytes" in k}
            print(f"--unfreeze {unfreeze} --loader {name:<12} {n:>2} epochs: val accuracy "
                  f"{out['validation']['accuracy']:.4f}; {before:.1f} s decoding/caching, {per_epoch:.1f} s per "
                  f"epoch ({training['epochs'][-1]['images_per_s']:.0f} training images/s); {seconds:.0f} s in all;"
                  f" cache bytes {cache}; peak RSS {peak:.2f} GiB", flush=True)
            if i == 1:
                budget = timing[0][0] + epochs * timing[0][1]  # the memory loader's training time
                runs.append(("activations", max(epochs, int((budget - before) // per_epoch))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("accuracy", "speed", "profile", "loader", "activations"))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--unfreeze", default="2")
    parser.add_argument("--previous", metavar="SRC", help="loader: also time this src folder's code (the previous "
                                                           "release, e.g. a git worktree's src)")
    parser.add_argument("--data", default="pneumoniamnist")
    parser.add_argument("--images", type=int, default=256)
    args, extra = parser.parse_known_args()
    if args.what == "accuracy":
        accuracy(args.data, [e for e in extra if e != "--"])
    elif args.what == "profile":
        profile(args.images)
    elif args.what == "loader":
        loader(args.images if args.images != 256 else 5000, args.epochs or 2, args.previous)
    elif args.what == "activations":
        activations(args.images if args.images != 256 else 5000, args.epochs or 4, args.unfreeze)
    else:
        speed(args.images)


if __name__ == "__main__":
    main()
