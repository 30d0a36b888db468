"""The documentation's pictures, made from the real thing: the report and the audit page of the embedded demo (headless
Chromium screenshots), and the suite's table as a plot (from bench/results/suite).

    python bench/docs_assets.py [--only report audit suite]

Writes docs/assets/report.png, audit.png and suite.png. Needs Chromium (`apt-get install chromium`) for the two
pages.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "docs" / "assets"
STORE = ROOT / "bench" / "results" / "suite"


def screenshot(page: Path, png: Path, height: int = 1500) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Chromium is needed for the pages' pictures: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--disable-background-networking", "--disable-component-update", "--no-first-run",
                        f"--user-data-dir={profile}", f"--window-size=1150,{height}", f"--screenshot={png}",
                        page.as_uri()], check=True, capture_output=True, timeout=120)


def headstart(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "headstart.cli", *args, "-q"], check=True, capture_output=True)


def pages(only: set[str]) -> None:
    from headstart.datasets import flowers

    with tempfile.TemporaryDirectory() as tmp:
        if "report" in only:
            headstart("fit", str(flowers()), "--out", f"{tmp}/flowers")
            screenshot(Path(tmp) / "flowers" / "report.html", ASSETS / "report.png")
        if "audit" in only:
            headstart("audit", str(flowers()), "--out", f"{tmp}/audit.html")
            screenshot(Path(tmp) / "audit.html", ASSETS / "audit.png")


def regrets(label: str) -> dict[str, float]:
    """Each collection's regret in points (its best single alternative minus the default) under ``label``; the
    alternatives are always the current label's (a previous release's defaults are stored alone)."""
    out = {}
    for folder in sorted((STORE / "current").iterdir()):
        others = [json.loads(p.read_text())["accuracy"] for p in folder.glob("*.json") if p.stem != "default"]
        default = STORE / label / folder.name / "default.json"
        if others and default.exists():
            out[folder.name] = 100 * (max(others) - json.loads(default.read_text())["accuracy"])
    return out


def suite_plot(labels: tuple[str, ...] = ("current", "previous")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = {label: regrets(label) for label in labels if (STORE / label).is_dir()}
    names = list(measured["current"])
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(measured)
    for k, (label, values) in enumerate(measured.items()):
        xs = [i + (k - (len(measured) - 1) / 2) * width for i, name in enumerate(names) if name in values]
        ax.bar(xs, [values[name] for name in names if name in values], width,
               label="this release" if label == "current" else f"{label} release")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axhline(1, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("regret (points; below 0: the default won)")
    ax.legend(loc="upper left")
    ax.set_title("bench/suite.py: the best single alternative minus the default, per collection")
    fig.tight_layout()
    fig.savefig(ASSETS / "suite.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=["report", "audit", "suite"])
    args = parser.parse_args()
    ASSETS.mkdir(parents=True, exist_ok=True)
    pages(set(args.only))
    if "suite" in args.only:
        suite_plot()


if __name__ == "__main__":
    main()
