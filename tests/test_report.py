"""The HTML report: self-contained, readable for 2 and 100 classes, and really rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import headstart
from headstart.cli import main
from headstart.data.folders import read_class_folders
from headstart.report.html import build_report
from tests.conftest import make_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def render(page, tmp_path):
    """(the DOM after load, a screenshot) of ``page`` in headless Chromium."""
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    shot = tmp_path / "shot.png"
    subprocess.run([*common, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    return dom, shot


@needs_chromium
def test_report_renders_in_chromium_with_images_and_accuracy(tmp_path, colors_data):
    data = tmp_path / "data"
    shutil.copytree(colors_data, data)
    make_image(data / "val" / "red" / "looks_blue.png", (40, 40, 200), seed=5)  # a sure mistake for the gallery
    (data / "val" / "blue" / "broken.png").write_bytes(b"")
    assert main(["fit", str(data), "--out", str(tmp_path / "run"), "-q"]) == 0
    page = tmp_path / "run" / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing fetched from the network
    dom, shot = render(page, tmp_path)
    loaded = re.search(r'data-images-loaded="(\d+)" data-images-total="(\d+)"', dom)
    assert loaded and loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 1  # the thumbnails
    assert re.search(r"<table class=\"confusion\".*?>blue</th>.*?rgba\(31, ?119, ?180", dom, re.S)  # shaded counts
    assert re.search(r"accuracy<b>0\.9\d{3}</b>", dom)
    assert "looks_blue.png" in dom and "broken.png" in dom and "Skipped files" in dom
    assert "How the strategy was chosen" in dom and "CV accuracy on training images" in dom  # auto's evidence
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_report_scales_to_100_classes(tmp_path):
    for k in range(100):
        for i in range(3):
            make_image(tmp_path / "train" / f"class{k:03d}" / f"{i}.png", ((k * 37) % 256, (k * 91) % 256, k * 2),
                       size=16, seed=k * 10 + i)
    clf = headstart.TransferClassifier(C=1.0).fit(tmp_path / "train")
    page = build_report(clf, read_class_folders(tmp_path / "train"))
    assert page.count("<tr>") >= 200 and page.count("<figure>") <= 24  # per-class and confusion rows; capped
    assert "confusion matrix" in page and "Least familiar images" in page
