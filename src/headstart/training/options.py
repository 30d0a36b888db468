"""Fine-tuning options: one dataclass, saved with a run for --resume, checkable before torch is imported."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import HeadstartError

LOADERS = ("memory", "stream", "activations")
HEAD_INITS = ("random", "probe")


@dataclass
class FineTuneConfig:
    """Everything that defines a fine-tuning run; saved as run.json so ``--resume`` finishes the same run."""

    strategy: str = "fine-tune"  # or "scratch"
    unfreeze: str = "2"  # top N blocks, or "all"
    epochs: int = 5
    probe_epochs: int = 1  # epochs training only the new head before unfreezing
    head_init: str = "random"  # or "probe": the new head starts as a linear probe on the codes (LP-FT)
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    batch_size: int = 32
    augment: bool = True
    class_weight: str | None = None  # "balanced"
    patience: int = 3
    max_seconds: float | None = None  # stop training after this long (auto's budget); the best checkpoint is kept
    monitor_fraction: float = 0.1  # of train, held out for early stopping (the val split stays unseen)
    seed: int = 0
    workers: int = 2  # decoding threads (memory loader) or loader processes (stream loader)
    #: "memory": images decoded once, augmented per batch; "stream": decoded in every epoch; "activations": the
    #: frozen lower blocks run once per augmented view (--unfreeze N only)
    loader: str = "memory"
    views: int = 2  # activations loader: augmented views of each training image whose activations are cached
    devices: str = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"
    distributed: str = "auto"  # Lightning strategy: ddp, fsdp, ... (not the spawning ones)
    logger: list[str] = field(default_factory=list)  # tensorboard, mlflow
    verbose: bool = False  # Lightning's banners, tips and warnings

    def check(self) -> None:
        """One-line errors for values no training can use."""
        for name, value, low in (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1),
                                 ("--probe-epochs", self.probe_epochs, 0), ("--workers", self.workers, 0),
                                 ("--patience", self.patience, 1), ("--views", self.views, 1)):
            if value < low:
                raise HeadstartError(f"{name} must be at least {low}, got {value}")
        if not self.lr > 0 or not self.backbone_lr_mult >= 0:
            raise HeadstartError("--lr must be positive and --backbone-lr-mult not negative")
        check_distributed(self.distributed)
        if self.head_init not in HEAD_INITS:
            raise HeadstartError(f"--head-init takes {', '.join(HEAD_INITS)}, not {self.head_init!r}")
        if self.loader not in LOADERS:
            raise HeadstartError(f"--loader takes {', '.join(LOADERS)}, not {self.loader!r}")
        if self.loader == "activations" and self.unfreeze_blocks() is None:
            raise HeadstartError("--loader activations trains the top blocks from the frozen ones' cached output: "
                                 "give --unfreeze a number of blocks (not 'all', not --strategy scratch)")
        if self.loader == "activations" and not self.augment:
            raise HeadstartError("--loader activations caches augmented views; drop --no-augment or use "
                                 "--loader memory")
        self.unfreeze_blocks()

    def unfreeze_blocks(self) -> int | None:
        """Number of top blocks to train (None: all of them)."""
        if self.strategy == "scratch" or str(self.unfreeze) == "all":
            return None
        try:
            n = int(self.unfreeze)
        except ValueError:
            raise HeadstartError(f"--unfreeze takes a number of top blocks or 'all', not {self.unfreeze!r}") from None
        if n < 0:
            raise HeadstartError("--unfreeze must be 0 or more")
        return n


def check_distributed(strategy: str) -> None:
    """Lightning strategies that start their processes by spawning are refused: the trained weights and the
    trainer's state (epochs run, best checkpoint) stay in the spawned processes. ``ddp`` runs the same training."""
    if "spawn" in str(strategy) or "notebook" in str(strategy):
        raise HeadstartError(f"--distributed {strategy} is not supported (its processes keep the training state); "
                             "use --distributed ddp")


def parse_layers(layer: str | Sequence[str]) -> list[str]:
    """``"blocks.5+penultimate"`` or a list: the layers whose codes are concatenated."""
    layers = layer.split("+") if isinstance(layer, str) else list(layer)
    layers = [name.strip() for name in layers if name.strip()]
    if not layers:
        raise HeadstartError("--layer is empty; give a layer name such as 'penultimate' (see `headstart summary`)")
    return layers
