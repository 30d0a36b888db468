"""TransferClassifier and CNNCodes: scikit-learn estimators that tie backbone, CNN codes and classifier together.

They follow scikit-learn's contract (``__init__`` stores, ``fit`` learns, ``get_params`` tells), so ``clone``,
``GridSearchCV``, ``cross_val_score`` and ``Pipeline`` work: ``X`` is image paths (or a folder), ``y`` their labels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .artifact import read_model, save
from .auto.networks import named_networks
from .codes.backbones import PENULTIMATE, create_backbone
from .codes.extract import Codes, FeatureExtractor
from .codes.joint import joint_layers
from .codes.quantize import calibration_sample
from .data.decode import rgb_from_memory
from .data.folders import ImageSet
from .data.imagestats import STATS
from .data.inputs import as_image_set, prediction_items
from .defaults import DEFAULT_BUDGET, DEFAULT_MODEL, FIT_STRATEGIES, PRECISIONS
from .disk import cache_folder
from .errors import ArtifactError, DataError, HeadstartError
from .report.metrics import evaluation
from .results import Predictions
from .sklearn_contract import ClassifierEstimator, TransformerEstimator
from .strategies.feature_extractor import fit_codes
from .strategies.network import fit_network
from .training.options import FineTuneConfig, parse_layers


class TransferClassifier(ClassifierEstimator):
    """An image classifier built on a pretrained timm network.

    >>> clf = TransferClassifier().fit("data/train")          # one subfolder per class
    >>> clf.predict(["photo.jpg"]), clf.score("data/val")

    ``strategy="feature-extractor"``: the network is frozen and its CNN codes from ``layer`` (``"penultimate"``,
    an earlier block such as ``"blocks.5"``, or several joined by ``+``) feed a linear ``classifier``
    (``"logistic"`` softmax regression or ``"svm"``), its ``C`` chosen by cross-validation on the training data.

    ``strategy="fine-tune"`` / ``"scratch"``: a new head trained with the top blocks (``finetune.unfreeze``) or the
    whole network on Lightning, checkpoints and logs in ``workdir``; the result predicts through the same path.

    ``strategy="auto"``: measure the data in one pass (size, similarity to ImageNet, every candidate layer), then
    train the linear classifier on the layer that transfers best, or fine-tune when the data is large and that fits
    ``budget`` seconds (checked against the probe on held-out training images). ``auto_`` holds the evidence; a
    ``layer`` given with auto means the feature extractor on that layer.

    ``model``: a timm name; with auto, several joined by commas to choose among (each measured on the same training
    images). None (default): ``DEFAULT_MODEL``, and with auto (no ``weights``, no ``layer``) the choice between
    ``AUTO_MODELS`` (EfficientNet-Lite0 and -Lite2, both embedded); ``backbone_.name`` is the one used.

    ``precision="int8"``: CNN codes from the network quantised to int8 by ONNX Runtime (calibrated on a sample of
    the training images), about 1.8x faster on CPUs with int8 instructions; the saved model keeps that network.
    ``None`` (default): fp32, except that ``strategy="auto"`` may choose int8 for a large collection where it is
    measured to keep accuracy and save time (``auto_["precision"]``); ``precision_`` is the one used.

    Multi-label (several labels per image): ``y`` a 0/1 indicator matrix or one list of labels per image, as
    scikit-learn's multi-label estimators take it; one logistic model per label, each with its own C and decision
    threshold; ``predict`` then returns the indicator matrix and ``score`` the subset accuracy.
    """

    def __init__(self, model: str | None = None, weights: str | None = None,
                 strategy: str = "feature-extractor", layer: str | Sequence[str] | None = None,
                 classifier: str = "logistic", C: float | None = None, cache_dir: str | Path | None | bool = None,
                 engine: str = "auto", batch_size: int | None = None, seed: int = 0, progress: bool = False,
                 image_size: int | None = None, finetune: FineTuneConfig | None = None,
                 workdir: str | Path | None = None, resume: bool = False, budget: float = DEFAULT_BUDGET,
                 precision: str | None = None):
        self.model = model
        self.weights = weights
        self.strategy = strategy
        self.layer = layer
        self.classifier = classifier
        self.C = C
        self.cache_dir = cache_dir
        self.engine = engine
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        self.image_size = image_size
        self.finetune = finetune
        self.workdir = workdir
        self.resume = resume
        self.budget = budget
        self.precision = precision

    # -- fitting ---------------------------------------------------------------------------------------------
    def _resolved_strategy(self) -> str:
        if self.strategy not in FIT_STRATEGIES:
            raise HeadstartError(f"unknown strategy {self.strategy!r}; choose from {', '.join(FIT_STRATEGIES)}")
        if self.strategy == "auto" and not self.budget > 0:
            raise HeadstartError(f"budget is in seconds and must be positive, got {self.budget:g}")
        if self.precision not in (None, *PRECISIONS):
            raise HeadstartError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.finetune is not None and self.strategy in ("fine-tune", "scratch"):  # before any image is read
            replace(self.finetune, strategy=self.strategy).check()
        return "feature-extractor" if self.strategy == "auto" and self.layer is not None else self.strategy

    def fit(self, X: str | os.PathLike | Sequence[str | os.PathLike] | ImageSet, y: Sequence[Any] | None = None, *,
            after_images: int = 0, spent: float = 0.0) -> TransferClassifier:
        """Fit on a folder of class folders, an :class:`ImageSet`, or file paths ``X`` with labels ``y`` (one per
        image, or a label set per image: an indicator matrix or label lists).

        With ``strategy="auto"``, ``budget`` counts ``spent`` seconds already used (a command's start-up) and keeps
        time for scoring ``after_images`` images once fitted (validation), so that the whole run ends within it."""
        strategy = self._resolved_strategy()
        images = as_image_set(X, y)
        if images.multilabel:
            from .data.labelfile import check_training_targets

            if self.classifier != "logistic":
                raise HeadstartError("multi-label data is fitted with one logistic model per label; use "
                                     "classifier='logistic'")
            check_training_targets(images, "y")
        names = named_networks(self.model, strategy == "auto" and self.weights is None) or [str(self.model)]
        if len(names) > 1 and self.weights is not None:
            raise HeadstartError(f"several networks ({', '.join(names)}) each have their own pretrained weights; "
                                 "name one network with weights, or drop weights")
        if len(names) > 1 and strategy in ("fine-tune", "scratch"):
            raise HeadstartError(f"{strategy} trains one network, and {', '.join(names)} are several; name one (auto "
                                 "plans which network to fine-tune among several)")
        started = time.perf_counter()
        self.strategy_ = strategy
        self.precision_ = self.precision or "fp32"  # of the codes; auto may choose int8 for a large collection
        self._calibration, self._network = calibration_sample(images.paths), None  # int8: training images only
        first = names[0] if strategy == "auto" else ",".join(names)  # several for the feature extractor: joint
        self.backbone_ = create_backbone(first, "none" if strategy == "scratch" else self.weights,
                                         image_size=self.image_size, cache_dir=cache_folder(self.cache_dir))
        if strategy == "auto":
            from .auto.run import fit_auto

            fit_auto(self, images, started, names, after_images, spent)
        elif strategy == "feature-extractor":
            fit_codes(self, images, joint_layers(self.backbone_, parse_layers(self.layer or PENULTIMATE)), started)
        else:
            fit_network(self, images, started, self.finetune or FineTuneConfig())
        return self

    def _rebuild_backbone(self, image_size: int | None = None) -> None:
        self.backbone_ = create_backbone(self.backbone_.name, self.weights, image_size=image_size or self.image_size,
                                         cache_dir=cache_folder(self.cache_dir))

    def figures(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """The figures measured while decoding each usable file (cached: see :mod:`headstart.data.imagestats`)."""
        return FeatureExtractor(self.backbone_, [STATS], self.cache_dir, batch_size=self.batch_size,
                                progress=False).transform([Path(p) for p in paths]).codes

    def _code_layers(self) -> list[str]:
        """The head's layers, then the penultimate layer (familiarity's codes) if the head does not use it."""
        return self.layers_ + ([] if PENULTIMATE in self.layers_ else [PENULTIMATE])

    def _split(self, codes: Codes) -> tuple[np.ndarray, np.ndarray]:
        """(the head's columns, the penultimate columns) of codes from :meth:`_extractor`."""
        offsets = np.cumsum([0, *codes.widths])
        j = self._code_layers().index(PENULTIMATE)
        return codes.codes[:, :offsets[len(self.layers_)]], codes.codes[:, offsets[j]:offsets[j + 1]]

    def _extractor(self) -> FeatureExtractor:
        """The extractor for the fitted layers (rebuilt whenever the backbone or the layers change)."""
        also = getattr(self, "_also", None)
        network = getattr(self, "_network", None)
        calibration = getattr(self, "_calibration", None)
        key = (self.backbone_.digest, tuple(self._code_layers()), tuple(also or ()), self.precision_, network,
               tuple(calibration or ()))
        if getattr(self, "_extractor_key", None) != key:
            self._extractor_cache = FeatureExtractor(
                self.backbone_, self._code_layers(), self.cache_dir, self.engine, self.batch_size,
                progress=self.progress, also=also, precision=self.precision_,
                calibration=calibration, network=network)
            self._extractor_key = key
        return self._extractor_cache

    def quantized_network(self) -> Path | None:
        """The int8 ONNX network the codes come from (None in fp32): kept in the saved model."""
        return self._extractor().network() if self.precision_ == "int8" else None

    # -- predicting ------------------------------------------------------------------------------------------
    @property
    def multilabel_(self) -> bool:
        """Whether each image gets a set of labels (one sigmoid and threshold per label) rather than one class."""
        return getattr(getattr(self, "head_", None), "thresholds", None) is not None

    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise HeadstartError("this TransferClassifier is not fitted yet; call fit() or headstart.load()")

    def codes(self, paths: Sequence[str | os.PathLike]) -> Codes:
        """CNN codes of ``paths`` as this classifier's head reads them (cached)."""
        self._check_fitted()
        codes = self._extractor().transform([Path(p) for p in paths])
        if len(codes.kept):
            codes.codes = self._split(codes)[0]
        codes.widths = codes.widths[:len(self.layers_)]
        return codes

    def predict_files(self, paths: Sequence[str | os.PathLike]) -> Predictions:
        """(probabilities of the usable files, their indices in ``paths``, skipped (path, reason)), with
        ``.familiarity`` of the usable files (None for models saved before familiarity existed)."""
        self._check_fitted()
        codes = self._extractor().transform([Path(p) for p in paths])
        if not len(codes.kept):
            return Predictions(np.zeros((0, len(self.classes_))), codes.kept, codes.skipped, np.zeros(0, np.float32))
        head, penultimate = self._split(codes)
        return Predictions(self.head_.predict_proba(head), codes.kept, codes.skipped, self._familiarity(penultimate))

    def _familiarity(self, penultimate: np.ndarray) -> np.ndarray | None:
        familiarity = getattr(self, "familiarity_", None)
        return familiarity.score(penultimate) if familiarity is not None else None

    def _predict_items(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, familiarity), one row per image of ``X`` (NaN for unusable files)."""
        self._check_fitted()
        items = prediction_items(X)
        proba = np.full((len(items), len(self.classes_)), np.nan)
        familiarity = np.full(len(items), np.nan)
        files = [i for i, item in enumerate(items) if isinstance(item, Path)]
        if files:
            found = self.predict_files([items[i] for i in files])
            rows = np.asarray(files, np.int64)[found.kept]
            proba[rows] = found.proba
            if found.familiarity is not None:
                familiarity[rows] = found.familiarity
        images = [i for i, item in enumerate(items) if not isinstance(item, Path)]
        if images:
            batch = np.stack([self.backbone_.preprocess(rgb_from_memory(items[i])) for i in images])
            head, penultimate = self._split(self._extractor().transform_arrays(batch))  # Codes of all layers
            proba[images] = self.head_.predict_proba(head)
            score = self._familiarity(penultimate)
            if score is not None:
                familiarity[images] = score
        return proba, familiarity

    def score_samples(self, X: Any) -> np.ndarray:
        """Familiarity of each image (as scikit-learn's outlier detectors name it: higher is more like the training
        images); below ``familiarity_.threshold`` it is unfamiliar. NaN for unusable files."""
        return self._predict_items(X)[1]

    def familiarity(self, X: Any) -> np.ndarray:
        """Alias of :meth:`score_samples`."""
        return self.score_samples(X)

    def unfamiliar(self, X: Any) -> np.ndarray:
        """True for images unlike anything the classifier was trained on (about 5% of images like the training
        ones are flagged too)."""
        score = self.score_samples(X)
        return np.where(np.isnan(score), False, score < self.familiarity_.threshold)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, one row per image, columns in ``classes_`` order; NaN rows for unusable files.

        ``X``: a path, a folder (its images in sorted order), a Pillow image, an H x W x 3 uint8 array, an N x H x W x 3
        batch, or a list of any of these.
        """
        return self._predict_items(X)[0]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class names, one per image as in :meth:`predict_proba` (None for unusable files).

        Multi-label: the 0/1 label matrix (columns in ``classes_`` order; all zero for unusable files)."""
        proba = self.predict_proba(X)
        if self.multilabel_:
            return self.head_.decide(proba)
        names = np.asarray(self.classes_, dtype=object)
        return np.where(np.isnan(proba).any(1), None, names[np.nan_to_num(proba).argmax(1)])

    def evaluate(self, X: str | os.PathLike | Sequence[str | os.PathLike] | ImageSet,
                 y: Sequence[Any] | None = None) -> dict[str, Any]:
        """Metrics on labelled images (a folder of class folders, or paths and labels)."""
        self._check_fitted()
        images = as_image_set(X, y, self.classes_)
        familiarity = getattr(self, "familiarity_", None)
        return evaluation(self.predict_files(images.paths), images, self.classes_,
                          self.head_.decide if self.multilabel_ else None,
                          familiarity.info() if familiarity is not None else None)

    def score(self, X: str | os.PathLike | Sequence[str | os.PathLike] | ImageSet,  # type: ignore[override]
              y: Sequence[Any] | None = None, sample_weight: Any = None) -> float:
        """Accuracy on the usable labelled images (weighted by ``sample_weight``, one per image of ``X``, if given);
        multi-label: subset accuracy (every label of an image right), as scikit-learn's ``accuracy_score``."""
        if sample_weight is None:
            return self.evaluate(X, y)["accuracy"]
        images = as_image_set(X, y, self.classes_)
        found = self.predict_files(images.paths)
        weight = np.asarray(sample_weight, np.float64)[found.kept]
        if self.multilabel_:
            correct = (self.head_.decide(found.proba) == images.targets[found.kept]).all(1)
        else:
            correct = found.proba.argmax(1) == images.labels[found.kept]
        return float((weight * correct).sum() / max(weight.sum(), 1e-12))

    def save(self, path: str | os.PathLike, overwrite: bool = False, extra: dict[str, Any] | None = None,
             files: dict[str, Path] | None = None) -> Path:
        """Write the model folder (safetensors + config.json) atomically; see :func:`headstart.load`."""
        self._check_fitted()
        return save(self, Path(path), overwrite=overwrite, extra=extra, files=files)


def load(path: str | os.PathLike, cache_dir: str | Path | None | bool = None, engine: str = "auto",
         progress: bool = False) -> TransferClassifier:
    """Rebuild the fitted TransferClassifier saved in ``path``; its predictions equal those before saving."""
    saved = read_model(path)
    config = saved.config
    params = {k: v for k, v in config.get("params", {}).items() if k in TransferClassifier._get_param_names()}
    if isinstance(params.get("finetune"), dict):
        params["finetune"] = FineTuneConfig(**params["finetune"])
    params.setdefault("layer", config["layers"])  # models saved before every parameter was kept
    params.setdefault("strategy", config["strategy"])
    params.setdefault("model", config["model"])  # as given (None: auto chose ``config["model"]``, the one saved)
    clf = TransferClassifier(**{**params, "cache_dir": cache_dir, "engine": engine, "progress": progress})
    clf.precision_ = config.get("precision", clf.precision or "fp32")
    if clf.precision_ == "int8" and engine == "torch":
        raise ArtifactError(f"{str(saved.path)!r} is an int8 model, which runs on ONNX Runtime; drop --engine torch")
    clf._calibration = [Path(p) for p in config.get("calibration") or []] or None
    clf._network = saved.int8_network
    clf.backbone_, clf.layers_, clf.classes_ = saved.backbone, list(config["layers"]), list(config["class_names"])
    clf.strategy_, clf.head_ = config["strategy"], saved.head
    if saved.familiarity is not None:
        clf.familiarity_ = saved.familiarity
    clf.config_, clf.path_ = config, saved.path
    return clf



class CNNCodes(TransformerEstimator):
    """CNN codes of images as a scikit-learn transformer, for any scikit-learn classifier after it.

    >>> make_pipeline(CNNCodes(layer="blocks.5"), LogisticRegression()).fit(paths, labels)

    ``X``: image paths, a folder, Pillow images or uint8 arrays (as :meth:`TransferClassifier.predict`). Codes are
    cached on disk like the classifier's; an unusable image is an error here, since a transformer owes one row per
    sample.
    """

    def __init__(self, model: str = DEFAULT_MODEL, weights: str | None = None, layer: str | Sequence[str] = PENULTIMATE,
                 image_size: int | None = None, cache_dir: str | Path | None | bool = None, engine: str = "auto",
                 batch_size: int | None = None, progress: bool = False):
        self.model = model
        self.weights = weights
        self.layer = layer
        self.image_size = image_size
        self.cache_dir = cache_dir
        self.engine = engine
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X: Any = None, y: Any = None) -> CNNCodes:
        """Build the network (nothing is learned from ``X``: the codes come from pretrained weights)."""
        self.layers_ = parse_layers(self.layer)
        self.backbone_ = create_backbone(self.model, self.weights, image_size=self.image_size,
                                         cache_dir=cache_folder(self.cache_dir))
        self.extractor_ = FeatureExtractor(self.backbone_, self.layers_, self.cache_dir, self.engine, self.batch_size,
                                           progress=self.progress)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """One row of codes per image, the tapped layers side by side."""
        if not hasattr(self, "extractor_"):
            self.fit()
        items = prediction_items(X)
        rows: list[np.ndarray | None] = [None] * len(items)
        files = [i for i, item in enumerate(items) if isinstance(item, Path)]
        if files:
            codes = self.extractor_.transform([items[i] for i in files])
            if codes.skipped:
                path, reason = codes.skipped[0]
                raise DataError(f"{len(codes.skipped)} image(s) cannot be used, e.g. {path!r}: {reason}; "
                                "remove them before transforming")
            for i, row in zip(files, codes.codes):
                rows[i] = row
        images = [i for i, item in enumerate(items) if not isinstance(item, Path)]
        if images:
            batch = np.stack([self.backbone_.preprocess(rgb_from_memory(items[i])) for i in images])
            for i, row in zip(images, self.extractor_.transform_arrays(batch).codes):
                rows[i] = row
        return np.stack(rows)
