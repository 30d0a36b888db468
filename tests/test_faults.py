"""Faults of the machine: a full, read-only or unusable disk costs one line and loses nothing; every file gets the
user's umask; two processes share one cache.

Small disks are tmpfs mounts (root only, as CI runs); where mounting is not allowed those tests skip and say why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.errors import CannotWrite


def _mount(folder: Path, size: str, read_only: bool = False) -> str | None:
    """Mount a tmpfs of ``size`` at ``folder``; the reason it cannot be done, or None."""
    if os.geteuid() != 0:
        return "mounting a small file system needs root"
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                         text=True)
    return None if run.returncode == 0 else f"cannot mount a tmpfs here: {run.stderr.strip()}"


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str = "3m", read_only: bool = False):
    folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    reason = _mount(folder, size, read_only)
    if reason:
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` until ``leave`` bytes are free."""
    free = shutil.disk_usage(disk).free - leave
    if free > 0:
        with open(disk / "filler.bin", "wb") as f:
            f.write(b"\0" * free)


def headstart_cli(*args: str, cache: Path | None = None, umask: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if cache is not None:
        env["HEADSTART_CACHE_DIR"] = str(cache)
    return subprocess.run([sys.executable, "-m", "headstart.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def one_line_error(run: subprocess.CompletedProcess, *words: str) -> None:
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    for word in words:
        assert word in run.stderr, run.stderr


def strays(folder: Path) -> list[str]:
    """Temporary or partial files left below ``folder``."""
    return [str(p) for p in folder.rglob("*") if ".tmp" in p.name or ".partial" in p.name or ".old-" in p.name]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(path.name.encode() + (path.read_bytes() if path.is_file() else b""))
    return h.hexdigest()


def test_a_full_cache_disk_warns_once_and_the_fit_goes_on(tmp_path, colors_data):
    with small_disk(tmp_path, "3m") as disk:
        run = headstart_cli("fit", str(colors_data), "--out", str(tmp_path / "m"), "-q", "--json", cache=disk)
        assert run.returncode == 0, run.stderr
        assert run.stderr.count("\n") == 1 and "results are not cached" in run.stderr, run.stderr
        assert "No space left on device" in run.stderr and "Traceback" not in run.stderr
        assert json.loads(run.stdout)["validation"]["accuracy"] == 1.0
        assert not strays(disk)
    assert list(headstart.load(tmp_path / "m").predict(colors_data / "val" / "red")) == ["red"] * 4


def test_a_read_only_or_uncreatable_cache_warns_once_and_the_fit_goes_on(tmp_path, colors_data):
    with small_disk(tmp_path, "1m", read_only=True) as disk:
        run = headstart_cli("fit", str(colors_data), "--out", str(tmp_path / "m"), "-q", "--strategy",
                            "feature-extractor", cache=disk / "not" / "there")  # neither writable nor creatable
        assert run.returncode == 0, run.stderr
        assert run.stderr.count("\n") == 1 and "Read-only file system" in run.stderr, run.stderr


def test_a_cache_folder_that_vanishes_mid_run_is_made_again(tmp_path, colors_data):
    from headstart.codes.create import create_backbone
    from headstart.codes.extract import FeatureExtractor

    paths = sorted((colors_data / "train").rglob("*.png"))
    extractor = FeatureExtractor(create_backbone(), ["penultimate"], tmp_path / "cache")
    first = extractor.transform(paths[:12])
    shutil.rmtree(tmp_path / "cache")  # deleted by hand, or by a cleaner, while the run goes on
    second = extractor.transform(paths)
    assert second.extracted == len(paths) and np.allclose(second.codes[:12], first.codes, atol=1e-5)
    again = FeatureExtractor(create_backbone(), ["penultimate"], tmp_path / "cache").transform(paths)
    assert again.extracted == 0  # kept again


def test_a_model_folder_that_cannot_fit_is_refused_before_any_work(tmp_path, colors_data):
    with small_disk(tmp_path, "3m") as disk:
        run = headstart_cli("fit", str(colors_data), "--out", str(disk / "model"), "-q", cache=tmp_path / "cache")
        one_line_error(run, "not enough space for the model folder", str(disk), "MB", "free")
        assert not list(disk.iterdir())  # nothing written
        assert not (tmp_path / "cache").exists()  # refused before any image was read


def test_a_save_that_runs_out_of_space_keeps_the_previous_model(tmp_path, colors_data, monkeypatch):
    clf = headstart.TransferClassifier(strategy="feature-extractor", C=1.0).fit(colors_data / "train")
    with small_disk(tmp_path, "40m") as disk:
        clf.save(disk / "model")
        before = digest(disk / "model")
        fill(disk, leave=2_000_000)
        with pytest.raises(CannotWrite, match="not enough space for the model folder"):
            clf.save(disk / "model", overwrite=True)  # refused up front
        monkeypatch.setattr("headstart.artifact.space_for", lambda *a, **k: None)  # as if the disk filled later
        with pytest.raises(CannotWrite, match="No space left on device.*previous model, if any, is unchanged"):
            clf.save(disk / "model", overwrite=True)
        assert digest(disk / "model") == before and not strays(disk)
        assert list(headstart.load(disk / "model").predict(colors_data / "val" / "blue")) == ["blue"] * 4


def test_export_report_and_audit_outputs_on_a_full_disk_are_one_line(tmp_path, colors_data):
    clf = headstart.TransferClassifier(strategy="feature-extractor", C=1.0).fit(colors_data / "train")
    clf.save(tmp_path / "model")
    with small_disk(tmp_path, "1m") as disk:
        fill(disk, leave=20_000)
        for args, words in ((["export", str(tmp_path / "model"), "--out", str(disk / "m.onnx")], ["m.onnx"]),
                            (["report", str(tmp_path / "model"), str(colors_data / "val"), "--out",
                              str(disk / "r.html")], ["r.html"]),
                            (["audit", str(colors_data), "--csv", str(disk / "a.csv"), "--out", str(disk / "a.html")],
                             ["a."])):
            run = headstart_cli(*args, "-q")
            one_line_error(run, "cannot write", "No space left on device", *words)
        assert not strays(disk)  # nothing half-written (the audit's small CSV may be whole, its page is not there)
        assert {p.name for p in disk.iterdir()} <= {"filler.bin", "a.csv"} and not (disk / "a.html").exists()


def test_a_checkpoint_on_a_full_disk_keeps_the_last_one(tmp_path):
    from headstart.training.callbacks import AtomicCheckpointIO

    with small_disk(tmp_path, "1m") as disk:
        io = AtomicCheckpointIO()
        io.save_checkpoint({"epoch": 1, "weights": np.zeros(10)}, disk / "last.ckpt")
        before = (disk / "last.ckpt").read_bytes()
        with pytest.raises(CannotWrite, match="the last checkpoint written is kept"):
            io.save_checkpoint({"epoch": 2, "weights": np.zeros(400_000)}, disk / "last.ckpt")
        assert (disk / "last.ckpt").read_bytes() == before and not strays(disk)


def test_decoded_images_spilled_to_a_full_disk_are_refused_up_front(tmp_path, monkeypatch):
    from headstart.data import imagecache

    monkeypatch.setattr(imagecache, "MEMORY_LIMIT", 0)
    with small_disk(tmp_path, "2m") as disk:
        with pytest.raises(CannotWrite, match="not enough space for the training images' decoded copy"):
            imagecache.allocate((10, 256, 256, 3), np.uint8, disk / "run", "images.npy")
        assert not strays(disk)
        small = imagecache.allocate((2, 64, 64, 3), np.uint8, disk / "run", "images.npy")
        small[:] = 7
        assert imagecache.complete(small, "images.npy").sum() == 7 * small.size


UMASK_SCRIPT = """
import os, sys, time
from pathlib import Path
os.umask(int(sys.argv[1], 8))
import headstart
from headstart.auditing.outputs import write_csv
from headstart.deploy.export import export
root = Path(sys.argv[2])
clf = headstart.TransferClassifier(strategy="feature-extractor", C=1.0).fit(root / "images")
clf.save(root / "model")
export(headstart.load(root / "model"), root / "model.onnx")
write_csv(headstart.audit(root / "images"), root / "audit.csv")
"""


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_file_written_gets_the_users_umask(tmp_path, umask):
    from tests.conftest import make_image

    for k, color in enumerate(((200, 40, 40), (40, 40, 200))):
        for i in range(6):  # new images: their codes and figures are new cache files
            make_image(tmp_path / "images" / f"c{k}" / f"{i}.png", color, seed=1000 * umask + 10 * k + i)
    cache = Path(os.environ["HEADSTART_CACHE_DIR"])
    before = set(cache.rglob("*"))
    run = subprocess.run([sys.executable, "-c", UMASK_SCRIPT, oct(umask)[2:], str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    new_in_cache = [p for p in cache.rglob("*") if p not in before]
    assert any(p.suffix == ".npz" for p in new_in_cache)  # the run did write to the cache
    written = [tmp_path / "model", *(tmp_path / "model").rglob("*"), tmp_path / "model.onnx", tmp_path / "audit.csv",
               *new_in_cache]
    wrong = []
    for path in written:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        if stat.S_IMODE(path.stat().st_mode) != want:
            wrong.append(f"{path}: {oct(stat.S_IMODE(path.stat().st_mode))}, want {oct(want)}")
    assert not wrong, wrong[:5]


def test_two_processes_filling_one_cache_agree_and_a_third_run_is_warm(tmp_path, colors_data):
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "headstart.cli", "extract", str(colors_data), "-q", "--json"]
    env = {**os.environ, "HEADSTART_CACHE_DIR": str(cache)}
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outputs]
    third = json.loads(subprocess.run(args, capture_output=True, text=True, env=env, timeout=600).stdout)
    assert third["computed"] == 0  # every image's codes were in the cache
    paths = sorted((colors_data / "train").rglob("*.png"))
    shared = headstart.CNNCodes(cache_dir=cache).fit().transform(paths)
    elsewhere = headstart.CNNCodes().fit().transform(paths)  # the session's own cache, filled by one process
    np.testing.assert_allclose(shared, elsewhere, atol=1e-5)
