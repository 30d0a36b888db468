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
from .codes.backbones import PENULTIMATE, Backbone
from .codes.create import create_backbone
from .codes.extract import Codes, FeatureExtractor
from .codes.joint import joint_layers, named_networks
from .codes.quantize import calibration_sample
from .data.decode import rgb_from_memory
from .data.folders import ImageSet
from .data.imagestats import STATS
from .data.inputs import as_image_set, images_folder, prediction_items
from .defaults import DEFAULT_BUDGET, FIT_STRATEGIES, PRECISIONS
from .disk import cache_folder
from .errors import ArtifactError, HeadstartError
from .report.metrics import evaluation
from .results import Predictions
from .sklearn_contract import ClassifierEstimator
from .strategies.feature_extractor import fit_codes
from .strategies.fitted import Fitted, code_layers
from .strategies.network import fit_network
from .training.options import FineTuneConfig, parse_layers


class TransferClassifier(ClassifierEstimator):
    """An image classifier built on pretrained timm networks, with scikit-learn's estimator contract.

    ``fit`` takes a folder of class folders, or images with labels (paths, Pillow images, uint8 arrays);
    ``predict``, ``predict_proba``, ``score`` and ``evaluate`` take the same. ``clone``, ``GridSearchCV``,
    ``cross_val_score`` and ``Pipeline`` work with it.

    Parameters
    ----------
    model : str, optional
        A timm name, or several joined by commas (cheapest first): measured together, their probes' logits
        averaged. None: with ``strategy="auto"`` (no ``weights``, no ``layer``) EfficientNet-Lite0 and -Lite2,
        otherwise ``DEFAULT_MODEL``.
    weights : str, optional
        "embedded", "hub", "none" (random) or a safetensors / PyTorch state-dict file; None: embedded, else the hub.
    strategy : {"feature-extractor", "fine-tune", "scratch", "auto"}
        The frozen network's codes under a linear head; a new head trained with the top ``finetune.unfreeze``
        blocks (or all) on Lightning; the whole network from random weights; or measure the data and decide
        within ``budget`` seconds (``auto_`` holds the evidence; a ``layer`` given with auto means the feature
        extractor).
    layer : str or list of str, optional
        The codes' layer: "penultimate" (default), an earlier block such as "blocks.5", several joined by "+"; with
        several networks, a plain name means that layer of each, "network:layer" one network's.
    classifier : {"logistic", "svm"}
        Softmax regression or a linear SVM (calibrated) on standardised codes.
    C : float, optional
        The inverse regularisation; None: chosen by 5-fold cross-validated log loss on the training images.
    cache_dir : str, Path, None or False
        Where codes are cached (None: ``$HEADSTART_CACHE_DIR`` or ``~/.cache/headstart``; False: nowhere).
    engine : {"auto", "onnx", "torch"}
        The frozen network's runtime: ONNX Runtime on a CPU, PyTorch on CUDA by default.
    batch_size : int, optional
        Images per batch through the network (and for fine-tuning, in ``finetune``).
    seed : int
        Seeds the folds, the held-out splits and training.
    progress : bool
        Progress lines and bars on stderr.
    image_size : int, optional
        Another input resolution than the pretrained one.
    finetune : FineTuneConfig, optional
        Fine-tuning options (``strategy="fine-tune"``/``"scratch"``, and what auto keeps of them).
    workdir : str or Path, optional
        Where a network trains (checkpoints, logs); ``resume=True`` continues an interrupted run there.
    resume : bool
        Continue the training interrupted in ``workdir``.
    budget : float
        Seconds ``strategy="auto"`` may spend on deciding and training (600).
    precision : {"fp32", "int8"}, optional
        The codes' precision: int8 runs the network quantised by ONNX Runtime (calibrated on training images).
        None: fp32, or int8 where auto measures it worth it on a large collection.

    Attributes
    ----------
    classes_ : list of str
        The class (or label) names, in the order of ``predict_proba``'s columns.
    backbone_ : Backbone
        The network the model holds (a joint backbone for several; fine-tuned after fine-tuning).
    strategy_ : str
        The strategy used ("feature-extractor", "fine-tune" or "scratch").
    layers_ : list of str
        The layers whose codes the head reads.
    head_ : LinearHead
        The linear head on the codes (a SigmoidHead with a threshold per label for multi-label data).
    precision_ : str
        The codes' precision used.
    familiarity_ : Familiarity
        How like the training images an image is (``score_samples``, ``unfamiliar``).
    auto_ : dict
        With ``strategy="auto"``: what was measured, weighed and decided, and why.
    fit_info_ : dict
        What fitting took: images, skipped files, codes computed, seconds.

    Examples
    --------
    >>> clf = TransferClassifier(strategy="auto").fit("data/train")   # doctest: +SKIP
    >>> clf.predict(["photo.jpg"]), clf.score("data/val")             # doctest: +SKIP
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

    def fit(self, X: Any, y: Sequence[Any] | None = None, *, after_images: int = 0, spent: float = 0.0
            ) -> TransferClassifier:
        """Fit on a folder of class folders, an :class:`ImageSet`, or images ``X`` with labels ``y`` (one per image,
        or a label set per image: an indicator matrix or label lists): file paths, Pillow images, uint8 arrays (H x
        W, H x W x 3) or a batch (N x H x W x 3, as ``keras.datasets`` gives it). In-memory images are kept as PNG
        files named by their pixels' digest in the cache, so their codes are cached as any file's.

        With ``strategy="auto"``, ``budget`` counts ``spent`` seconds already used (a command's start-up) and keeps
        time for scoring ``after_images`` images once fitted (validation), so that the whole run ends within it."""
        strategy = self._resolved_strategy()
        images = as_image_set(X, y, memory=images_folder(cache_folder(self.cache_dir)))
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
        precision = self.precision or "fp32"  # of the codes; auto may choose int8 for a large collection
        self._calibration, self._network = calibration_sample(images.paths), None  # int8: training images only
        first = names[0] if strategy == "auto" else ",".join(names)  # several for the feature extractor: joint
        backbone = create_backbone(first, "none" if strategy == "scratch" else self.weights,
                                   image_size=self.image_size, cache_dir=cache_folder(self.cache_dir))
        if strategy == "auto":
            from .auto.run import fit_auto

            fitted = fit_auto(self, images, backbone, started, names, after_images, spent, precision)
        elif strategy == "feature-extractor":
            layers = joint_layers(backbone, parse_layers(self.layer or PENULTIMATE))
            fitted = fit_codes(self, images, backbone, layers, started, precision)
        else:
            fitted = fit_network(self, images, backbone, started,
                                 replace(self.finetune or FineTuneConfig(), strategy=strategy))
        self._assign(fitted)
        return self

    def _assign(self, fitted: Fitted) -> None:
        """The fitted attributes, from what the strategy fitted (the only place they are set)."""
        self.backbone_, self.strategy_, self.layers_ = fitted.backbone, fitted.strategy, fitted.layers
        self.classes_, self.head_, self.familiarity_ = fitted.classes, fitted.head, fitted.familiarity
        self.fit_info_, self.precision_, self._also = fitted.info, fitted.precision, fitted.also
        if fitted.auto is not None:
            self.auto_ = fitted.auto
        elif hasattr(self, "auto_"):
            del self.auto_  # a refit without auto: no stale evidence
        if fitted.extractor is not None:  # the one that computed the training codes: validation reuses it
            self._extractor_cache, self._extractor_key = fitted.extractor, self._extractor_state()

    def extractor_for(self, backbone: Backbone, layers: list[str], precision: str = "fp32",
                      also: list[str] | None = None) -> FeatureExtractor:
        """A FeatureExtractor of ``backbone``'s ``layers`` with this estimator's settings (engine, batch size,
        cache; for int8, the network quantised on the training images)."""
        return FeatureExtractor(backbone, layers, self.cache_dir, self.engine, self.batch_size, progress=self.progress,
                                also=also, precision=precision, calibration=getattr(self, "_calibration", None),
                                network=getattr(self, "_network", None) if precision == "int8" else None)

    def figures(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """The figures measured while decoding each usable file (cached: see :mod:`headstart.data.imagestats`)."""
        return FeatureExtractor(self.backbone_, [STATS], self.cache_dir, batch_size=self.batch_size,
                                progress=False).transform([Path(p) for p in paths]).codes

    def _code_layers(self) -> list[str]:
        """The head's layers, then the penultimate layer (familiarity's codes) if the head does not use it."""
        return code_layers(self.layers_)

    def _split(self, codes: Codes) -> tuple[np.ndarray, np.ndarray]:
        """(the head's columns, the penultimate columns) of codes from :meth:`_extractor`."""
        offsets = np.cumsum([0, *codes.widths])
        j = self._code_layers().index(PENULTIMATE)
        return codes.codes[:, :offsets[len(self.layers_)]], codes.codes[:, offsets[j]:offsets[j + 1]]

    def _extractor_state(self) -> tuple:
        return (self.backbone_.digest, tuple(self._code_layers()), tuple(getattr(self, "_also", None) or ()),
                self.precision_, getattr(self, "_network", None), tuple(getattr(self, "_calibration", None) or ()))

    def _extractor(self) -> FeatureExtractor:
        """The extractor for the fitted layers (rebuilt whenever the backbone or the layers change)."""
        key = self._extractor_state()
        if getattr(self, "_extractor_key", None) != key:
            self._extractor_cache = self.extractor_for(self.backbone_, self._code_layers(), self.precision_,
                                                       getattr(self, "_also", None))
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
        images = as_image_set(X, y, self.classes_, images_folder(cache_folder(self.cache_dir)))
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
        images = as_image_set(X, y, self.classes_, images_folder(cache_folder(self.cache_dir)))
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
