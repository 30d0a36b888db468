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
