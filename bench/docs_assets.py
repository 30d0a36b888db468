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


def suite_plot(label: str = "current") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, default, best, best_name = [], [], [], []
    for folder in sorted((STORE / label).iterdir()):
        arms = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
        if "default" not in arms or len(arms) < 2:
            continue
        others = {k: v for k, v in arms.items() if k != "default"}
        top = max(others, key=lambda k: others[k]["accuracy"])
        names.append(folder.name)
        default.append(100 * arms["default"]["accuracy"])
        best.append(100 * others[top]["accuracy"])
        best_name.append(top.replace("_", " ").replace("tf efficientnet ", ""))
    fig, ax = plt.subplots(figsize=(10, 4))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], default, 0.4, label="default fit")
    ax.bar([i + 0.2 for i in x], best, 0.4, label="best single alternative")
    for i, (b, n) in enumerate(zip(best, best_name)):
        ax.text(i + 0.2, b + 0.5, n, ha="center", fontsize=7, rotation=90, va="bottom")
    ax.set_xticks(list(x), names, rotation=20)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(min(default + best) - 10, 105)
    ax.legend(loc="lower right")
    ax.set_title("bench/suite.py: the default against each collection's best single alternative")
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
