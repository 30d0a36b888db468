"""The advisor on the shared datasets: its measurements and choice, every candidate's validation accuracy, and auto.

    python bench/advisor.py [--datasets cats_vs_dogs dtd10 pneumoniamnist cifar10] [--budget 600]

Validation splits are used only to score here, never for a choice. The candidates are the advisor's linear probes
(one per candidate layer) and its fine-tuning plan (`fine_tune_options`: everything unfrozen, the suggested image
size); `auto` is `headstart fit --strategy auto --budget B`. When auto ran that same fine-tuning plan and kept it,
its run is the fine-tuning candidate's too (same command, same seed) and is not repeated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import headstart
from headstart.auto.advice import advise, fine_tune_options, suggested_image_size
from headstart.auto.measure import measure_similarity
from headstart.codes.create import create_backbone
from headstart.codes.extract import FeatureExtractor
from headstart.data.folders import files_under
from headstart.data.splits import find_splits

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def cli_fit(data: Path, out: Path, *options: str) -> tuple[dict, float]:
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "headstart.cli", "fit", str(data), "--out", str(out), "--json", "-q",
                          "--no-report", *options], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(run.stderr)
    return json.loads(run.stdout), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cats_vs_dogs", "dtd10", "pneumoniamnist", "cifar10"])
    parser.add_argument("--budget", type=float, default=600)
    parser.add_argument("--skip-fine-tune", action="store_true")
    args = parser.parse_args()
    lite0 = create_backbone()
    reference = files_under(SHARED / "imagenet_samples" / "images")
    sim = measure_similarity(lite0, FeatureExtractor(lite0, ["penultimate"]).transform(reference[:500]).codes)
    print(f"imagenet_samples: similarity ratio {sim['ratio']} -> {'similar' if sim['similar'] else 'different'}",
          flush=True)
    for name in args.datasets:
        splits = find_splits(SHARED / name)
        started = time.perf_counter()
        advice = advise(lite0, splits.train)
        took = time.perf_counter() - started
        print(f"\n{name}: {advice.size['images']} train / {len(splits.val)} val; advise {took:.0f} s; "
              f"similarity ratio {advice.similarity['ratio']} -> {'/'.join(advice.cell)}; choice "
              f"{advice.strategy} {advice.layer} {advice.options}", flush=True)
        results = {}
        for layer, cv in advice.layers.items():
            clf = headstart.TransferClassifier(layer=layer).fit(splits.train)
            results[f"probe {layer}"] = clf.evaluate(splits.val)["accuracy"]
            print(f"  probe {layer:<24} CV on train {cv:.4f}  val {results[f'probe {layer}']:.4f}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            fit, seconds = cli_fit(SHARED / name, Path(tmp) / "auto", "--strategy", "auto", "--budget",
                                   str(args.budget))
            auto, decision = fit["validation"]["accuracy"], fit["auto"]
            print(f"  auto: {decision['decision']}; val {auto:.4f}; deciding {decision['seconds']:.0f} s + training "
                  f"{fit['seconds']['total']:.0f} s (budget {args.budget:.0f} s), {seconds:.0f} s in all with "
                  "start-up, validation and saving", flush=True)
            if not args.skip_fine_tune:
                size = suggested_image_size(lite0, advice.size["median_short_side"])
                plan = fine_tune_options(advice.size["images"], advice.similarity["similar"], size)
                options = [f"--{k.replace('_', '-')}={v}" for k, v in plan.items() if v is not None]
                if decision.get("check", {}).get("kept") and decision["options"]["epochs"] == plan["epochs"]:
                    results["fine-tune"], took = auto, "the auto run"
                else:
                    fit, seconds = cli_fit(SHARED / name, Path(tmp) / "ft", "--strategy", "fine-tune", *options)
                    results["fine-tune"], took = fit["validation"]["accuracy"], f"{seconds:.0f} s"
                print(f"  fine-tune {' '.join(options)}: val {results['fine-tune']:.4f} ({took})", flush=True)
        best = max(results, key=results.get)
        print(f"  best candidate {best} {results[best]:.4f}; auto {auto:.4f}; gap "
              f"{100 * (results[best] - auto):.2f} points", flush=True)


if __name__ == "__main__":
    main()
