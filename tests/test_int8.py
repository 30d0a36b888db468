"""int8: codes from the quantised network, cached apart from fp32; the saved and exported models keep that network;
calibration uses training images only; predicting from an exported int8 file never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.cli import main
from headstart.codes.create import create_backbone
from headstart.codes.extract import GPU_DEVICE_FILES, FeatureExtractor
from headstart.codes.quantize import CALIBRATION_IMAGES, calibration_sample, quantize
from headstart.codes.runners import fp32_network
from headstart.data.decode import decoded_batches
from headstart.data.splits import find_splits
from headstart.deploy.runtime import OnnxClassifier


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory, colors_data):
    out = tmp_path_factory.mktemp("int8") / "model"
    assert main(["fit", str(colors_data / "train"), "--val-fraction", "0.25", "--strategy", "feature-extractor",
                 "--precision", "int8", "--out", str(out), "--no-report", "-q"]) == 0
    return out


def test_calibration_is_a_reproducible_sample_of_training_images_only(int8_run, colors_data):
    config = json.loads((int8_run / "config.json").read_text())
    splits = find_splits(colors_data / "train", val_fraction=0.25)
    calibration = set(config["calibration"])
    assert config["precision"] == "int8" and (int8_run / "codes-int8.onnx").is_file()
    assert calibration == {str(p) for p in splits.train.paths}  # fewer than 32: all of them, and no val image
    assert calibration.isdisjoint(str(p) for p in splits.val.paths)
    many = [f"img{i:04d}.jpg" for i in range(1000)]
    picked = calibration_sample(many)
    assert len(picked) == CALIBRATION_IMAGES == 32 and set(map(str, picked)) <= set(many)
    assert picked == calibration_sample(many[::-1])  # the same images whatever order the files were listed in


def test_neither_weights_kept_from_other_data_nor_the_batch_size_change_a_byte_of_the_network(colors_data, tmp_path):
    backbone = create_backbone()
    network = fp32_network(backbone, ["penultimate"], tmp_path)
    train, val = sorted((colors_data / "train").rglob("*.png")), sorted((colors_data / "val").rglob("*.png"))
    first, other = ([b for _, b, _ in decoded_batches(paths, backbone.preprocess, 16, 2)] for paths in (train, val))
    kept = tmp_path / "weights.npz"
    quantize(network, first, kept)  # computes the weights' parameters and keeps them
    assert kept.is_file()
    fresh, reused = quantize(network, other), quantize(network, other, kept)
    assert reused == fresh
    with np.load(kept) as saved:  # the kept parameters are the ones used: doubled scales, another network
        np.savez(tmp_path / "doubled.npz", **{k: v * 2 if k.startswith("scale_") else v for k, v in saved.items()})
    assert quantize(network, other, tmp_path / "doubled.npz") != fresh
    again = quantize(network, [b for _, b, _ in decoded_batches(train, backbone.preprocess, 4, 2)])
    assert again != fresh  # other ranges: another network, so the comparison can fail
    assert again == quantize(network, first)  # batches of 4 or 16: the same ranges (min and max over batches)
    kept.write_bytes(b"damaged")
    assert quantize(network, other, kept) == fresh  # an unreadable file: computed again, and kept anew
    assert kept.read_bytes() != b"damaged"


@pytest.mark.skipif(not sys.platform.startswith("linux") or any(Path(p).exists() for p in GPU_DEVICE_FILES),
                    reason="a GPU driver is installed here: extract asks torch whether CUDA is there")
def test_extract_with_the_network_known_imports_no_torch_in_fp32_or_int8(colors_data, tmp_path):
    """Once the card and the export are cached, `extract` on a CPU runs ONNX Runtime alone, even to quantise."""
    cache = str(tmp_path / "cache")
    code = ("import sys\nfrom headstart.cli import main\nrc = main(sys.argv[1:])\n"
            "print(rc, *sorted({'torch', 'timm'} & set(sys.modules)), file=sys.stderr)\n")
    runs = [("train", "fp32", "0 timm torch"), ("val", "fp32", "0"), ("val", "int8", "0")]  # the first builds it
    for folder, precision, imported in runs:
        result = subprocess.run([sys.executable, "-c", code, "extract", str(colors_data / folder), "--cache-dir",
                                 cache, "--precision", precision, "-q", "--json"], capture_output=True, text=True,
                                timeout=300)
        assert result.stderr.splitlines()[-1] == imported, result.stderr
        assert json.loads(result.stdout)["computed"] > 0  # codes were computed, not found


def test_int8_codes_are_cached_apart_from_fp32(colors_data, tmp_path):
    backbone = create_backbone()
    paths = sorted((colors_data / "val").rglob("*.png"))
    train = sorted((colors_data / "train").rglob("*.png"))
    fp32 = FeatureExtractor(backbone, ["penultimate"], tmp_path, precision="fp32")
    int8 = FeatureExtractor(backbone, ["penultimate"], tmp_path, precision="int8", calibration=train)
    first_fp32, first_int8 = fp32.transform(paths), int8.transform(paths)
    assert first_fp32.extracted == first_int8.extracted == len(paths)  # int8 did not take fp32's codes
    assert not np.allclose(first_fp32.codes, first_int8.codes, atol=1e-6)
    cosine = (first_fp32.codes * first_int8.codes).sum(1) / (
        np.linalg.norm(first_fp32.codes, axis=1) * np.linalg.norm(first_int8.codes, axis=1))
    assert cosine.min() > 0.95  # the same codes, to int8's precision
    again_fp32, again_int8 = fp32.transform(paths), int8.transform(paths)
    assert again_fp32.extracted == again_int8.extracted == 0
    np.testing.assert_array_equal(again_fp32.codes, first_fp32.codes)
    np.testing.assert_array_equal(again_int8.codes, first_int8.codes)
    assert len(list((tmp_path / "codes").iterdir())) == 2
    other = FeatureExtractor(backbone, ["penultimate"], tmp_path, precision="int8", calibration=paths)
    assert other.transform(paths).extracted == len(paths)  # another calibration: other codes, cached apart


def test_int8_saved_loaded_exported_and_predicted_from_its_folder_without_torch(int8_run, colors_data, tmp_path):
    paths = sorted((colors_data / "val").rglob("*.png"))
    loaded = headstart.load(int8_run)
    expected = loaded.predict_proba(paths)
    assert list(loaded.predict(paths)) == [p.parent.name for p in paths]
    assert main(["export", str(int8_run), "--out", str(tmp_path / "m.onnx"), "-q"]) == 0
    onnx_model = OnnxClassifier(tmp_path / "m.onnx")
    assert onnx_model.metadata["precision"] == "int8"
    np.testing.assert_allclose(onnx_model.predict_files(paths).proba, expected, atol=1e-4)
    assert main(["export", str(int8_run), "--precision", "fp32", "--out", str(tmp_path / "f.onnx"), "-q"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size < 0.5 * (tmp_path / "f.onnx").stat().st_size
    assert OnnxClassifier(int8_run / "model.onnx").metadata["precision"] == "int8"
    code = ("import json, sys\nfrom headstart.cli import main\n"
            f"rc = main(['predict', {str(int8_run)!r}, {str(paths[0])!r}, '--json'])\n"  # the folder's own file
            "assert rc == 0\nassert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    probabilities = json.loads(result.stdout)["predictions"][0]["probabilities"]
    assert probabilities[paths[0].parent.name] == pytest.approx(float(expected[0].max()), abs=1e-4)


def test_an_fp32_model_exports_to_int8_calibrated_on_its_training_images(colors_data, tmp_path):
    clf = headstart.TransferClassifier(C=1.0).fit(colors_data / "train")
    clf.save(tmp_path / "model")
    paths = sorted((colors_data / "val").rglob("*.png"))
    assert main(["export", str(tmp_path / "model"), "--precision", "int8", "--out", str(tmp_path / "m.onnx"),
                 "-q"]) == 0
    labels = OnnxClassifier(tmp_path / "m.onnx").predict_files(paths).proba.argmax(1)
    assert [clf.classes_[i] for i in labels] == list(clf.predict(paths))
    assert main(["export", str(tmp_path / "model"), "--precision", "int8", "--calibration",
                 str(colors_data / "train"), "--out", str(tmp_path / "v.onnx"), "-q"]) == 0
