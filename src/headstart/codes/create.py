"""Building a backbone from its name: one timm network (from its cached card, or with timm), several joined by
commas (a joint backbone), or a saved model's (from its state dict, without any download)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..data.decode import Preprocess
from ..defaults import DEFAULT_MODEL
from .backbones import Backbone, build_backbone, restore_network
from .cards import Card
from .joint import JOINER, JointBackbone, network_names

if TYPE_CHECKING:
    import torch


def create_backbone(name: str = DEFAULT_MODEL, weights: str | Path | None = None, keep_classifier: bool = False,
                    image_size: int | None = None, cache_dir: Path | None = None) -> Backbone:
    """Build ``name`` with pretrained weights and its classifier removed (unless ``keep_classifier``).

    ``weights``: None for the best available source (embedded, then the hub), "none" for random
    initialisation, "hub", "embedded", or a path to a safetensors / PyTorch state-dict file. With ``cache_dir``,
    embedded or file weights seen before come back from their card (:mod:`headstart.codes.cards`) without timm: the
    network is built when first needed.
    """
    if JOINER in name:  # several networks run as one: each built (or read from its card) on its own
        return JointBackbone([create_backbone(part, weights, keep_classifier, image_size, cache_dir)
                              for part in network_names(name)])
    card = None if keep_classifier else Card.of(name, weights, image_size, cache_dir)
    known = card.backbone() if card is not None else None
    if known is not None:
        return known
    backbone = build_backbone(name, weights, keep_classifier, image_size)
    if card is not None:
        card.write(backbone)
    return backbone


def restore_backbone(name: str, state: dict[str, torch.Tensor], preprocess: Preprocess, origin: str) -> Backbone:
    """Rebuild a saved backbone (classifier removed) from its state dict, without any download."""
    if JOINER in name:  # a joint backbone: each member's weights under its ``members.i.`` prefix
        import timm

        names, origins = network_names(name), origin.split(" + ")
        members = []
        for i, part in enumerate(names):
            prefix = f"members.{i}."
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            config = timm.data.resolve_data_config({}, model=timm.create_model(part, pretrained=False))
            origin_i = origins[min(i, len(origins) - 1)]
            members.append(restore_network(part, own, Preprocess.from_timm(config), origin_i))
        joint = JointBackbone(members)
        joint.preprocess = preprocess
        return joint
    return restore_network(name, state, preprocess, origin)
