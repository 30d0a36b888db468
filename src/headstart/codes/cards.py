"""Backbone cards: what a built network says of itself (digest, preprocessing, layers, weights, ImageNet head), kept
in the cache so that a warm run never imports timm nor builds the network unless it must run it.

A card belongs to one weights file (embedded package or the user's file; by path, size and mtime), one network name,
one --image-size and the installed timm and torch. Hub and random weights get no card. ``card.json`` is written last:
a card without it is incomplete and ignored; a weights file that no longer matches its recorded SHA-256 is never
copied into a model folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.decode import Preprocess
from ..disk import file_identity, key_of, write_cache
from ..errors import ModelError
from .backbones import EMBEDDED, Backbone, build_backbone, embedded_weights_path

if TYPE_CHECKING:
    from torch import nn

CARD = "card.json"
STATE = "state.safetensors"
HEAD = "head.safetensors"


@dataclass
class Card:
    """The card folder of one network and weights source (it may not exist yet)."""

    name: str
    weights: str | Path | None
    image_size: int | None
    folder: Path

    @classmethod
    def of(cls, name: str, weights: str | Path | None, image_size: int | None, cache_dir: Path | None
           ) -> Card | None:
        """The card for these arguments, or None when they get none (no cache, hub or random weights)."""
        if cache_dir is None or weights in ("hub", "none"):
            return None
        if weights in (None, "embedded"):
            if name not in EMBEDDED:
                return None
            source = embedded_weights_path(name)
        else:
            source = Path(weights).expanduser()
        identity = file_identity(source) if source is not None else None
        if identity is None:
            return None
        key = key_of({"name": name, "weights": identity, "image_size": image_size, "torch": metadata.version("torch"),
                      "timm": metadata.version("timm"), "v": 1})
        return cls(name, weights, image_size, Path(cache_dir) / "backbones" / f"{name}-{key}")

    def backbone(self) -> Backbone | None:
        """The backbone this card describes (its network built on first use), or None when the card is missing or
        incomplete."""
        try:
            about = json.loads((self.folder / CARD).read_text())
            self.layers, self.pretrained_input = list(about["layers"]), int(about["pretrained_input"])
            self.parameters, self.has_head, self.sha256 = about["parameters"], about["has_head"], about["sha256"]
            preprocess = Preprocess.from_dict(about["preprocess"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return Backbone(self.name, None, about["weights"], about["digest"], preprocess, card=self)

    def build(self, digest: str) -> tuple[nn.Module, nn.Module | None]:
        """(network, ImageNet head) built with timm now, checked against the card's digest."""
        built = build_backbone(self.name, self.weights, image_size=self.image_size)
        if built.digest != digest:
            raise ModelError(f"the cached card {str(self.folder)!r} does not match its weights; delete that folder "
                             "and run again")
        return built.model, built.pretrained_head

    def pretrained_head(self) -> nn.Module | None:
        """The ImageNet classifier, from the card."""
        if not self.has_head:
            return None
        import torch
        from safetensors.torch import load_file

        tensors = load_file(str(self.folder / HEAD))
        head = torch.nn.Linear(tensors["weight"].shape[1], tensors["weight"].shape[0])
        with torch.no_grad():
            head.weight.copy_(tensors["weight"])
            head.bias.copy_(tensors["bias"])
        return head

    def state_file(self) -> Path | None:
        """The network's weights as safetensors (what a model folder's backbone.safetensors holds), if the file is
        still the one the card recorded (same SHA-256), else None."""
        from ..disk import file_sha256

        path = self.folder / STATE
        try:
            return path if file_sha256(path) == self.sha256 else None
        except OSError:
            return None

    def write(self, backbone: Backbone) -> None:
        """Keep what ``backbone`` (just built) says of itself; a cache that cannot be written is said once."""
        from safetensors.torch import save

        model, head = backbone.model, backbone.pretrained_head
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        data = save(state)
        if not write_cache(self.folder / STATE, data):
            return
        if head is not None and not write_cache(self.folder / HEAD, save({"weight": head.weight.detach(),
                                                                          "bias": head.bias.detach()})):
            return
        about = {"name": backbone.name, "weights": backbone.weights, "digest": backbone.digest,
                 "preprocess": backbone.preprocess.to_dict(), "layers": backbone.layers(),
                 "pretrained_input": backbone.pretrained_input, "has_head": head is not None,
                 "parameters": sum(v.numel() for v in state.values()), "features": model.num_features,
                 "sha256": hashlib.sha256(data).hexdigest()}
        write_cache(self.folder / CARD, json.dumps(about, indent=1).encode())
