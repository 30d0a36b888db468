"""Multi-label images: label CSVs in both layouts and their mistakes, iterative stratification, the per-label head
with its thresholds through scikit-learn, save/load/ONNX/torch-free predict, the CLI, and BCE fine-tuning."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from headstart.cli import main
from tests.conftest import SHARED, make_image, needs_shared

MIML = SHARED / "miml_scenes"
COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def write_csv(path: Path, rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def miml_rows(n: int | None = None, seed: int = 0) -> tuple[list[str], list[list]]:
    with (MIML / "labels.csv").open() as f:
        header, *rows = list(csv.reader(f))
    if n is not None:
        rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:n]]
    return header, rows


@pytest.fixture(scope="module")
def stripes(tmp_path_factory) -> Path:
    """images/: generated two-colour images labelled with the colours they show (1 or 2 of red, green, blue)."""
    root = tmp_path_factory.mktemp("stripes")
    rows, names = [], list(COLOURS)
    rng = np.random.default_rng(0)
    for i in range(36):
        chosen = sorted({names[i % 3], names[int(rng.integers(3))]})
        top = make_image(root / "parts" / f"a{i}.png", COLOURS[chosen[0]], seed=i)
        bottom = make_image(root / "parts" / f"b{i}.png", COLOURS[chosen[-1]], seed=100 + i)
        from PIL import Image

        canvas = Image.new("RGB", (48, 96))
        canvas.paste(Image.open(top), (0, 0))
        canvas.paste(Image.open(bottom), (0, 48))
        (root / "images").mkdir(exist_ok=True)
        canvas.save(root / "images" / f"{i}.png")
        rows.append([f"{i}.png", "|".join(chosen)])
    write_csv(root / "tags.csv", [["filename", "labels"], *rows])
    return root


def test_both_csv_layouts_read_the_same_labels(tmp_path):
    from headstart.data.labelfile import labelled_images

    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "extra.jpg"):
        make_image(tmp_path / "images" / name, (90, 90, 90))
    write_csv(tmp_path / "wide.csv", [["Filenames", "sea", "sunset", "trees"], ["a.jpg", 1, 0, 1],
                                      ["b.jpg", 0, 1, 0], ["c.jpg", 0, 0, 0], ["a.jpg", 1, 0, 1]])
    write_csv(tmp_path / "long.csv", [["filename", "labels"], ["a.jpg", "sea trees"], ["b.jpg", "sunset"],
                                      ["c.jpg", ""]])
    write_csv(tmp_path / "semi.csv", [["image_name", "tags"], ["a.jpg", "trees;sea"], ["b.jpg", "sunset|"],
                                      ["c.jpg", ""]])
    found = [labelled_images(tmp_path, tmp_path / name) for name in ("wide.csv", "long.csv", "semi.csv")]
    for images, unnamed in found:
        assert images.class_names == ["sea", "sunset", "trees"]
        assert images.targets.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]  # the repeated row merged
        assert images.root == tmp_path / "images" and [p.name for p in unnamed] == ["extra.jpg"]
    assert found[0][0].counts() == {"sea": 1, "sunset": 1, "trees": 1}


@needs_shared
def test_iterative_stratification_keeps_every_labels_share():
    from headstart.data.splits import find_label_splits

    splits = find_label_splits(MIML, "labels.csv", val_fraction=0.2, seed=0)
    total = splits.train.targets.sum(0) + splits.val.targets.sum(0)
    assert len(splits.val) == 203 and np.abs(splits.val.targets.sum(0) - 0.2 * total).max() <= 1
    assert splits.how.startswith("0.2 of labels.csv held out by iterative stratification")
    again = find_label_splits(MIML, "labels.csv", val_fraction=0.2, seed=0)
    assert again.val.paths == splits.val.paths  # a fixed seed gives a fixed split


def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss

    from headstart.report.metrics import multilabel_metrics

    rng = np.random.default_rng(1)
    truth = (rng.random((60, 4)) < 0.35).astype(np.uint8)
    proba = np.clip(truth * 0.4 + rng.random((60, 4)) * 0.6, 0, 1).round(2)
    called = (proba >= 0.5).astype(np.uint8)
    m = multilabel_metrics(truth, proba, called, ["a", "b", "c", "d"])
    assert m["map"] == pytest.approx(average_precision_score(truth, proba, average="macro"))
    assert m["micro_f1"] == pytest.approx(f1_score(truth, called, average="micro"))
    assert m["macro_f1"] == pytest.approx(f1_score(truth, called, average="macro"))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(truth, called))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(truth, called))
    assert m["per_label"]["b"]["ap"] == pytest.approx(average_precision_score(truth[:, 1], proba[:, 1]))


@needs_shared
def test_indicator_matrix_through_scikit_learn(tmp_path):
    from sklearn.base import clone
    from sklearn.model_selection import KFold, cross_val_score

    from headstart import TransferClassifier, load

    header, rows = miml_rows(150)
    paths = [MIML / "images" / r[0] for r in rows]
    Y = np.array([[int(v) for v in r[1:]] for r in rows])
    clf = TransferClassifier()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1 = cross_val_score(clone(clf), paths, Y, cv=KFold(3), scoring="f1_micro")
    assert f1.min() > 0.6
    names = header[1:]
    fitted = TransferClassifier().fit(paths[:100], [[n for n, v in zip(names, y) if v] for y in Y[:100]])
    assert fitted.multilabel_ and fitted.classes_ == sorted(names)
    predicted = fitted.predict(paths[100:])
    assert predicted.shape == (50, 5) and set(np.unique(predicted)) <= {0, 1}
    assert fitted.predict_proba(paths[100:]).shape == (50, 5)
    info = fitted.head_.info
    assert len(info["C"]) == 5 and all(0.05 < t < 0.5 for t in info["thresholds"])  # half a best F1 each
    assert fitted.score(paths[100:], Y[100:][:, [names.index(n) for n in fitted.classes_]]) > 0.5
    fitted.save(tmp_path / "model")
    again = load(tmp_path / "model")
    assert np.allclose(again.head_.thresholds, fitted.head_.thresholds) and again.head_.fill_empty
    assert np.abs(again.predict_proba(paths[100:110]) - fitted.predict_proba(paths[100:110])).max() < 1e-6

    from headstart.deploy.export import export
    from headstart.deploy.runtime import OnnxClassifier

    export(again, tmp_path / "model.onnx")
    onnx = OnnxClassifier(tmp_path / "model.onnx")
    found = onnx.predict_files(paths[100:])
    library = fitted.predict_proba(paths[100:])
    assert onnx.multilabel and np.abs(found.proba - library[found.kept]).max() < 1e-4
    assert (onnx.decide(found.proba) == fitted.head_.decide(library)).all()


@needs_shared
def test_cli_fit_evaluate_report_predict_on_miml(tmp_path, capsys):
    header, rows = miml_rows(260)
    labels = write_csv(tmp_path / "train.csv", [header, *rows[:200]])
    val = write_csv(tmp_path / "val.csv", [header, *rows[200:]])
    out = tmp_path / "run"
    assert main(["fit", str(MIML), "--labels", str(labels), "--val-labels", str(val), "--out", str(out), "--json",
                 "-q"]) == 0
    fit = json.loads(capsys.readouterr().out)
    v = fit["validation"]
    assert fit["data"]["multilabel"] and v["n_images"] == 60 and fit["data"]["notes"][0].startswith("741 image(s)")
    assert {"map", "micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"} <= set(v) and v["map"] > 0.8
    assert set(v["per_label"]["sea"]) == {"precision", "recall", "f1", "ap", "support"}
    page = (out / "report.html").read_text()
    assert "Per label" in page and "Misses" in page and "False alarms" in page and "mAP" in page
    assert main(["evaluate", str(out), str(MIML), "--labels", str(val), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["map"] == pytest.approx(v["map"])
    assert main(["evaluate", str(out), str(MIML), "--labels", str(val), "-q"]) == 0
    text = capsys.readouterr().out
    assert "micro-F1" in text and "Hamming loss" in text and "sunset" in text
    image = MIML / "images" / rows[201][0]
    assert main(["predict", str(out), str(image), "--json", "-q"]) == 0
    answer = json.loads(capsys.readouterr().out)
    entry = answer["predictions"][0]
    assert isinstance(entry["labels"], list) and entry["labels"] and "label" not in entry
    seconds = answer["seconds"]  # start-up (imports, the model), predicting, the whole command
    assert seconds["command"] >= seconds["startup"] + seconds["predict"] - 0.002 and seconds["predict"] > 0
    assert main(["summary", str(out), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("case, message", [
    ("missing file", "names 1 file(s) not found"),
    ("no row", None),
    ("empty column", "no row carries the label(s) 'trees'"),
    ("unknown label", "has label(s) the model does not know"),
    ("never in training", "are on none of the"),
    ("always in training", "are on every one of the"),
    ("conflicting rows", "different labels in rows 2 and 4"),
    ("class folders", "looks like class folders"),
    ("val labels alone", "--val-labels needs --labels"),
    ("svm", "drop --classifier svm"),
    ("not 0/1", "label columns hold 0 or 1"),
])
def test_label_mistakes_are_one_line_errors_before_any_image_is_read(tmp_path, colors_data, capsys, case, message):
    for name in ("a", "b", "c", "d"):
        (tmp_path / f"{name}.jpg").write_bytes(b"not read before the checks")  # an image read would fail
    rows = [["file", "sea", "trees"], ["a.jpg", 1, 0], ["b.jpg", 0, 1], ["c.jpg", 1, 1], ["d.jpg", 0, 0]]
    data = tmp_path
    if case == "missing file":
        rows[1][0] = "nowhere.jpg"
    elif case == "empty column":
        rows = [[r[0], r[1], 0 if i else r[2]] for i, r in enumerate(rows)]
    elif case in ("never in training", "always in training"):  # the library's check (the CLI's reads CSVs)
        from headstart import TransferClassifier
        from headstart.errors import DataError

        column = [0, 0, 0, 0] if case.startswith("never") else [1, 1, 1, 1]
        Y = np.array([[1, 0, 1, 0], column]).T
        with pytest.raises(DataError, match=message):
            TransferClassifier().fit([tmp_path / f"{n}.jpg" for n in "abcd"], Y)
        return
    elif case == "conflicting rows":
        rows.insert(3, ["a.jpg", 0, 1])
    elif case == "class folders":
        data = colors_data / "train"
    elif case == "not 0/1":
        rows[2][1] = "yes"
    labels = write_csv(tmp_path / "labels.csv", rows)
    args = ["fit", str(data), "--labels", str(labels), "--val-fraction", "0"]
    if case == "val labels alone":
        args = ["fit", str(data), "--val-labels", str(labels)]
    elif case == "svm":
        args += ["--classifier", "svm"]
    elif case == "unknown label":
        model = tmp_path / "model"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"format": "headstart-model/1", "multilabel": True,
                                                        "class_names": ["sea", "sky"]}))
        args = ["evaluate", str(model), str(data), "--labels", str(labels)]
    elif case == "no row":
        from headstart.data.splits import find_label_splits

        make_image(tmp_path / "untagged.png", (10, 10, 10))
        splits = find_label_splits(tmp_path, labels, val_fraction=0)
        assert splits.notes == [f"1 image(s) in {tmp_path} have no row in labels.csv and were left out "
                                "(e.g. untagged.png)"]
        return
    assert main([*args, "--out", str(tmp_path / "out"), "-q"] if args[0] == "fit" else [*args, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_fine_tuning_trains_sigmoid_outputs_with_binary_cross_entropy(tmp_path, stripes):
    from headstart import TransferClassifier, load
    from headstart.data.labelfile import labelled_images
    from headstart.training.options import FineTuneConfig

    images, _ = labelled_images(stripes, stripes / "tags.csv")
    clf = TransferClassifier(strategy="fine-tune", image_size=64, workdir=tmp_path / "work", cache_dir=False,
                             engine="torch",
                             finetune=FineTuneConfig(epochs=1, probe_epochs=0, unfreeze="1", batch_size=8))
    clf.fit(images)
    assert clf.multilabel_ and clf.head_.info["thresholds_from"].endswith("held-out monitor images")
    assert clf.fit_info_["training"]["epochs_run"] == 1
    proba = clf.predict_proba(images.paths)
    assert proba.shape == (36, 3) and not np.allclose(proba.sum(1), 1.0)  # a sigmoid per label, not a softmax
    clf.save(tmp_path / "model")
    again = load(tmp_path / "model", cache_dir=False)
    assert again.multilabel_ and np.abs(again.predict_proba(images.paths[:4]) - proba[:4]).max() < 1e-5
