"""Every user mistake is caught before any work: one line on stderr, exit code 2, no traceback, nothing written.

One table of (command line, expected message), run as the user runs it (a subprocess) in a sandbox folder whose
every file is compared before and after. Also the Python API's inputs, and what is never lost or silently dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import headstart
from headstart.defaults import AUTO_MODELS, DEFAULT_MODEL
from tests.conftest import make_image, snapshot

CASES = [
    # fit: numbers, folders, outputs, weights
    ("fit no/such/folder", "does not exist"),
    ("fit", "give the DATA folder"),
    ("fit {data} --C -1", "--C must be a positive number"),
    ("fit {data} --C 0", "--C must be a positive number"),
    ("fit {data} --budget 0", "--budget is in seconds and must be positive"),
    ("fit {data} --budget -5", "--budget is in seconds and must be positive"),
    ("fit {data} --out /proc/headstart-x", "cannot write --out"),
    ("fit {data} --out {file}/model", "is a file, not a folder"),
    ("fit {data} --out {own} --overwrite", "not a headstart model folder"),
    ("fit {data} --out {own}", "already exists"),
    ("fit {data} --val-fraction 0.5", "--val-fraction does nothing here"),
    ("fit {data} --val-fraction 1.5", "--val-fraction must be in [0, 1)"),
    ("fit {data} --val no/such", "validation folder"),
    ("fit {data} --batch-size 0", "--batch-size must be at least 1"),
    ("fit {data} --epochs 0", "--epochs must be at least 1"),
    ("fit {data} --probe-epochs -1", "--probe-epochs must be at least 0"),
    ("fit {data} --workers -1", "--workers must be at least 0"),
    ("fit {data} --patience 0", "--patience must be at least 1"),
    ("fit {data} --lr 0", "--lr must be positive"),
    ("fit {data} --unfreeze some", "--unfreeze takes a number of top blocks or 'all'"),
    ("fit {data} --unfreeze -1", "--unfreeze must be 0 or more"),
    ("fit {data} --weights no/such.safetensors", "nor an existing file"),
    ("fit {data} --devices -2", "--devices must be 'auto'"),
    ("fit {data} --num-nodes 0", "--num-nodes must be at least 1"),
    ("fit {data} --image-size 8", "--image-size must be between 16 and 4096"),
    ("fit {data} --layer +", "--layer is empty"),
    ("fit {data} --model tf_efficientnet_lite0,tf_efficientnet_lite0", "named twice"),
    ("fit {data} --seed -1", "--seed must be at least 0"),
    ("fit {data} --strategy bogus", "invalid choice"),
    ("fit --resume {sandbox}/nothing", "nothing to resume"),
    ("fit {data} --precision int8 --engine torch", "--precision int8 runs on ONNX Runtime"),
    ("fit {data} --precision int4", "invalid choice"),
    ("fit {data} --strategy fine-tune --distributed ddp_spawn", "use --distributed ddp"),
    ("fit {data} --loader activations --unfreeze all", "give --unfreeze a number of blocks"),
    ("fit {data} --loader activations --unfreeze 2 --no-augment", "drop --no-augment"),
    ("fit {data} --strategy scratch --loader activations", "give --unfreeze a number of blocks"),
    ("fit {data} --loader disk", "invalid choice"),
    # evaluate, predict
    ("evaluate {data} {data}", "not a saved headstart model"),
    ("evaluate {model} no/such", "does not exist"),
    ("predict {model} no/such.jpg", "does not exist"),
    ("predict {model} {image} --top 0", "--top must be at least 1"),
    ("predict {sandbox}/missing.onnx {image}", "does not exist"),
    ("predict {data} {image}", "not a saved headstart model"),
    # export, report: output files
    ("export {model} --out /proc/headstart-x.onnx", "cannot write --out"),
    ("export {model} --out {file}/m.onnx", "is a file, not a folder"),
    ("export {model} --out {file}", "already exists"),
    ("export {model} --out {sandbox}", "is a folder"),
    ("export {model} --format tflite", "invalid choice"),
    ("export {model} --format torchscript --precision int8", "--precision int8 runs on ONNX Runtime"),
    ("export {model} --calibration {data}", "--calibration is for --precision int8"),
    ("export {model} --precision int8 --calibration no/such", "calibration folder"),
    ("export {model} --precision int8 --calibration {own}", "give a folder of at least 8 training images"),
    ("report {model} {data} --out /proc/headstart-x.html", "cannot write --out"),
    ("report {model} {data} --out {file}", "already exists"),
    ("report {model} no/such", "does not exist"),
    # advise, extract, summary, models
    ("advise no/such", "does not exist"),
    ("advise {data} --val-fraction 2", "--val-fraction must be in [0, 1)"),
    ("advise {data} --weights no/such.pt", "nor an existing file"),
    ("advise {data} --model tf_efficientnet_lite2,tf_efficientnet_lite2", "named twice"),
    ("extract {data} --batch-size 0", "--batch-size must be at least 1"),
    ("extract {data} --devices x", "--devices must be 'auto'"),
    ("extract {data} --image-size 99999", "--image-size must be between"),
    ("extract {data} --layer +", "--layer is empty"),
    ("extract {data} --precision int8 --engine torch", "--precision int8 runs on ONNX Runtime"),
    ("extract {data} --distributed ddp_spawn", "use --distributed ddp"),
    ("summary --num-classes 1", "--num-classes must be at least 2"),
    ("summary --strategy fine-tune --unfreeze x", "--unfreeze takes"),
    ("summary {data}", "not a saved headstart model"),
    ("models nosuch_model_xyz*", "no model matches"),
    ("bogus", "invalid choice"),
    # audit, and fit --exclude
    ("audit no/such/folder", "does not exist"),
    ("audit {data} --val no/such", "validation folder"),
    ("audit {sandbox}/emptyclass", "is empty"),
    ("audit {data} --out {data}/audit.html", "inside the audited folder"),
    ("audit {data} --csv {file}", "already exists"),
    ("audit {data} --out {sandbox}/a.html --csv {sandbox}/a.html", "name the same file"),
    ("audit {data} --batch-size 0", "--batch-size must be at least 1"),
    ("audit {data} --weights no/such.pt", "nor an existing file"),
    ("fit {data} --exclude {sandbox}/exclude.csv", "names 1 file(s) that do not exist"),
    ("fit {data} --exclude no/such.csv", "is not a file"),
    ("fit {data} --exclude {sandbox}/all_red.txt", "leaves no training image in class(es) red"),
    ("fit {data} --relabel no/such.csv", "is not a file"),
    ("fit {data} --relabel {sandbox}/exclude.csv", "changes no label"),
    ("fit {data} --relabel {sandbox}/all_red.txt", "has no path and label columns"),
    ("fit {data} --relabel {sandbox}/purple.csv", "not classes of the data: purple; the classes are blue, red"),
    ("fit {data} --relabel {sandbox}/outside.csv", "not among the images to fit"),
    ("audit {data} --suggest {file}", "already exists"),
]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, colors_data) -> dict[str, str]:
    """A folder holding data, a saved model, a user's own folder and file, and one image."""
    root = tmp_path_factory.mktemp("sandbox")
    shutil.copytree(colors_data, root / "data")
    clf = headstart.TransferClassifier(C=1.0).fit(root / "data" / "train")
    clf.save(root / "model")
    (root / "own").mkdir()
    (root / "own" / "holiday.jpg").write_bytes(b"the user's photo")
    (root / "notes.txt").write_text("the user's notes")
    make_image(root / "emptyclass" / "a" / "0.png", (200, 40, 40))
    (root / "emptyclass" / "b").mkdir()
    (root / "exclude.csv").write_text("path,issue,score,other,action\nno/such.jpg,leak,1.0,,remove\n")
    red = sorted((root / "data" / "train" / "red").iterdir())
    (root / "purple.csv").write_text(f"path,label\n{red[0]},purple\n")
    (root / "outside.csv").write_text(f"path,label\n{root / 'notes.txt'},red\n")
    (root / "all_red.txt").write_text("\n".join(str(p) for p in sorted((root / "data" / "train" / "red").iterdir())))
    return {"sandbox": str(root), "data": str(root / "data"), "model": str(root / "model"), "own": str(root / "own"),
            "file": str(root / "notes.txt"), "image": str(next((root / "data" / "val" / "red").iterdir()))}


@pytest.mark.parametrize("command, message", CASES, ids=[c for c, _ in CASES])
def test_a_mistake_is_one_line_exit_2_and_changes_nothing(sandbox, command, message):
    root = Path(sandbox["sandbox"])
    before = snapshot(root)
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "headstart.cli", *command.format(**sandbox).split()],
                         capture_output=True, text=True, cwd=root, timeout=120,
                         env={**os.environ, "HEADSTART_CACHE_DIR": str(root / ".." / "untouched-cache")})
    seconds = time.perf_counter() - started
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr and message in run.stderr, run.stderr
    assert snapshot(root) == before  # nothing created, changed or deleted
    assert seconds < 5, f"{seconds:.1f} s to report a mistake"


def test_predict_takes_what_keras_and_fastai_users_pass(sandbox):
    clf = headstart.load(sandbox["model"])
    red = Path(sandbox["image"])
    array = np.asarray(Image.open(red).convert("RGB"))
    assert list(clf.predict(str(red))) == ["red"]  # one path as a string
    assert list(clf.predict(Image.open(red))) == ["red"] and list(clf.predict(array)) == ["red"]
    assert list(clf.predict(np.stack([array, array]))) == ["red", "red"]  # an N x H x W x 3 batch
    assert list(clf.predict([red.parent.parent / "blue"])) == ["blue"] * 4  # a folder in a list
    labels = clf.predict([red, "missing.jpg", array])  # unusable files give None, never a shape error
    assert list(labels) == ["red", None, "red"]
    assert np.isnan(clf.predict_proba(["missing.jpg"])).all()
    np.testing.assert_allclose(clf.predict_proba(array), clf.predict_proba(red), atol=1e-5)
    with pytest.raises(headstart.DataError, match="uint8"):
        clf.predict(array.astype(np.float32) / 255)
    with pytest.raises(headstart.DataError, match="cannot predict a int"):
        clf.predict([3])


def test_a_config_whose_classes_do_not_match_the_head_is_refused(tmp_path, sandbox):
    shutil.copytree(sandbox["model"], tmp_path / "model")
    config = (tmp_path / "model" / "config.json")
    config.write_text(config.read_text().replace('"red"', '"red", "green"', 1))
    with pytest.raises(headstart.ArtifactError, match="names 3 classes but the head has 2"):
        headstart.load(tmp_path / "model")


def test_model_folders_get_normal_permissions(tmp_path, colors_data):
    previous = os.umask(0o022)
    try:
        headstart.TransferClassifier(C=1.0).fit(colors_data / "train").save(tmp_path / "model")
    finally:
        os.umask(previous)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "model" / "config.json").stat().st_mode & 0o777 == 0o644


def test_a_file_that_breaks_during_training_is_listed(tmp_path, colors_data, monkeypatch):
    import headstart.training.datamodule
    from headstart.training.options import FineTuneConfig

    data = tmp_path / "data"
    shutil.copytree(colors_data / "train", data)
    (data / "red" / "broke.png").write_bytes(b"\x89PNG broken after the check")
    # the image check passed
    monkeypatch.setattr(headstart.training.datamodule, "usable_images", lambda images, *args: (images, []))
    clf = headstart.TransferClassifier("test_efficientnet", weights="none", strategy="fine-tune", image_size=32,
                                       finetune=FineTuneConfig(epochs=1, workers=0, batch_size=8)).fit(data)
    assert [Path(s["path"]).name for s in clf.fit_info_["skipped"]] == ["broke.png"]


def test_an_advisor_with_a_class_of_one_image_still_decides(tmp_path):
    for name, color, n in (("red", (200, 40, 40), 6), ("blue", (40, 40, 200), 1)):
        for i in range(n):
            make_image(tmp_path / "train" / name / f"{i}.png", color, seed=i)
    clf = headstart.TransferClassifier(strategy="auto").fit(tmp_path / "train")
    assert "single" in " ".join(clf.auto_["advice"]["notes"])  # every network's penultimate, their probes averaged
    assert clf.layers_ == [f"{name}:penultimate" for name in AUTO_MODELS] and clf.predict([tmp_path / "train" /
                                                                                           "blue" / "0.png"])[0]
    one = headstart.TransferClassifier(DEFAULT_MODEL, strategy="auto").fit(tmp_path / "train")
    assert one.layers_ == ["penultimate"]


def test_ctrl_c_names_the_command_that_resumes(tmp_path, colors_data, capsys, monkeypatch):
    from headstart.cli import main

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(headstart.TransferClassifier, "fit", interrupted)
    out = tmp_path / "run"
    assert main(["fit", str(colors_data), "--strategy", "fine-tune", "--out", str(out)]) == 130
    assert f"resume with `headstart fit --resume {out}`" in capsys.readouterr().err
    assert main(["fit", str(colors_data), "--strategy", "feature-extractor", "--out", str(tmp_path / "fe")]) == 130
    assert "run the same command again" in capsys.readouterr().err


def test_without_the_training_stack_fit_says_what_to_install(colors_data, tmp_path):
    code = ("import sys; sys.modules['torch'] = None; from headstart.cli import main; "
            f"sys.exit(main(['fit', {str(colors_data)!r}, '--out', {str(tmp_path / 'x')!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "needs the training stack" in run.stderr


def test_fine_tuning_is_quiet_unless_verbose(tmp_path, colors_data):
    command = [sys.executable, "-m", "headstart.cli", "fit", str(colors_data), "--strategy", "fine-tune", "--epochs",
               "1", "--model", "test_efficientnet", "--weights", "none", "--image-size", "32", "--workers", "0"]
    quiet = subprocess.run([*command, "--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "GPU available" not in quiet.stderr and "litlogger" not in quiet.stderr and "Warning" not in quiet.stderr
    verbose = subprocess.run([*command, "--out", str(tmp_path / "b"), "--verbose"], capture_output=True, text=True,
                             timeout=300)
    assert verbose.returncode == 0 and "GPU available" in verbose.stderr


def test_predict_marks_unfamiliar_images_in_text_and_json(sandbox, tmp_path, capsys):
    import json

    from headstart.cli import main

    green = make_image(tmp_path / "green.png", (30, 220, 30))
    assert main(["predict", sandbox["model"], str(green), sandbox["image"], "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["unfamiliar"] for p in out["predictions"]] == [True, False] and out["familiarity_threshold"] > 0
    assert main(["predict", sandbox["model"], str(green), "-q"]) == 0
    assert "UNFAMILIAR" in capsys.readouterr().out
