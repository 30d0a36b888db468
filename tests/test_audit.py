"""The audit finds what was planted (duplicates, leaks, flipped labels, odd images), folds keep duplicates together,
`fit --exclude` leaves files out and `fit` reports leaks, the page renders, and the data is never written to."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

import headstart
from headstart.auditing.duplicates import fold_groups
from headstart.auditing.findings import ISSUES
from headstart.auditing.labels import find_label_issues
from headstart.auditing.outputs import CSV_COLUMNS, read_exclusions
from headstart.cli import main
from headstart.heads.linear import stratified_folds
from tests.conftest import SHARED, make_image, needs_shared
from tests.test_report import needs_chromium, render


def tree_digest(folder: Path) -> str:
    """A hash of every file's path and bytes below ``folder``."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def test_grouped_folds_keep_each_group_in_one_fold():
    labels = np.repeat([0, 1, 2], 20)
    groups = np.arange(60)
    groups[[0, 1, 2]] = 0  # a set of three
    groups[[21, 22]] = 21
    groups[[40, 45]] = 40
    folds = stratified_folds(labels, seed=0, groups=groups)
    for members in ([0, 1, 2], [21, 22], [40, 45]):
        homes = {f for f, (_, test) in enumerate(folds) if np.isin(members, test).any()}
        assert len(homes) == 1, members  # never split across folds
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(60))
    assert all(9 <= len(test) <= 15 for _, test in folds)  # still about a fifth each
    assert all(len(np.unique(labels[test])) == 3 for _, test in folds)  # and stratified


def test_confident_learning_flags_the_flipped_rows():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 50)
    proba = np.full((150, 3), 0.05)
    proba[np.arange(150), labels] = 0.9
    proba += rng.uniform(0, 0.05, proba.shape)
    given = labels.copy()
    flipped = [3, 60, 120]
    given[flipped] = (labels[flipped] + 1) % 3
    issues = find_label_issues(proba / proba.sum(1, keepdims=True), given)
    assert sorted(np.flatnonzero(issues.flagged).tolist()) == flipped
    assert (issues.suggested[flipped] == labels[flipped]).all()
    assert issues.score[flipped].min() > issues.score[~issues.flagged].max()


def test_with_many_small_classes_hard_images_are_not_flagged_but_flipped_labels_are():
    # 40 classes of 5: a hard image's label is second best (0.30 vs 0.35), a flipped one far below chance (1/40)
    rng = np.random.default_rng(0)
    k, labels = 40, np.repeat(np.arange(40), 5)
    proba = np.full((200, k), 0.35 / (k - 2))
    proba[np.arange(200), labels] = 0.60
    hard = np.arange(0, 200, 4)
    proba[hard] = 0.35 / (k - 2)
    proba[hard, labels[hard]], proba[hard, (labels[hard] + 1) % k] = 0.30, 0.35
    flipped = np.array([1, 50, 99, 150])
    given = labels.copy()
    given[flipped] = (labels[flipped] + rng.integers(2, k, len(flipped))) % k
    issues = find_label_issues(proba / proba.sum(1, keepdims=True), given)
    assert np.flatnonzero(issues.flagged).tolist() == flipped.tolist()


def test_relabel_lists_read_both_forms(tmp_path):
    from headstart.auditing.outputs import read_relabels

    plain = tmp_path / "fix.csv"
    plain.write_text("path,label,given,score\na.jpg,dog,cat,0.9\nb.jpg, cat ,dog,0.8\n")
    assert read_relabels(plain) == [(Path("a.jpg"), "dog"), (Path("b.jpg"), "cat")]
    edited = tmp_path / "audit.csv"  # the audit's CSV, two rows' action edited: the suggestion, or another class
    edited.write_text("path,issue,score,other,action\na.jpg,label_error,0.9,dog,relabel\n"
                      "b.jpg,label_error,0.8,dog,relabel bird\nc.jpg,label_error,0.7,cat,check the label\n")
    assert read_relabels(edited) == [(Path("a.jpg"), "dog"), (Path("b.jpg"), "bird")]
    plain.write_text("path,label\na.jpg,\n")
    with pytest.raises(headstart.DataError, match="gives no label for 1 file"):
        read_relabels(plain)


def test_exclusion_lists_read_both_forms(tmp_path):
    audit_csv = tmp_path / "audit.csv"
    audit_csv.write_text(",".join(CSV_COLUMNS) + '\na/1.jpg,leak,0.9,b/2.jpg,"remove it, please"\n')
    plain = tmp_path / "list.txt"
    plain.write_text("# leave out\na/1.jpg\n\n c/3.png \n")
    assert read_exclusions(audit_csv) == [Path("a/1.jpg")]
    assert read_exclusions(plain) == [Path("a/1.jpg"), Path("c/3.png")]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """40 cats and dogs for training, 10 more for validation, with planted faults: an exact copy and a mirrored
    half-size copy inside training, a JPEG-50 copy and a brighter copy of training images in validation, two dogs
    filed as cats, a dark, a blurred-free black and a 16-px image."""
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    root = tmp_path_factory.mktemp("planted") / "data"
    source = SHARED / "cats_vs_dogs" / "train"
    cats, dogs = sorted((source / "cat").iterdir())[:25], sorted((source / "dog").iterdir())[:27]
    for split, (c, d) in {"train": (cats[:20], dogs[:22]), "val": (cats[20:], dogs[22:])}.items():
        for animal, files in (("cat", c), ("dog", d)):
            for f in files:
                (root / split / animal).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, root / split / animal / f.name)
    train = root / "train"
    shutil.move(train / "dog" / dogs[20].name, train / "cat" / dogs[20].name)  # mislabelled dogs
    shutil.move(train / "dog" / dogs[21].name, train / "cat" / dogs[21].name)
    shutil.copy(cats[0], train / "cat" / "copy_of_first.jpg")  # exact duplicate
    image = Image.open(cats[1]).convert("RGB")
    ImageOps.mirror(image.resize((image.width // 2, image.height // 2))).save(train / "cat" / "mirror_half.jpg")
    Image.open(cats[2]).convert("RGB").save(root / "val" / "cat" / "leak_jpeg50.jpg", quality=50)
    ImageEnhance.Brightness(Image.open(dogs[0]).convert("RGB")).enhance(1.2).save(root / "val" / "dog" / "leak.jpg")
    ImageEnhance.Brightness(Image.open(dogs[3]).convert("RGB")).enhance(0.15).save(train / "dog" / "dark.jpg")
    Image.open(dogs[4]).convert("RGB").resize((16, 16)).save(train / "dog" / "tiny.jpg")
    (train / "dog" / "broken.jpg").write_bytes(b"not an image")
    return {"root": root, "cats": cats, "dogs": dogs}


@needs_shared
def test_audit_finds_what_was_planted_and_writes_nothing_into_the_data(planted, tmp_path):
    root = planted["root"]
    before = tree_digest(root)
    assert main(["audit", str(root), "--csv", str(tmp_path / "a.csv"), "--out", str(tmp_path / "a.html"), "-q",
                 "--json", "--suggest", str(tmp_path / "relabel.csv")]) == 0
    assert tree_digest(root) == before  # nothing moved, renamed, deleted or added
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert list(rows[0]) == list(CSV_COLUMNS)
    found = {(Path(r["path"]).name, r["issue"]): r for r in rows}
    exact = [r for r in rows if r["issue"] == "exact_duplicate"]
    assert [(Path(r["path"]).name, Path(r["other"]).name, r["score"]) for r in exact] == \
        [("copy_of_first.jpg", planted["cats"][0].name, "1.0000")]  # the original (first in order) is kept
    assert Path(found[("mirror_half.jpg", "near_duplicate")]["other"]).name == planted["cats"][1].name  # the larger
    assert Path(found[("leak_jpeg50.jpg", "leak")]["other"]).name == planted["cats"][2].name
    assert Path(found[("leak.jpg", "leak")]["other"]).name == planted["dogs"][0].name
    relabel = csv.DictReader((tmp_path / "relabel.csv").open())
    suggested = {Path(r["path"]).name: (r["label"], r["given"]) for r in relabel}
    for dog in planted["dogs"][20:22]:
        assert found[(dog.name, "label_error")]["other"] == "dog" and suggested[dog.name] == ("dog", "cat")
    assert ("dark.jpg", "dark") in found and ("tiny.jpg", "small") in found
    assert ("broken.jpg", "unreadable") in found
    assert {r["issue"] for r in rows} <= set(ISSUES)
    flagged_labels = [r for r in rows if r["issue"] == "label_error"]
    assert len(flagged_labels) <= 4  # the two planted, and at most two real ones among 40 photos
    page = (tmp_path / "a.html").read_text()
    assert "Likely label errors" in page and "Leaks" in page and "http://" not in page


@needs_shared
def test_a_fit_after_an_audit_computes_no_codes_and_reports_leaks(planted, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(tmp_path / "cache"))
    root = planted["root"]
    result = headstart.audit(root)
    assert result["n_codes_computed"] > 0 and result["counts"]["leak"] == 2
    again = headstart.audit(root)
    assert again["n_codes_computed"] == 1 and again["counts"] == result["counts"]  # only broken.jpg is tried again
    out = subprocess.run([sys.executable, "-m", "headstart.cli", "fit", str(root), "--out", str(tmp_path / "m"),
                          "-q", "--json"], capture_output=True, text=True,
                         env={**__import__("os").environ})  # the default fit reads the default audit's networks
    fit = json.loads(out.stdout)
    assert fit["n_codes_computed"] == 1  # the audit's pass served the fit (broken.jpg is tried again)
    leaks = fit["leaks"]
    assert leaks["n_leaks"] == 2 and leaks["n_val_without_leaks"] == 10
    assert {Path(e["val"]).name for e in leaks["examples"]} == {"leak_jpeg50.jpg", "leak.jpg"}
    assert "leaks" in (tmp_path / "m" / "report.html").read_text()


@needs_shared
def test_fit_exclude_leaves_the_listed_files_out(planted, tmp_path, capsys):
    root = planted["root"]
    listing = tmp_path / "drop.txt"
    drops = [root / "val" / "cat" / "leak_jpeg50.jpg", root / "val" / "dog" / "leak.jpg",
             root / "train" / "cat" / planted["dogs"][20].name]
    listing.write_text("\n".join(map(str, drops)))
    assert main(["fit", str(root), "--out", str(tmp_path / "m"), "--exclude", str(listing), "-q", "--json",
                 "--strategy", "feature-extractor"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["excluded"] == {"train": 1, "val": 2}
    assert result["validation"]["n_images"] == 10 and result["leaks"]["n_leaks"] == 0
    assert result["n_train_images"] == 42 + 4 - 1  # 42 photos, 4 planted readable files, one left out


def test_fit_relabel_trains_as_the_clean_folders_do_and_moves_no_file(colors_data, tmp_path, capsys):
    flipped = tmp_path / "flipped"
    shutil.copytree(colors_data, flipped)
    moved = sorted((flipped / "train" / "red").iterdir())[:3]
    for path in moved:  # three red images filed as blue
        path.rename(flipped / "train" / "blue" / path.name)
    listing = tmp_path / "fix.csv"
    listing.write_text("path,label\n" + "".join(f"{flipped / 'train' / 'blue' / p.name},red\n" for p in moved)
                       + f"{flipped / 'train' / 'red' / 'red5.png'},red\n")  # already red: not a change
    before = tree_digest(flipped)
    runs = {}
    for name, data, extra in (("clean", colors_data, []), ("relabelled", flipped, ["--relabel", str(listing)])):
        assert main(["fit", str(data), "--out", str(tmp_path / name), "-q", "--json", "--strategy",
                     "feature-extractor", "--model", "tf_efficientnet_lite0", *extra]) == 0
        runs[name] = json.loads(capsys.readouterr().out)
    assert tree_digest(flipped) == before  # the files stay where they are
    clean, fixed = runs["clean"], runs["relabelled"]
    assert fixed["relabelled"] == {"train": 3} and "relabelled" not in clean
    assert fixed["data"]["train_counts"] == clean["data"]["train_counts"] == {"blue": 12, "red": 12}
    assert fixed["layers"] == clean["layers"] and fixed["C"] == clean["C"]
    assert abs(fixed["validation"]["accuracy"] - clean["validation"]["accuracy"]) <= 0.002
    config = json.loads((tmp_path / "relabelled" / "config.json").read_text())
    assert config["relabelled"] == {"train": 3}
    assert "labels changed (--relabel)" in (tmp_path / "relabelled" / "report.html").read_text()


def test_audit_of_generated_images_without_labels_finds_exact_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    for i in range(12):
        make_image(folder / f"{i}.png", ((i * 40) % 256, (i * 90) % 256, (i * 20) % 256), size=64, seed=i)
    shutil.copy(folder / "3.png", folder / "3-again.png")
    black = np.zeros((64, 64, 3), np.uint8)
    Image.fromarray(black).save(folder / "black.png")
    result = headstart.audit(folder)
    assert result["data"]["labelled"] is False and result["label_errors"] is None
    exact = [f for f in result["findings"] if f["issue"] == "exact_duplicate"]
    assert len(exact) == 1 and {Path(exact[0]["path"]).name, Path(exact[0]["other"]).name} == {"3.png", "3-again.png"}
    kinds = {f["issue"] for f in result["findings"] if Path(f["path"]).name == "black.png"}
    assert {"dark", "low_information"} <= kinds


def make_scene(path: Path, seed: int, tint: int) -> Path:
    """A distinct smooth picture (a random 4 x 4 colour grid, upsampled), tinted towards red (0) or blue (1)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (4, 4, 3)).astype(np.float64)
    grid[:, :, 0 if tint == 0 else 2] = grid[:, :, 0 if tint == 0 else 2] * 0.3 + 170
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.astype(np.uint8)).resize((96, 96), Image.Resampling.BICUBIC).save(path)
    return path


def test_fold_groups_join_exact_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "data"
    paths, labels = [], []
    for k in (0, 1):
        for i in range(8):
            paths.append(make_scene(folder / str(k) / f"{i}.png", seed=k * 10 + i, tint=k))
            labels.append(k)
    shutil.copy(paths[0], folder / "0" / "copy.png")
    paths.append(folder / "0" / "copy.png")
    labels.append(0)
    clf = headstart.TransferClassifier(strategy="feature-extractor")
    clf.fit(paths, labels)
    figures = clf.figures(paths)
    codes = clf.codes(paths).codes
    groups = fold_groups(codes, figures, np.array(labels))
    without_copy = fold_groups(codes[:-1], figures[:-1], np.array(labels[:-1]))
    assert groups[0] == groups[-1] and len(set(groups.tolist())) == len(set(without_copy.tolist()))


@needs_chromium
@needs_shared
def test_audit_page_renders_in_chromium(planted, tmp_path):
    page = tmp_path / "audit.html"
    assert main(["audit", str(planted["root"]), "--out", str(page), "-q"]) == 0
    dom, shot = render(page, tmp_path)
    assert 'data-images-loaded="' in dom
    loaded = dom.split('data-images-loaded="')[1].split('"')[0]
    total = dom.split('data-images-total="')[1].split('"')[0]
    assert loaded == total and int(total) >= 8  # every thumbnail decoded in the browser
    assert "leak_jpeg50.jpg" in dom and "looks like dog" in dom
    assert shot.stat().st_size > 10_000


def _coded(names: list[str], sizes: list[int], digests: list[int]) -> SimpleNamespace:
    """Stand-in for the audit's coded images: names, decoded sizes and pixel digests (equal digest: identical)."""
    from headstart.data.folders import ImageSet
    from headstart.data.imagestats import WIDTH, ImageStats

    values = np.zeros((len(names), WIDTH), np.float32)
    values[:, 0] = values[:, 1] = sizes
    values[:, -6] = digests
    images = ImageSet([Path(f"/d/{n}.png") for n in names], np.zeros(len(names), np.int64), ["x"])
    return SimpleNamespace(images=images, codes=np.zeros((len(names), 1)), stats=ImageStats(values))


def test_exact_twins_inside_a_near_set_name_each_other_and_the_page_shows_the_set():
    from headstart.auditing.duplicates import Pairs
    from headstart.auditing.findings import duplicate_findings, leak_findings
    from headstart.report.audit_page import build_page

    # a (large) with near copies b, c; c and d identical to each other; e identical to a
    coded = _coded(["a", "b", "c", "d", "e"], [96, 64, 48, 48, 96], [1, 2, 3, 3, 1])
    pairs = Pairs(np.array([0, 0, 1, 2, 0]), np.array([1, 2, 2, 3, 4]), np.array([.97, .95, 1.0, 1.0, 1.0], np.float32),
                  np.full(5, np.nan, np.float32), np.array([False, False, False, True, True]))
    findings, sets = duplicate_findings(coded, pairs, "train")
    rows = {Path(f["path"]).stem: (f["issue"], Path(f["other"]).stem, f["score"]) for f in findings}
    assert rows == {"b": ("near_duplicate", "a", 1.0), "c": ("near_duplicate", "a", 1.0),
                    "d": ("exact_duplicate", "c", 1.0), "e": ("exact_duplicate", "a", 1.0)}
    assert sets[0]["kind"] == "near" and sets[0]["exact_copy_of"] == {"/d/d.png": "/d/c.png", "/d/e.png": "/d/a.png"}
    counts = {issue: sum(f["issue"] == issue for f in findings) for issue in ISSUES}
    page = build_page({"counts": counts, "findings": findings,
                       "duplicate_sets": sets, "data": {"train_images": 5, "val_images": 0, "split": "x"},
                       "seconds": {"total": 1.0}})
    assert "5 images, 2 of them identical copies" in page and "d.png (x): identical to c.png" in page
    # a validation image identical to a training image names that twin, even when a near copy scores as high
    val = _coded(["v"], [48], [3])
    leaks = Pairs(np.array([0, 0]), np.array([0, 3]), np.array([1.0, 1.0], np.float32), np.full(2, np.nan, np.float32),
                  np.array([False, True]))
    (leak,) = leak_findings(val, coded, leaks)
    assert (Path(leak["other"]).name, leak["evidence"]["kind"]) == ("d.png", "exact")


def test_the_faiss_search_finds_what_the_exact_one_does_from_a_memory_map(tmp_path):
    from headstart.auditing.neighbours import nearest_within

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 64), dtype=np.float32)
    codes = np.maximum(centres[rng.integers(0, 50, 3000)] + rng.standard_normal((3000, 64), dtype=np.float32), 0)
    codes[1::100] = codes[::100] * 1.01  # 30 near copies
    np.save(tmp_path / "codes.npy", codes.astype(np.float16))
    mapped = np.load(tmp_path / "codes.npy", mmap_mode="r")
    exact, approximate = nearest_within(mapped, 5, exact=True), nearest_within(mapped, 5, exact=False)
    assert (approximate.index[::100, 0] == np.arange(1, 3000, 100)).all()  # every copy found as the nearest
    assert (approximate.index[:, 0] == exact.index[:, 0]).mean() > 0.95
    hit = approximate.index == exact.index
    np.testing.assert_allclose(approximate.similarity[hit], exact.similarity[hit], atol=1e-5)  # cosines exact
    from headstart.auditing.neighbours import _gather  # rows read from the file, not through the map

    rows = np.array([0, 5, 2000])
    np.testing.assert_array_equal(_gather(mapped[100:], rows), codes.astype(np.float16)[rows + 100])
