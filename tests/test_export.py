"""Export: one ONNX / TorchScript file that predicts like the saved model; ONNX prediction never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import headstart
from headstart.cli import main
from headstart.data.folders import files_under
from headstart.deploy.runtime import OnnxClassifier
from tests.conftest import SHARED, needs_shared


@pytest.fixture(scope="module")
def saved(tmp_path_factory, colors_data):
    path = tmp_path_factory.mktemp("export") / "model"
    headstart.TransferClassifier(layer="blocks.5+penultimate").fit(colors_data / "train").save(path)
    return path


def _images(colors_data):
    paths = sorted((colors_data / "val").rglob("*.png"))
    if SHARED.is_dir():
        paths += files_under(SHARED / "dtd10" / "val" / "bumpy")[:6]
    return paths


def test_onnx_export_equals_saved_model(saved, colors_data, tmp_path):
    assert main(["export", str(saved), "--out", str(tmp_path / "m.onnx"), "-q"]) == 0
    paths = _images(colors_data)
    expected, kept, _ = headstart.load(saved).predict_files(paths)
    onnx_model = OnnxClassifier(tmp_path / "m.onnx")
    got, kept_onnx, _ = onnx_model.predict_files(paths)
    assert onnx_model.classes_ == ["blue", "red"] and kept_onnx.tolist() == kept.tolist()
    assert np.abs(got - expected).max() < 1e-4
    assert main(["export", str(saved), "--out", str(tmp_path / "m.onnx"), "-q"]) == 2  # not overwritten silently


def test_torchscript_export_equals_saved_model(saved, colors_data, tmp_path):
    assert main(["export", str(saved), "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "-q"]) == 0
    extra = {"headstart.json": ""}
    module = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    meta = json.loads(extra["headstart.json"])
    clf = headstart.load(saved)
    paths = _images(colors_data)
    batch = np.stack([clf.backbone_.preprocess.load(p) for p in paths])
    expected, _, _ = clf.predict_files(paths)
    with torch.inference_mode():
        got = module(torch.from_numpy(batch)).numpy()
    assert json.loads(meta["class_names"]) == ["blue", "red"] and np.abs(got - expected).max() < 1e-4


@needs_shared
def test_predict_from_onnx_never_imports_torch(saved, tmp_path):
    assert main(["export", str(saved), "--out", str(tmp_path / "m.onnx"), "-q"]) == 0
    photo = files_under(SHARED / "cats_vs_dogs" / "val" / "cat")[0]
    code = ("import json, sys\nfrom headstart.cli import main\n"
            f"rc = main(['predict', {str(tmp_path / 'm.onnx')!r}, {str(photo)!r}, '--json'])\n"
            "assert rc == 0\nassert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    prediction = json.loads(result.stdout)["predictions"][0]
    assert prediction["path"] == str(photo) and set(prediction["probabilities"]) == {"blue", "red"}


def test_familiarity_is_the_same_saved_loaded_and_exported(tmp_path, colors_data):
    """The saved model, the loaded one and the exported ONNX file give every image the same familiarity."""
    from headstart.deploy.export import export
    from headstart.deploy.runtime import OnnxClassifier
    from tests.conftest import make_image

    clf = headstart.TransferClassifier(layer="blocks.5", C=1.0).fit(colors_data / "train")
    paths = sorted((colors_data / "val").rglob("*.png")) + [make_image(tmp_path / "green.png", (30, 220, 30))]
    clf.save(tmp_path / "model")
    loaded = headstart.load(tmp_path / "model")
    export(loaded, tmp_path / "model.onnx")
    onnx_model = OnnxClassifier(tmp_path / "model.onnx")
    fitted, again, exported = (m.predict_files(paths).familiarity for m in (clf, loaded, onnx_model))
    np.testing.assert_allclose(again, fitted, atol=1e-6)
    np.testing.assert_allclose(exported, fitted, atol=1e-3)
    assert onnx_model.threshold == pytest.approx(clf.familiarity_.threshold, abs=1e-6)
    flags = loaded.unfamiliar(paths)
    assert list(flags) == list(exported < onnx_model.threshold) and flags[-1]  # the green image is unlike red/blue
    assert loaded.evaluate(colors_data / "val")["n_unfamiliar"] == int(flags[:-1].sum())
