"""The typed shapes of what crosses modules: fit info, auto's evidence, skipped files, a fit's result.

They are ``TypedDict``s: plain JSON-ready dicts at run time (what `--json`, ``config.json`` and existing code read
by key), with their keys and types declared for readers and type checkers. Importable without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import numpy as np


class SkippedFile(TypedDict):
    """An image that could not be used, and why."""

    path: str
    reason: str


class Seconds(TypedDict, total=False):
    """Where a fit's time went; which keys appear depends on the strategy."""

    load_model: float
    codes: float
    classifier: float
    familiarity: float
    train: float
    decide: float  # auto: measuring and deciding
    measure: float  # auto: the one pass over the training images
    total: float  # the fit alone
    validation: float  # fit_folder: scoring the validation images
    leak_check: float  # fit_folder: validation images that repeat a training image
    save: float  # fit_folder: writing the model folder
    report: float  # fit_folder: the HTML report
    startup: float  # `headstart fit`: from the command's start to the fit's (imports, checks, finding the images)
    command: float  # `headstart fit`: the whole command


class TrainingInfo(TypedDict):
    """One fine-tuning (or from-scratch) run on Lightning."""

    epochs_run: int
    best_monitor_acc: float
    monitor_images: int
    trainable_prefixes: list[str]
    is_global_zero: bool
    world_size: int
    resumed_from_epoch: int | None
    config: dict[str, Any]  # the FineTuneConfig, as saved for --resume
    skipped_during_training: list[SkippedFile]
    epochs: list[dict[str, float]]  # per epoch run in this process: train_s, images, images_per_s
    image_cache: dict[str, Any]  # loader; memory: side (px), bytes, where ("memory" or its file), seconds;
    # activations: also activation_views, from_block, activation_bytes, activation_where, activation_seconds


class FitInfo(TypedDict, total=False):
    """``TransferClassifier.fit_info_``: what the fit saw and did (``training`` only when a network trained)."""

    n_train_images: int
    n_skipped: int
    skipped: list[SkippedFile]
    n_codes_computed: int
    codes_dim: int
    classifier: dict[str, Any]  # the linear head's search: C, folds, scores
    seconds: Seconds
    training: TrainingInfo


class AutoEvidence(TypedDict, total=False):
    """``TransferClassifier.auto_``: what ``strategy="auto"`` measured, decided and checked."""

    advice: dict[str, Any]  # Advice.to_dict(): size, similarity, layer scores and choice, recommendation
    budget_s: float
    decision: str  # one sentence, updated when the check overrules the plan
    probe: dict[str, Any]  # the linear probe fine-tuning must beat: layer, cv_accuracy
    fine_tune_epoch_s: float  # one epoch with the unfrozen blocks training, its monitor pass included
    fine_tune_cost: dict[str, Any]  # finetune.TrainingCost: the timed parts
    fine_tune_predicted_s: float  # the planned run, decoding and head-only epochs included
    plans_tried: list[dict[str, Any]]  # each fine-tuning plan timed: unfreeze, loader, epoch_s, epochs_affordable, ...
    epochs_advised: int
    epochs_affordable: int
    check: dict[str, Any]  # fine-tuned held-out accuracy against the probe's, and whether it was kept
    network: dict[str, Any]  # several networks (by default Lite0 and Lite2): their scores, the rule, the chosen one
    precision: dict[str, Any]  # a probe on a sampled large collection: fp32 or int8 codes, measured, and why
    strategy: str
    options: dict[str, Any]
    seconds: float


class DataSummary(TypedDict, total=False):
    """The data a fit used."""

    path: str
    split: str  # how the validation images were found
    class_names: list[str]  # multi-label: the label names
    train_counts: dict[str, int]  # multi-label: images carrying each label
    val_counts: dict[str, int] | None
    imbalance_ratio: float
    multilabel: bool  # present (True) when each image carries a set of labels
    train_images_without_label: int  # multi-label: training images that carry none of the labels
    notes: list[str]  # e.g. images in the folder that no row of the label CSV names (left out)


class FitResult(TypedDict, total=False):
    """What ``headstart fit --json`` prints: the model, the data, validation metrics and the fit info's keys."""

    out: str
    model: str
    weights: str
    precision: str
    strategy: str
    layers: list[str]
    classifier: str
    C: float | None
    data: DataSummary
    validation: dict[str, Any] | None  # classification_metrics on the validation images
    classifier_search: dict[str, Any]
    auto: AutoEvidence
    report: str
    leaks: dict[str, Any]  # auditing.leakcheck.check_leaks: validation images that repeat a training image
    excluded: dict[str, int]  # images left out by --exclude, per split
    relabelled: dict[str, int]  # labels changed by --relabel, per split (the files stay where they are)
    # and every key of FitInfo but "classifier"
    n_train_images: int
    n_skipped: int
    skipped: list[SkippedFile]
    n_codes_computed: int
    codes_dim: int
    seconds: Seconds
    training: TrainingInfo


class Predictions(tuple):
    """``(proba, kept, skipped)`` for a list of files, unpacking as that triple, with ``familiarity`` of the usable
    files as an attribute (None where the model has no familiarity)."""

    def __new__(cls, proba: np.ndarray, kept: np.ndarray, skipped: list[tuple[str, str]],
                familiarity: np.ndarray | None = None) -> Predictions:
        self = super().__new__(cls, (proba, kept, skipped))
        self.familiarity = familiarity
        return self

    @property
    def proba(self) -> np.ndarray:
        """Class probabilities of the usable files."""
        return self[0]

    @property
    def kept(self) -> np.ndarray:
        """Indices of the usable files among those given."""
        return self[1]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of each unusable file."""
        return self[2]
