"""The whole path on real data: pretrained accuracy, fit, save/load, weights files, the warm-cache speedup."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import headstart
from headstart.codes.backbones import LOGITS
from headstart.codes.create import create_backbone
from headstart.codes.extract import FeatureExtractor
from tests.conftest import SHARED, needs_shared, snapshot


@needs_shared
def test_embedded_lite0_classifies_imagenet_samples(cache_dir):
    rows = list(csv.DictReader((SHARED / "imagenet_samples" / "labels.csv").read_text().splitlines()))
    paths = [SHARED / "imagenet_samples" / "images" / r["filename"] for r in rows]
    backbone = create_backbone(keep_classifier=True)
    codes = FeatureExtractor(backbone, [LOGITS], cache_dir=cache_dir).transform(paths)
    top1 = float((codes.codes.argmax(1) == np.array([int(r["class_index"]) for r in rows])[codes.kept]).mean())
    print(f"imagenet_samples top-1: {top1:.4f} on {len(codes.kept)} images")
    assert len(codes.kept) == 1000 and top1 >= 0.85


def test_fit_predict_save_load_roundtrip(tmp_path, colors_data, cache_dir):
    before = snapshot(colors_data)
    clf = headstart.TransferClassifier(layer="blocks.4+penultimate").fit(colors_data / "train")
    assert clf.classes_ == ["blue", "red"] and clf.head_.weight.shape == (2, 112 + 1280)
    val = sorted((colors_data / "val").rglob("*.png"))
    assert clf.score(colors_data / "val") == 1.0
    proba = clf.predict_proba(val)
    clf.head_.weight = np.asfortranarray(clf.head_.weight)  # as a trained torch layer can leave it
    clf.save(tmp_path / "model")
    loaded = headstart.load(tmp_path / "model")
    assert np.array_equal(loaded.predict(val), clf.predict(val))
    np.testing.assert_allclose(loaded.predict_proba(val), proba, atol=1e-6)
    assert snapshot(colors_data) == before  # inputs never written to
    with pytest.raises(headstart.ArtifactError, match="already exists"):
        clf.save(tmp_path / "model")


def test_svm_and_fixed_C(colors_data, cache_dir):
    clf = headstart.TransferClassifier(classifier="svm").fit(colors_data / "train")
    proba = clf.predict_proba(sorted((colors_data / "val").rglob("*.png")))
    assert np.allclose(proba.sum(1), 1) and clf.score(colors_data / "val") == 1.0
    fixed = headstart.TransferClassifier(C=0.5).fit(colors_data / "train")
    assert fixed.head_.info["C"] == 0.5 and "cv_scores" not in fixed.head_.info


def test_weights_from_a_local_file(tmp_path, colors_data, cache_dir):
    from safetensors.torch import save_file

    embedded = create_backbone(keep_classifier=True)
    save_file({k: v.contiguous() for k, v in embedded.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(embedded.model.state_dict(), tmp_path / "w.pth")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pth"):
        assert create_backbone(weights=str(path)).digest == create_backbone().digest
    with pytest.raises(headstart.ModelError, match="do not fit"):
        create_backbone("resnet18", weights=str(tmp_path / "w.safetensors"))


@needs_shared
def test_warm_cache_refit_is_much_faster(tmp_path):
    train = SHARED / "dtd10" / "train"
    cold = headstart.TransferClassifier(cache_dir=tmp_path / "cache", C=1.0).fit(train)
    warm = headstart.TransferClassifier(cache_dir=tmp_path / "cache", classifier="svm", C=0.01).fit(train)
    cold_s, warm_s = cold.fit_info_["seconds"]["codes"], warm.fit_info_["seconds"]["codes"]
    print(f"codes: cold {cold_s:.2f} s, warm {warm_s:.3f} s, {cold_s / warm_s:.0f}x")
    assert warm.fit_info_["n_codes_computed"] == 0 and cold_s > 10 * warm_s


def test_fit_folder_is_fit_as_one_library_call(tmp_path, colors_data):
    """What `headstart fit` does, from Python: the typed result it prints, and the model folder it writes."""
    from headstart.data.splits import find_splits

    result = headstart.fit_folder(headstart.TransferClassifier(C=1.0), colors_data, find_splits(colors_data),
                                  str(tmp_path / "model"), report=False)
    assert result["validation"]["accuracy"] == 1.0 and result["data"]["train_counts"] == {"blue": 12, "red": 12}
    assert result["n_train_images"] == 24 and "report" not in result
    assert headstart.load(tmp_path / "model").config_["validation"] == result["validation"]


def test_a_warm_fit_takes_the_network_from_its_card_and_never_imports_timm_or_sklearn(tmp_path, colors_data):
    """The second run with the same weights reads the backbone's card (digest, preprocessing, layers, weights) from
    the cache: a fit whose codes are cached never builds the network nor imports timm, and saves the same model."""
    import json
    import subprocess
    import sys

    from headstart.codes.cards import Card

    cache = tmp_path / "cache"
    built = create_backbone(cache_dir=cache)
    carded = create_backbone(cache_dir=cache)
    assert built.built and not carded.built
    assert (carded.digest, carded.layers(), carded.preprocess, carded.pretrained_input, carded.weights) == (
        built.digest, built.layers(), built.preprocess, built.pretrained_input, built.weights)
    assert torch.equal(carded.pretrained_head.weight, built.pretrained_head.weight)
    assert carded.model is not None and carded.built  # built on first use, checked against the card's digest
    fit = ["fit", str(colors_data), "--cache-dir", str(cache), "--strategy", "feature-extractor", "--no-report", "-q",
           "--json", "--overwrite"]
    code = ("import sys\nfrom headstart.cli import main\nrc = main(sys.argv[1:])\n"
            "print(rc, *sorted({'timm', 'sklearn'} & set(sys.modules)), file=sys.stderr)\n")
    for run, imported in (("cold", "0 timm"), ("warm", "0")):  # the cold run computes codes: timm
        result = subprocess.run([sys.executable, "-c", code, *fit, "--out", str(tmp_path / run)], capture_output=True,
                                text=True, timeout=300)
        assert result.stderr.splitlines()[-1] == imported, result.stderr  # scikit-learn: only when it is used
    warm = headstart.load(tmp_path / "warm")
    assert json.loads((tmp_path / "warm" / "config.json").read_text())["weights_digest"] == built.digest
    paths = sorted((colors_data / "val").rglob("*.png"))
    np.testing.assert_allclose(warm.predict_proba(paths), headstart.load(tmp_path / "cold").predict_proba(paths),
                               atol=1e-6)
    card = Card.of("tf_efficientnet_lite0", None, None, cache)
    (card.folder / "state.safetensors").write_bytes(b"damaged")  # never copied into a model folder
    again = create_backbone(cache_dir=cache)
    assert again.card.state_file() is None
    headstart.TransferClassifier(C=1.0, cache_dir=cache).fit(colors_data / "train").save(tmp_path / "rebuilt")
    assert headstart.load(tmp_path / "rebuilt").backbone_.digest == built.digest
