"""Shared fixtures: the real images in ../shared/data, small generated image folders, an isolated cache."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if os.environ.get("HEADSTART_SHARED_DATA"):
    SHARED = Path(os.environ["HEADSTART_SHARED_DATA"])

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared test data not found at {SHARED}")


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """One feature/ONNX cache for the whole session (exports are reused); the user's cache is never touched."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["HEADSTART_CACHE_DIR"] = str(path)
    return path


def make_image(path: Path, color: tuple[int, int, int], size: int = 48, seed: int = 0) -> Path:
    """A noisy image of one dominant colour: easy to classify by colour, never identical."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="session")
def colors_data(tmp_path_factory) -> Path:
    """data/train/{red,blue}/ and data/val/{red,blue}/: 12 + 4 generated images per class."""
    root = tmp_path_factory.mktemp("colors")
    for split, n in (("train", 12), ("val", 4)):
        for name, color in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
            for i in range(n):
                seed = zlib.crc32(f"{split}/{name}/{i}".encode())  # the same images in every process
                make_image(root / split / name / f"{name}{i}.png", color, seed=seed)
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and mtime: proof that nothing was written there."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}
