"""Export: one ONNX / TorchScript file that predicts like the saved model; ONNX prediction never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
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
    # the codes network's IR version (the exporter's, which ONNX Runtime opened), not the onnx package's newest: an
    # onnx newer than the ONNX Runtime beside it (onnx 1.23 writes 14, ONNX Runtime 1.30 reads 13) would refuse it
    codes_ir = onnx.load(str(headstart.load(saved)._extractor().network())).ir_version
    assert onnx.load(str(tmp_path / "m.onnx")).ir_version == onnx.load(str(saved / "model.onnx")).ir_version == codes_ir


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


TORCH_BLOCKED = ("import sys; sys.modules['torch'] = None; sys.modules['timm'] = None\n"
                 "from headstart.cli import main\nsys.exit(main(sys.argv[1:]))")


def torch_free(*args: str) -> dict:
    """``headstart ARGS --json`` in a process where importing torch or timm fails."""
    result = subprocess.run([sys.executable, "-c", TORCH_BLOCKED, *args, "--json"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_saved_folder_predicts_evaluates_and_reports_torch_free_with_its_own_onnx_file(saved, colors_data, tmp_path):
    import shutil

    from headstart.artifact import deployed_file

    entry = json.loads((saved / "config.json").read_text())["onnx"]
    assert entry["file"] == "model.onnx" and entry["bytes"] == (saved / "model.onnx").stat().st_size
    paths = _images(colors_data)
    clf = headstart.load(saved)
    expected = clf.predict_files(paths)
    answers = torch_free("predict", str(saved), *map(str, paths))["predictions"]
    assert [a["path"] for a in answers] == [str(paths[i]) for i in expected.kept]
    got = np.array([[a["probabilities"][name] for name in clf.classes_] for a in answers])
    assert np.abs(got - expected.proba).max() < 1e-4
    assert [a["familiarity"] for a in answers] == pytest.approx(expected.familiarity.tolist(), abs=1e-3)
    evaluated, library = torch_free("evaluate", str(saved), str(colors_data / "val")), clf.evaluate(colors_data / "val")
    for key in ("n_images", "accuracy", "n_unfamiliar", "confusion_matrix"):
        assert evaluated[key] == library[key], key
    report = tmp_path / "report.html"
    assert torch_free("report", str(saved), str(colors_data / "val"), "--out", str(report))["out"] == str(report)
    assert f"accuracy<b>{library['accuracy']:.4f}</b>" in report.read_text()
    edited = tmp_path / "edited"  # a model.onnx that is not the one saved with the config is not used
    shutil.copytree(saved, edited)
    with open(edited / "model.onnx", "r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x00" if handle.read(1) != b"\x00" else b"\x01")
    assert deployed_file(saved) == saved / "model.onnx" and deployed_file(edited) is None
    assert main(["predict", str(edited), str(paths[0]), "--json"]) == 0  # by the library instead


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
@pytest.mark.parametrize("strategy", ["feature-extractor", "fine-tune"])
def test_a_model_fitted_on_cuda_saves_its_onnx_file(strategy, colors_data, tmp_path):
    """On CUDA the codes run in eager PyTorch on the GPU, and fine-tuning trains there: the network is on the GPU when
    the model is saved. Its export is still traced on the CPU, and the network is put back (saving once fell back to
    dynamo, failed, and left the folder without model.onnx)."""
    from headstart.training.options import FineTuneConfig

    config = FineTuneConfig(unfreeze="1", epochs=1, probe_epochs=0, batch_size=8, workers=0)
    clf = headstart.TransferClassifier(layer="blocks.5+penultimate", strategy=strategy, finetune=config,
                                       cache_dir=tmp_path / "cache")  # codes cached by other tests: no network run
    clf.fit(colors_data / "train").save(tmp_path / "m")
    assert next(clf.backbone_.model.parameters()).device.type == "cuda"
    assert json.loads((tmp_path / "m" / "config.json").read_text())["onnx"]["file"] == "model.onnx"
    paths = _images(colors_data)
    expected, _, _ = clf.predict_files(paths)  # float32 on the GPU, without TF32
    got, _, _ = OnnxClassifier(tmp_path / "m" / "model.onnx").predict_files(paths)
    assert np.abs(got - expected).max() < 1e-3
