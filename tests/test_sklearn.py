"""TransferClassifier and CNNCodes under scikit-learn's own tools: clone, get/set_params, CV, grid search, pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

import headstart
from headstart.training.options import FineTuneConfig


@pytest.fixture(scope="module")
def xy(colors_data) -> tuple[list[str], list[str], list[str], list[str]]:
    """Training and validation paths with their labels, as scikit-learn users hold them."""
    def split(name):
        paths = sorted((colors_data / name).rglob("*.png"))
        return [str(p) for p in paths], [p.parent.name for p in paths]

    return (*split("train"), *split("val"))


def test_clone_and_params():
    clf = headstart.TransferClassifier(layer="blocks.5", C=0.5, finetune=FineTuneConfig(epochs=2))
    assert is_classifier(clf) and clone(clf).get_params()["layer"] == "blocks.5"
    params = clf.get_params()
    assert {"model", "strategy", "layer", "classifier", "C", "budget", "finetune"} <= set(params)
    assert clf.set_params(C=2.0) is clf and clf.C == 2.0
    assert "layer='blocks.5'" in repr(clf)


def test_the_tags_are_those_scikit_learns_own_mixins_give():
    """The estimators keep scikit-learn's contract without importing it at start-up; its tools see the same tags."""
    from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
    from sklearn.utils import get_tags

    class Classifier(ClassifierMixin, BaseEstimator):
        pass

    class Transformer(TransformerMixin, BaseEstimator):
        pass

    assert get_tags(headstart.TransferClassifier()) == get_tags(Classifier())
    assert get_tags(headstart.CNNCodes()) == get_tags(Transformer())
    assert repr(headstart.TransferClassifier()) == "TransferClassifier()"
    with pytest.raises(ValueError, match="Invalid parameter 'Cs'"):
        headstart.TransferClassifier().set_params(Cs=[1.0])


def test_cross_val_score_and_grid_search_over_C_and_layer(xy):
    train, labels, val, val_labels = xy
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(headstart.TransferClassifier(C=1.0), train, labels, cv=folds)
    assert len(scores) == 3 and scores.min() == 1.0
    search = GridSearchCV(headstart.TransferClassifier(), {"C": [0.1, 1.0], "layer": ["penultimate", "blocks.5"]},
                          cv=folds).fit(train, labels)
    assert search.best_params_["layer"] in ("penultimate", "blocks.5") and len(search.cv_results_["params"]) == 4
    assert search.best_estimator_.layers_ == [search.best_params_["layer"]]
    assert accuracy_score(val_labels, search.predict(val)) == 1.0


def test_integer_labels_come_back_as_given(xy):
    train, labels, val, val_labels = xy
    clf = headstart.TransferClassifier(C=1.0).fit(train, [int(label == "red") for label in labels])
    assert clf.classes_ == [0, 1] and list(clf.predict(val)) == [int(label == "red") for label in val_labels]


def test_cnn_codes_in_a_pipeline_with_any_classifier(xy):
    train, labels, val, val_labels = xy
    pipeline = make_pipeline(headstart.CNNCodes(layer="blocks.5"), LogisticRegression(max_iter=1000))
    assert pipeline.fit(train, labels).score(val, val_labels) == 1.0
    assert pipeline[0].transform(val[:3]).shape == (3, 192)


def test_every_parameter_is_saved_and_restored(tmp_path, colors_data):
    clf = headstart.TransferClassifier(layer="blocks.4+penultimate", C=0.3, seed=3, budget=123.0,
                                       finetune=FineTuneConfig(epochs=7)).fit(colors_data / "train")
    clf.save(tmp_path / "model")
    loaded = headstart.load(tmp_path / "model")
    expected = {k: v for k, v in clf.get_params().items() if k not in ("cache_dir", "engine", "progress")}
    assert {k: v for k, v in loaded.get_params().items() if k in expected} == expected
    np.testing.assert_allclose(loaded.predict_proba(colors_data / "val"), clf.predict_proba(colors_data / "val"),
                               atol=1e-6)


def test_fit_never_changes_the_users_config(colors_data):
    config = FineTuneConfig(epochs=1, workers=0, batch_size=8)
    clf = headstart.TransferClassifier("test_efficientnet", weights="none", strategy="scratch", image_size=32,
                                       finetune=config, seed=5).fit(colors_data / "train")
    assert config == FineTuneConfig(epochs=1, workers=0, batch_size=8)
    assert len(clf.familiarity_.bank) == 24  # a trained network gets familiarity from its own penultimate codes


@pytest.mark.parametrize("check", ["check_no_attributes_set_in_init", "check_parameters_default_constructible",
                                   "check_get_params_invariance", "check_set_params", "check_estimator_cloneable",
                                   "check_estimator_repr", "check_do_not_raise_errors_in_init_or_set_params",
                                   "check_estimator_tags_renamed", "check_valid_tag_types"])
@pytest.mark.parametrize("estimator", [headstart.TransferClassifier, headstart.CNNCodes])
def test_scikit_learns_own_checks_that_apply_to_images(check, estimator):
    """scikit-learn's estimator checks that need no numeric data (the others fit on feature matrices, which an
    image classifier refuses in one line)."""
    from sklearn.utils import estimator_checks

    getattr(estimator_checks, check)(estimator.__name__, estimator())


def test_fit_takes_images_in_memory_as_predict_does_and_gives_the_model_of_the_same_files(colors_data, tmp_path):
    """A 4-D uint8 batch, a list of arrays and a list of Pillow images give the model fitted on the same images
    saved as PNG files; a feature matrix is one line."""
    from PIL import Image

    paths = sorted((colors_data / "train").rglob("*.png"))
    labels = [p.parent.name for p in paths]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    on_files = headstart.TransferClassifier(C=1.0).fit([str(p) for p in paths], labels)
    for X in (np.stack(arrays), arrays, [Image.fromarray(a) for a in arrays]):
        clf = headstart.TransferClassifier(C=1.0, cache_dir=tmp_path / "cache").fit(X, labels)
        np.testing.assert_allclose(clf.head_.weight, on_files.head_.weight, atol=1e-5)
        np.testing.assert_allclose(clf.predict_proba(np.stack(arrays)), on_files.predict_proba(paths), atol=1e-5)
    assert len(list((tmp_path / "cache" / "images").glob("*.png"))) == len(paths)  # one file per distinct image
    again = headstart.TransferClassifier(C=1.0, cache_dir=tmp_path / "cache").fit(np.stack(arrays), labels)
    assert again.fit_info_["n_codes_computed"] == 0  # cached by the pixels' digest, as files by their identity
    for bad, said in ((np.random.default_rng(0).normal(size=(24, 10)), "feature matrix"),
                      (np.stack(arrays).astype(np.float32), "float32 array"),
                      ([[0.5, 1.5]] * 24, "table of numbers")):
        with pytest.raises(headstart.HeadstartError, match=said):
            headstart.TransferClassifier().fit(bad, labels)
