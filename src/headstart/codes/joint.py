"""Several pretrained networks run as one (``--model a,b``): the same decoded images in, each network normalising
them its own way and tapped at its own layers. Their codes are named ``network:layer``; ``penultimate`` alone is the
last network's (named last: the strongest), which familiarity, the leak check and the audit read as with one network.

The images are decoded once, at the preprocessing of the network with the largest input (Lite2's 260 px for Lite0 and
Lite2), and every network sees that same input: convolutional networks pool whatever size they are given, and one
input keeps one ONNX file, one cache entry per image and one decoding for the whole model. torch-free: the networks
themselves are built only when something runs them.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ..defaults import AUTO_MODELS, DEFAULT_MODEL
from ..errors import ModelError
from .backbones import PENULTIMATE, Backbone, candidate_layers, embedded_weights_path

if TYPE_CHECKING:
    import torch
    from torch import nn

SEPARATOR = ":"
JOINER = ","  # between network names: ``--model tf_efficientnet_lite0,tf_efficientnet_lite2``


def qualified(network: str, layer: str) -> str:
    """The name of ``network``'s ``layer`` in a joint backbone's codes."""
    return f"{network}{SEPARATOR}{layer}"


class JointBackbone(Backbone):
    """Backbones run together on one input (see the module's docstring); ``members`` in the order they were named."""

    def __init__(self, members: list[Backbone]):
        if len(members) < 2:
            raise ModelError("a joint backbone needs two networks or more")
        names = [m.name for m in members]
        if len(set(names)) < len(names):
            raise ModelError(f"{JOINER.join(names)} names a network twice; name each once")
        preprocess = max((m.preprocess for m in members), key=lambda p: p.input_size[0] * p.input_size[1])
        digest = hashlib.sha256("\n".join(f"{m.name}={m.digest}" for m in members).encode()).hexdigest()
        super().__init__(JOINER.join(names), None, " + ".join(m.weights for m in members), digest, preprocess)
        self.members = members

    @property
    def model(self) -> nn.Module:
        """Every member's network in one module (``members.0``, ``members.1``, ...), built on first use."""
        if self._model is None:
            from .codesnet import JointNet

            self._model = JointNet([m.model for m in self.members])
        return self._model

    @property
    def pretrained_head(self) -> nn.Module | None:
        """The last member's ImageNet classifier (its penultimate codes are ``penultimate``)."""
        return self.members[-1].pretrained_head

    @property
    def pretrained_input(self) -> int:
        """The largest input side the members' weights were trained at (not a user's --image-size)."""
        return max(m.pretrained_input for m in self.members)

    @property
    def parameters(self) -> int:
        """Parameters of every member (from their cards, without building them)."""
        return sum(m.card.parameters if not m.built and m.card is not None else
                   sum(p.numel() for p in m.model.state_dict().values()) for m in self.members)

    def layers(self) -> list[str]:
        """Every member's layers, qualified by its name, then ``penultimate`` (the last member's)."""
        return [qualified(m.name, layer) for m in self.members for layer in m.layers()] + [PENULTIMATE]

    def candidates(self) -> list[str]:
        """Every member's candidate layers (:func:`~headstart.codes.backbones.candidate_layers`), qualified."""
        return ["+".join(qualified(m.name, part) for part in layer.split("+"))
                for m in self.members for layer in candidate_layers(m)]

    def locate(self, layer: str) -> tuple[int, str]:
        """(the member's index, its own name for ``layer``); a one-line error for a layer no member has."""
        if layer == PENULTIMATE:
            return len(self.members) - 1, PENULTIMATE
        network, _, own = layer.rpartition(SEPARATOR)
        for i, member in enumerate(self.members):
            if member.name == network:
                return i, own
        raise ModelError(f"{self.name!r} has no layer {layer!r}; name a layer as network{SEPARATOR}layer, e.g. "
                         f"{qualified(self.members[0].name, PENULTIMATE)} (see `headstart summary`)")

    def member_layers(self, layers: list[str]) -> list[tuple[Backbone, list[str]]]:
        """``layers`` grouped by member, in member order (each member's own layer names)."""
        own: dict[int, list[str]] = {}
        for layer in layers:
            i, name = self.locate(layer)
            own.setdefault(i, []).append(name)
        return [(self.members[i], list(dict.fromkeys(own[i]))) for i in sorted(own)]

    def alone(self, network: str) -> Backbone:
        """The member ``network`` as a backbone of its own, at its own preprocessing: the member whose input is the
        joint's (the largest) has the very codes the joint computed for it (the same cache entries)."""
        return next(m for m in self.members if m.name == network)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every member's weights under its ``members.i.`` prefix (as :class:`JointNet`'s state dict), read from
        their cards when they were never built."""
        from safetensors.torch import load_file

        state = {}
        for i, member in enumerate(self.members):
            cached = None if member.built or member.card is None else member.card.state_file()
            tensors = load_file(str(cached)) if cached is not None else member.model.state_dict()
            state.update({f"members.{i}.{k}": v.detach().contiguous() for k, v in tensors.items()})
        return state


def network_names(name: str) -> list[str]:
    """The networks a backbone name holds: one, or several joined by JOINER."""
    return [part.strip() for part in name.split(JOINER) if part.strip()]


def joint_layers(backbone: Backbone, layers: list[str]) -> list[str]:
    """``layers`` as ``backbone`` names them, network by network: for a joint backbone a plain name (``penultimate``,
    ``blocks.5``) means that layer of every network and ``network:layer`` one network's; else ``layers`` as given."""
    members = getattr(backbone, "members", None)
    if not members:
        return list(layers)
    for layer in layers:
        if SEPARATOR in layer:
            backbone.locate(layer)  # a one-line error for a network it does not hold
    return [layer if SEPARATOR in layer else qualified(m.name, layer) for m in members for layer in layers
            if SEPARATOR not in layer or layer.rpartition(SEPARATOR)[0] == m.name]


def layers_text(layers: list[str]) -> str:
    """``layers`` for people: ``a+b``, or for a joint backbone each network's own, ``net0 a+b; net1 c``."""
    if not any(SEPARATOR in layer for layer in layers):
        return "+".join(layers)
    networks: dict[str, list[str]] = {}
    for layer in layers:
        network, _, own = layer.rpartition(SEPARATOR)
        networks.setdefault(network, []).append(own)
    return "; ".join(f"{network} {'+'.join(own)}" for network, own in networks.items())


def model_names(model: str) -> list[str]:
    """The networks a ``model`` option names: one, or several joined by commas (in the user's order), each once."""
    names = [name.strip() for name in str(model).split(",") if name.strip()]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ModelError(f"the model {', '.join(twice)} is named twice in {model!r}; name each network once")
    return names


def named_networks(model: str | None, auto: bool) -> list[str]:
    """The networks to use: those ``model`` names, or when it names none, the ones auto compares (AUTO_MODELS) if
    ``auto`` (the strategy auto, with no weights file and no layer given), else DEFAULT_MODEL. A default network
    whose embedded weights are not installed is left out (offline, the hub would be tried and fail mid-run)."""
    if model is None:
        return [name for name in AUTO_MODELS if name == DEFAULT_MODEL or embedded_weights_path(name) is not None
                ] if auto else [DEFAULT_MODEL]
    return model_names(model)
