"""The suite: the default `headstart fit` against every single alternative it chooses among, on every single-label
shared collection, each scored on validation images that no choice ever saw.

    python bench/suite.py [--datasets cats_vs_dogs dtd10 ...] [--store DIR] [--fresh]
    python bench/suite.py --code ../previous/src --default-only --label previous   # another checkout's default
    python bench/suite.py --code /tmp/snapshot/src        # this code, copied first: edits here cannot reach the run

Per collection, as a user would type them, each cold (its own empty cache):
- `default`: `headstart fit DATA`; then, for the cost of choosing, the cold `fit --model <what it chose> --strategy
  feature-extractor` (same run, right after) and the default re-run warm with `--classifier svm`;
- `probe <network>`: each network auto compares, alone, as a linear probe at its own best layer by auto's rule
  (`headstart advise DATA --model N` then `fit --model N --strategy feature-extractor --layer L`);
- `fine-tune <network>`: every fine-tuning the default's plan weighed and found affordable, run alone with the plan's
  options (`fit --model N --strategy fine-tune ...`).
The regret is the best alternative's validation accuracy minus the default's (in points; negative: the default beat
every alternative). `flowers` has no split: it is scored by 5 disjoint folds, every image predicted once (links to its
files in the temporary folder, the collection untouched). cifar10 holds out
fit's own stratified 20% (seed 0).

Results are stored per run (JSON, written atomically) under --store, keyed by the code they ran (a digest of its
src/headstart files): a killed run resumes where it stopped, and unchanged code is never run twice. The table, with
the date, the machine and the commit, is printed and written to <store>/<label>.md. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = ["cats_vs_dogs", "dtd10", "pneumoniamnist", "cifar10", "flowers", "sign_digits", "retinamnist",
            "omniglot5"]
FOLDS = {"flowers": 5}  # collections without a split: scored by disjoint folds, every image predicted once
FOLDS_ROOT = Path(tempfile.gettempdir()) / "headstart-suite-folds"  # the folds' links (never in the repository)


def code_key(src: Path) -> str:
    """A digest of the package's source files: results of unchanged code are reused."""
    digest = hashlib.sha256()
    for path in sorted(src.rglob("*.py")):
        digest.update(str(path.relative_to(src)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def commit() -> str:
    run = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return run.stdout.strip() or "unknown"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, no GPU" if cpu else platform.platform()


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=1))
    os.replace(partial, path)


def headstart(args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    """Wall seconds and JSON of one whole `headstart` command."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "headstart.cli", *args, "--json", "-q"], capture_output=True,
                         text=True, env=env)
    seconds = time.perf_counter() - started
    if run.returncode:
        raise RuntimeError(f"headstart {' '.join(args)} failed: {run.stderr.strip().splitlines()[-1:]}")
    return seconds, json.loads(run.stdout)


def folds(name: str, store: Path) -> list[list[str]]:
    """The data arguments of each scored split: the collection as it is, or (FOLDS) k disjoint folds made of links."""
    data = SHARED / name
    if name not in FOLDS:
        return [[str(data)]]
    k, made = FOLDS[name], []
    rng = np.random.default_rng(0)
    for cls in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in cls.iterdir() if p.is_file())
        for i, path in enumerate(rng.permutation(len(files))):
            made.append((cls.name, files[path], i % k))
    out = []
    for fold in range(k):
        root = FOLDS_ROOT / f"{name}-{fold}"
        if not (root / ".done").exists():
            for cls, path, part in made:
                link = root / ("val" if part == fold else "train") / cls / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(path)
            (root / ".done").touch()
        out.append([str(root / "train"), "--val", str(root / "val")])
    return out


class Runner:
    """Runs the arms of one collection, each stored once per code digest."""

    def __init__(self, store: Path, label: str, key: str, src: Path | None, fresh: bool,
                 keep_alternatives: bool = False):
        self.store, self.label, self.key, self.fresh = store, label, key, fresh
        self.keep_alternatives = keep_alternatives
        self.env = {**os.environ, **({"PYTHONPATH": str(src)} if src else {})}

    def arm(self, name: str, arm: str, run) -> dict | None:
        path = self.store / self.label / name / f"{arm.replace(' ', '_').replace(',', '+')}.json"
        if path.exists() and not self.fresh:
            stored = json.loads(path.read_text())
            if stored.get("code") == self.key or (self.keep_alternatives and arm != "default"):
                return stored
        print(f"  {name}: {arm} ...", flush=True)
        try:
            result = {"code": self.key, "commit": commit(), "date": str(date.today()), **run()}
        except RuntimeError as exc:
            print(f"  {name}: {arm} failed: {exc}", flush=True)
            return None
        write_json(path, result)
        return result

    def fit(self, data: list[str], *options: str, cache: str | None = None) -> tuple[float, dict]:
        """One `headstart fit`, cold unless ``cache`` is given; the model folder is thrown away."""
        with tempfile.TemporaryDirectory(prefix="suite-") as tmp:
            env = {**self.env, "HEADSTART_CACHE_DIR": cache or f"{tmp}/cache"}
            return headstart(["fit", *data, "--out", f"{tmp}/model", *options], env)


def scored(fits: list[dict]) -> dict:
    """Accuracy and balanced accuracy over every fold's validation images (confusion matrices summed)."""
    matrix = sum(np.asarray(f["validation"]["confusion_matrix"]["matrix"], np.int64) for f in fits)
    recall = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
    return {"n_val": int(matrix.sum()), "accuracy": float(np.trace(matrix) / matrix.sum()),
            "balanced_accuracy": float(recall[matrix.sum(1) > 0].mean())}


def describe(fit: dict) -> str:
    auto = fit.get("auto") or {}
    what = f"{fit['strategy']} {fit['model']}"
    if fit["strategy"] == "feature-extractor":
        what += f" @ {'+'.join(fit['layers'])}" if len(fit["layers"]) <= 2 else f" @ {len(fit['layers'])} layers"
    return what + (f" ({fit['precision']})" if fit.get("precision") == "int8" else "") + (
        "" if not auto.get("check") or auto["check"].get("kept", True) else " (fine-tuning discarded)")


#: The parts of a command that do not depend on choosing: start-up (imports), saving the model, the report.
FIXED = ("startup", "save", "report")


def _summed(runs: list[dict]) -> dict[str, float]:
    return {key: round(sum(r["seconds"].get(key, 0.0) for r in runs), 2) for key in runs[0]["seconds"]}


def default_arm(runner: Runner, name: str, splits: list[list[str]]) -> dict | None:
    """The default, cold; where it took the probe, the cold feature extractor of what it chose right after (the cost
    of choosing), and the default re-run warm with another classifier."""
    def run() -> dict:
        fits, fes, seconds, fe_seconds, warm_seconds = [], [], 0.0, 0.0, 0.0
        for data in splits:
            with tempfile.TemporaryDirectory(prefix="suite-cache-") as cache:
                s, fit = runner.fit(data, cache=cache)
                fits.append(fit)
                seconds += s
                small = not ((fit.get("auto") or {}).get("advice") or {}).get("size", {}).get("large")
                if fit["strategy"] == "feature-extractor" and small:  # the probe planned: the cost of choosing it
                    fe, fe_fit = runner.fit(data, "--model", fit["model"], "--strategy", "feature-extractor")
                    fes.append(fe_fit)
                    fe_seconds += fe
                    warm, _ = runner.fit(data, "--classifier", "svm", cache=cache)
                    warm_seconds += warm
        return {**scored(fits), "seconds": seconds, "chose": describe(fits[0]), "model": fits[0]["model"],
                "strategy": fits[0]["strategy"], "fe_seconds": fe_seconds or None, "warm_seconds": warm_seconds or None,
                "parts": _summed(fits), "fe_parts": _summed(fes) if fes else None,
                "n_train": sum(f["n_train_images"] for f in fits) // len(fits),
                "budget_s": (fits[0].get("auto") or {}).get("budget_s"), "auto": fits[0].get("auto")}
    return runner.arm(name, "default", run)


def cost_text(default: dict) -> str:
    """The default's seconds over the feature extractor's, whole and less the fixed parts (start-up, saving, the
    report), each part stated."""
    if not default.get("fe_seconds"):
        return "-"
    whole = default["seconds"] / default["fe_seconds"]
    parts, fe_parts = default.get("parts"), default.get("fe_parts")
    if not parts or not fe_parts:
        return f"{whole:.2f}"
    fixed = sum(parts.get(k, 0.0) for k in FIXED)
    fe_fixed = sum(fe_parts.get(k, 0.0) for k in FIXED)
    rest = (default["seconds"] - fixed) / max(default["fe_seconds"] - fe_fixed, 1e-9)
    return f"{whole:.2f} ({rest:.2f} less fixed {fixed:.0f} / {fe_fixed:.0f} s)"


def probe_arm(runner: Runner, name: str, splits: list[list[str]], network: str) -> dict | None:
    def run() -> dict:
        fits, seconds, layers = [], 0.0, []
        for data in splits:
            with tempfile.TemporaryDirectory(prefix="suite-cache-") as cache:
                env = {**runner.env, "HEADSTART_CACHE_DIR": cache}
                advised_s, advice = headstart(["advise", data[0], "--model", network], env)
                layer = advice["layer"]
                s, fit = runner.fit(data, "--model", network, "--strategy", "feature-extractor", "--layer", layer,
                                    cache=cache)
                fits.append(fit)
                layers.append(layer)
                seconds += advised_s + s
        return {**scored(fits), "seconds": seconds, "layers": layers}
    return runner.arm(name, f"probe {network}", run)


def fine_tune_arm(runner: Runner, name: str, splits: list[list[str]], alternative: dict) -> dict | None:
    options = alternative["options"]
    flags = ["--model", alternative["network"], "--strategy", "fine-tune"]
    for key in ("unfreeze", "epochs", "lr", "backbone_lr_mult", "image_size", "loader", "views", "head_init",
                "probe_epochs"):
        if options.get(key) is not None:
            flags += [f"--{key.replace('_', '-')}", str(options[key])]

    def run() -> dict:
        fits, seconds = [], 0.0
        for data in splits:
            s, fit = runner.fit(data, *flags)
            fits.append(fit)
            seconds += s
        return {**scored(fits), "seconds": seconds, "flags": flags}
    return runner.arm(name, f"fine-tune {alternative['network']}", run)


def alternatives_of(default: dict) -> list[dict]:
    """The fine-tunings the default's plan weighed and found affordable."""
    plan = (default.get("auto") or {}).get("plan") or {}
    return [a for a in plan.get("alternatives", []) if a.get("strategy") == "fine-tune" and a.get("fits")]


def table(rows: list[dict], label: str, previous: dict[str, dict]) -> str:
    head = ["collection", "train", "val", "default chose", "default", "balanced", "seconds", "best alternative",
            "its accuracy", "regret"] + (["previous default", "its regret"] if previous else []) + [
        "cost x FE", "warm x"]
    lines = [f"Suite of {label}: {date.today()}, {machine()}, commit {commit()}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    regrets, prev_regrets = [], []
    for row in rows:
        default, alts = row["default"], row["alternatives"]
        if default is None:
            continue
        cells = [row["name"], str(default["n_train"]), str(default["n_val"]), default["chose"],
                 f"{default['accuracy']:.4f}", f"{default['balanced_accuracy']:.4f}", f"{default['seconds']:.0f}"]
        best = max(alts, key=lambda a: alts[a]["accuracy"]) if alts else None
        if best is None:  # the default alone (--default-only): no regret to state
            cells += ["-", "-", "-"]
        else:
            regrets.append(100 * (alts[best]["accuracy"] - default["accuracy"]))
            cells += [best, f"{alts[best]['accuracy']:.4f}", f"{regrets[-1]:+.2f}"]
        if previous:
            old = previous.get(row["name"])
            if old is not None and best is not None:
                prev_regrets.append(100 * (alts[best]["accuracy"] - old["accuracy"]))
                cells += [f"{old['accuracy']:.4f} ({old['chose']}, {old['seconds']:.0f} s)", f"{prev_regrets[-1]:+.2f}"]
            else:
                cells += ["-", "-"]
        warm = default["seconds"] / default["warm_seconds"] if default.get("warm_seconds") else None
        cells += [cost_text(default), f"{warm:.1f}" if warm else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if regrets:
        lines.append(f"Mean regret {np.mean(regrets):+.2f} points over {len(regrets)} collections, worst "
                     f"{max(regrets):+.2f}" + (f"; previous default: mean {np.mean(prev_regrets):+.2f}, worst "
                                                f"{max(prev_regrets):+.2f}" if prev_regrets else ""))
    lines += ["", "Every alternative (validation accuracy, balanced accuracy, seconds):", ""]
    for row in rows:
        for arm, result in row["alternatives"].items():
            lines.append(f"- {row['name']}, {arm}: {result['accuracy']:.4f}, {result['balanced_accuracy']:.4f}, "
                         f"{result['seconds']:.0f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--store", type=Path, default=ROOT / "bench" / "results" / "suite")
    parser.add_argument("--code", type=Path, help="the src folder whose code runs (default: this checkout's): "
                                                  "another checkout's, or a copy that edits here cannot reach")
    parser.add_argument("--default-only", action="store_true", help="the default alone (e.g. a previous release's)")
    parser.add_argument("--label", help="the stored results' name (default: current, or the --code folder's name)")
    parser.add_argument("--compare", help="a stored label whose defaults join the table (e.g. previous)")
    parser.add_argument("--fresh", action="store_true", help="run again even what is stored for this code")
    parser.add_argument("--keep-alternatives", action="store_true",
                        help="reuse the stored alternatives (each network alone) whatever code they ran: only the "
                             "default runs again (each result says its commit)")
    parser.add_argument("--table", action="store_true", help="print the table of what is stored; run nothing")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is missing: the suite runs on the shared collections")
    src = args.code.resolve() if args.code else None
    label = args.label or ("current" if src is None or not args.default_only else src.parent.name)
    key = code_key((src or ROOT / "src") / "headstart")
    runner = Runner(args.store, label, key, src, args.fresh, args.keep_alternatives)
    from headstart.defaults import AUTO_MODELS  # the networks the default weighs (a copy's are this checkout's too)
    rows = []
    for name in args.datasets:
        splits = folds(name, args.store)
        if args.table:
            runner.arm = _stored_only(runner)
        print(f"{name}:", flush=True)
        default = default_arm(runner, name, splits)
        alternatives: dict[str, dict] = {}
        if not args.default_only and default is not None:
            for network in AUTO_MODELS:
                found = probe_arm(runner, name, splits, network)
                if found:
                    alternatives[f"probe {network}"] = found
            for alternative in alternatives_of(default):
                found = fine_tune_arm(runner, name, splits, alternative)
                if found:
                    alternatives[f"fine-tune {alternative['network']}"] = found
        rows.append({"name": name, "default": default, "alternatives": alternatives})
    previous = {}
    if args.compare:
        for name in args.datasets:
            path = args.store / args.compare / name / "default.json"
            if path.exists():
                previous[name] = json.loads(path.read_text())
    text = table(rows, label, previous)
    print(text)
    (args.store / f"{label}.md").write_text(text + "\n")


def _stored_only(runner: Runner):
    def arm(name: str, arm: str, run) -> dict | None:
        path = runner.store / runner.label / name / f"{arm.replace(' ', '_').replace(',', '+')}.json"
        return json.loads(path.read_text()) if path.exists() else None
    return arm


if __name__ == "__main__":
    main()
