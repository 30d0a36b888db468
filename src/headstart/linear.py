"""Linear classifiers on CNN codes: standardised features, regularisation chosen by cross-validation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .defaults import CLASSIFIERS
from .errors import DataError

C_GRID = tuple(float(c) for c in np.logspace(-4, 1, 6))


@dataclass
class LinearHead:
    """``softmax(codes @ weight.T + bias)``: the whole classifier on raw codes (standardisation folded in)."""

    weight: np.ndarray
    bias: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def logits(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float64) @ self.weight.T.astype(np.float64) + self.bias

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        z = self.logits(codes)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)


def _folds(labels: np.ndarray, seed: int, max_folds: int = 5):
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(labels).min())
    n_folds = min(max_folds if len(labels) <= 20_000 else 3, smallest)
    return StratifiedKFold(n_folds, shuffle=True, random_state=seed) if n_folds >= 2 else None


def _as_multiclass(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's binary (1, d) form to two rows of logits [0, z]."""
    if coef.shape[0] == 1:
        return np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return coef, intercept


def _fit_temperature(decision: np.ndarray, labels: np.ndarray) -> float:
    """The factor on SVM decision values that minimises the log loss of their softmax (out-of-fold values)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        z = decision * np.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(1))).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded").x))


def fit_linear(codes: np.ndarray, labels: np.ndarray, n_classes: int, classifier: str = "logistic",
               C: float | None = None, seed: int = 0) -> LinearHead:
    """Fit a softmax regression or linear SVM on standardised ``codes``; C by cross-validation unless given."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GridSearchCV, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if classifier not in CLASSIFIERS:
        raise DataError(f"unknown classifier {classifier!r}; choose from {', '.join(CLASSIFIERS)}")
    present = np.unique(labels)
    if len(present) < n_classes:
        raise DataError(f"{n_classes - len(present)} class(es) have no usable training image; "
                        "check the skipped files")
    if classifier == "logistic":
        estimator = LogisticRegression(max_iter=2000, tol=1e-4)
    else:
        estimator = LinearSVC(dual="auto", max_iter=5000)
    pipeline = make_pipeline(StandardScaler(), estimator)
    param = f"{type(estimator).__name__.lower()}__C"
    folds = _folds(labels, seed)
    info: dict[str, Any] = {"classifier": classifier}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter at extreme C values
        if C is None and folds is not None and classifier == "logistic":
            # the regularisation path with warm starts: about twice as fast as a grid search
            scaler = StandardScaler().fit(codes)
            search = LogisticRegressionCV(Cs=list(C_GRID), cv=folds, scoring="neg_log_loss", max_iter=2000)
            search.fit(scaler.transform(codes), labels)
            C = float(np.atleast_1d(search.C_)[0])
            scores = next(iter(search.scores_.values())).mean(0)
            info.update(cv_folds=folds.get_n_splits(), cv_metric="neg_log_loss",
                        cv_scores={f"{c:g}": float(v) for c, v in zip(C_GRID, scores)})
            pipeline = make_pipeline(scaler, LogisticRegression(C=C, max_iter=2000)).fit(codes, labels)
        elif C is None and folds is not None:
            search = GridSearchCV(pipeline, {param: list(C_GRID)}, cv=folds, scoring="accuracy", refit=True)
            search.fit(codes, labels)
            pipeline, C = search.best_estimator_, float(search.best_params_[param])
            info.update(cv_folds=folds.get_n_splits(), cv_metric="accuracy",
                        cv_scores={f"{c:g}": float(v) for c, v in zip(C_GRID, search.cv_results_["mean_test_score"])})
        else:
            C = 1.0 if C is None else float(C)
            pipeline.set_params(**{param: C}).fit(codes, labels)
        temperature = 1.0
        if classifier == "svm":
            if folds is not None:
                decision = cross_val_predict(pipeline, codes, labels, cv=folds, method="decision_function")
                decision = decision[:, None] * np.array([[-0.5, 0.5]]) if decision.ndim == 1 else decision
                temperature = _fit_temperature(decision, labels)
            info["temperature"] = temperature
    scaler, model = pipeline[0], pipeline[-1]
    coef, intercept = _as_multiclass(model.coef_, np.atleast_1d(model.intercept_))
    if classifier == "svm" and n_classes == 2:  # decision d as logits [-d/2, d/2], matching the calibration
        coef, intercept = coef - coef.sum(0) / 2, intercept - intercept.sum() / 2
    weight = coef / scaler.scale_ * temperature
    bias = (intercept - coef @ (scaler.mean_ / scaler.scale_)) * temperature
    info["C"] = C
    return LinearHead(weight.astype(np.float32), bias.astype(np.float32), info)
