"""The CNN-code network: uint8 images in, the model's normalisation, each tapped layer's pooled activations out
(what the ONNX export computes, and the torch runner on a GPU)."""

from __future__ import annotations

import contextlib
import weakref

import numpy as np
import torch
from torch import nn

from ..data.decode import Preprocess
from ..errors import ModelError
from .backbones import LOGITS, PENULTIMATE, Backbone


class Normalize(nn.Module):
    """uint8 NHWC images in; the float NCHW input the pretrained weights expect (the model's mean and std)."""

    def __init__(self, preprocess: Preprocess):
        super().__init__()
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float images in [0, 255] to the model's normalised floats."""
        return (images.permute(0, 3, 1, 2).float() - self.mean) / self.std


def _pool(activation: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Global average pool any activation layout to (batch, channels)."""
    if activation.ndim == 4:
        return activation.mean((1, 2) if channels_last else (2, 3))
    if activation.ndim == 3:  # (batch, tokens, channels)
        return activation.mean(1)
    return activation.flatten(1)


class _Taps(dict):
    """Activations caught by forward hooks, by layer name (a dict subclass, so that hooks can refer to it weakly)."""


def _keep(taps: weakref.ref, layer: str):
    def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
        found = taps()
        if found is not None:
            found[layer] = output

    return hook


def _remove_hooks(handles: list) -> None:
    for handle in handles:
        handle.remove()


class CodesNet(nn.Module):
    """uint8 NHWC images in; the model's normalisation, then each tapped layer's pooled activations (a tuple)."""

    def __init__(self, backbone: Backbone, layers: list[str]):
        super().__init__()
        self.normalize = Normalize(backbone.preprocess)
        self.model = backbone.model
        self.layers = list(layers)
        modules = dict(self.model.named_modules())
        self._taps = _Taps()
        self._channels_last = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        tapped = [layer for layer in self.layers if layer not in (PENULTIMATE, LOGITS)]
        for layer in tapped:
            if layer not in modules or not layer:
                raise ModelError(f"model {backbone.name!r} has no layer {layer!r}; "
                                 f"choose from {', '.join(backbone.layers())} (see `headstart summary`)")
        # The hooks live on the shared model but hold this net's taps only weakly, and are removed with this net:
        # many CodesNets over one backbone never pile up hooks or keep activations alive.
        taps = weakref.ref(self._taps)
        handles = [modules[layer].register_forward_hook(_keep(taps, layer)) for layer in tapped]
        weakref.finalize(self, _remove_hooks, handles)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The tapped layers' pooled codes, side by side."""
        x = self.normalize(images)
        if LOGITS in self.layers:
            final = self.model(x)
        else:
            final = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        outputs = []
        for layer in self.layers:
            if layer in (PENULTIMATE, LOGITS):
                outputs.append(final.flatten(1).float())
            else:
                outputs.append(_pool(self._taps.pop(layer), self._channels_last).float())
        return tuple(outputs)


class JointNet(nn.Module):
    """Several networks in one module (a joint backbone's ``model``): their parameters under ``members.0``, ... .
    Called, it returns every member's penultimate codes side by side."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(models)
        self.num_features = sum(int(getattr(m, "num_features", 0)) for m in models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's penultimate codes of the normalised batch ``x``, side by side."""
        return torch.cat([m.forward_head(m.forward_features(x), pre_logits=True).flatten(1) for m in self.members], 1)


class Resized(nn.Module):
    """uint8 NHWC images resized (bilinear) to ``size``, as float NHWC in [0, 255]: a joint backbone's
    input brought to a member's own input size."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(images.permute(0, 3, 1, 2).float(), size=self.size, mode="bilinear",
                                      align_corners=False, antialias=False)
        return x.permute(0, 2, 3, 1)


class JointCodesNet(nn.Module):
    """uint8 NHWC images in; each member's own input size (resized in the graph), normalisation and taps (a
    CodesNet each), outputs in ``layers``' order (``network:layer`` names, ``penultimate`` the last member's)."""

    def __init__(self, backbone, layers: list[str]):
        super().__init__()
        self.layers = list(layers)
        groups = backbone.member_layers(self.layers)
        self.nets = nn.ModuleList(
            CodesNet(member, own) if tuple(member.preprocess.input_size) == tuple(backbone.preprocess.input_size)
            else nn.Sequential(Resized(member.preprocess.input_size), CodesNet(member, own)) for member, own in groups)
        position = {(member.name, layer): (g, j) for g, (member, own) in enumerate(groups)
                    for j, layer in enumerate(own)}
        self.index = []
        for layer in self.layers:
            i, own = backbone.locate(layer)
            self.index.append(position[(backbone.members[i].name, own)])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The tapped layers' pooled codes, side by side, in ``layers``' order."""
        outputs = [net(images) for net in self.nets]
        return tuple(outputs[g][j] for g, j in self.index)


def codes_net(backbone: Backbone, layers: list[str]) -> nn.Module:
    """The tapped network of ``backbone`` (one network, or a joint backbone's members) for ``layers``."""
    return JointCodesNet(backbone, layers) if getattr(backbone, "members", None) else CodesNet(backbone, layers)


class TorchRunner:
    """CodesNet in eager PyTorch: channels-last on CUDA, in float32 without TF32, so that its codes are those of the
    ONNX file within float32 rounding (they share one cache, and a saved model runs the ONNX file). Measured on an
    H200: 1.3e-6 of their scale apart, where bfloat16 autocast (as before) put them 5% apart.
    """

    def __init__(self, backbone: Backbone, layers: list[str], device: str):
        self.device = torch.device(device)
        self.net = codes_net(backbone, layers).to(self.device).eval()
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False), _no_tf32_matmul():
            outputs = self.net(x)
        return [o.float().cpu().numpy() for o in outputs]


@contextlib.contextmanager
def _no_tf32_matmul():
    """float32 matrix products at full precision for the duration (PyTorch's setting is process-wide)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
