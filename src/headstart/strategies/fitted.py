"""What a strategy fitted, returned to the estimator, whose ``fit`` alone assigns the fitted attributes (as
scikit-learn's ``LogisticRegression.fit`` sets ``coef_`` from what its path function returns), and what a strategy
reads of the estimator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..codes.backbones import PENULTIMATE

if TYPE_CHECKING:
    from ..codes.backbones import Backbone
    from ..codes.extract import FeatureExtractor
    from ..results import AutoEvidence, FitInfo


@dataclass
class Fitted:
    """A fitted model's parts: the network it holds (fine-tuned, or as built), the strategy, the head's layers and
    classes, the head and familiarity, what fitting took (``info``), the layers its extraction computes alongside,
    the codes' precision, auto's evidence, and the extractor that computed the training codes (reused)."""

    backbone: Backbone
    strategy: str
    layers: list[str]
    classes: list[str]
    head: Any
    familiarity: Any
    info: FitInfo
    also: list[str] = field(default_factory=list)
    precision: str = "fp32"
    auto: AutoEvidence | None = None
    extractor: FeatureExtractor | None = field(default=None, repr=False)


class Settings(Protocol):
    """The estimator's parameters a strategy reads (a TransferClassifier), and the extractor it builds with them."""

    classifier: str
    C: float | None
    seed: int
    cache_dir: Any
    engine: str
    batch_size: int | None
    progress: bool
    weights: str | None
    image_size: int | None
    workdir: Any
    resume: bool
    finetune: Any
    budget: float
    precision: str | None

    def extractor_for(self, backbone: Backbone, layers: list[str], precision: str = "fp32",
                      also: list[str] | None = None) -> FeatureExtractor: ...


def code_layers(layers: list[str]) -> list[str]:
    """The head's layers, then the penultimate layer (familiarity's codes) if the head does not use it."""
    return layers + ([] if PENULTIMATE in layers else [PENULTIMATE])
