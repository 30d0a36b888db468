"""Exporting a torch network to ONNX: TorchScript's tracer with timm's "same" padding fixed, the graph folded by ONNX
Runtime and checked against eager PyTorch, or torch.export (dynamo) where the tracer cannot take the network."""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.decode import Preprocess


def export_onnx(net: torch.nn.Module, preprocess: Preprocess | None, n_outputs: int,
                metadata: dict[str, str] | None = None, examples: tuple[torch.Tensor, ...] | None = None,
                input_names: list[str] | None = None, output_names: list[str] | None = None) -> bytes:
    """Serialise ``net`` to ONNX bytes with a dynamic batch dimension on every input tensor.

    By default the input is "images" (uint8 NHWC at ``preprocess``'s size) and the outputs "codes_0".. . Traced by
    TorchScript with timm's "same" padding fixed for the input's height and width (they never change: only the
    batch is dynamic), then folded (:func:`_folded`); a network the tracer cannot take is exported by torch.export
    (dynamo) instead. Measured with bench/export.py: Lite0/1/2 traced in 0.27/0.31/0.38 s (Lite0 0.31 s folded)
    where dynamo took 5.3/6.2/6.6 s, at the same ONNX Runtime speed (0.99-1.02x), codes within 7e-6 of dynamo's.
    """
    import onnx

    if examples is None:
        height, width = preprocess.input_size
        examples = (torch.zeros(2, height, width, 3, dtype=torch.uint8),)
    input_names = input_names or ["images"]
    output_names = output_names or [f"codes_{i}" for i in range(n_outputs)]
    with warnings.catch_warnings(), torch.no_grad(), on_cpu(net):
        warnings.simplefilter("ignore")
        try:
            traced = _traced(net.eval(), examples, input_names, output_names)
            if not _computes_like(net, traced, examples, input_names):
                raise ValueError("the traced graph computes something else")
            model = onnx.load_from_string(traced)
        except Exception:  # whatever the tracer cannot take or takes wrongly, dynamo may
            model = _exported(net.eval(), examples, input_names, output_names)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


@contextlib.contextmanager
def on_cpu(net: torch.nn.Module):
    """``net`` moved to the CPU for the duration (exports trace on the CPU, and ONNX Runtime checks them there), then
    back where it was: after extraction or fine-tuning on CUDA the network lives on the GPU."""
    devices = {t.device for t in (*net.parameters(), *net.buffers())}
    if devices <= {torch.device("cpu")}:
        yield net
        return
    device = next(d for d in devices if d.type != "cpu")
    net.cpu()
    try:
        yield net
    finally:
        net.to(device)


def _traced(net: torch.nn.Module, examples: tuple[torch.Tensor, ...], input_names: list[str],
            output_names: list[str]) -> bytes:
    """TorchScript's ONNX export (opset 18), timm's "same" padding as constants."""
    import io

    buffer = io.BytesIO()
    with _static_same_padding():
        torch.onnx.export(net, examples, buffer, dynamo=False, input_names=input_names, output_names=output_names,
                          dynamic_axes={name: {0: "batch"} for name in input_names}, opset_version=18)
    return _folded(buffer.getvalue())


def _folded(onnx_bytes: bytes) -> bytes:
    """The graph with ONNX Runtime's basic, standard-ONNX optimisations applied (constants folded, batch norms fused
    into convolutions): the tracer leaves the pads and clip bounds as Constant subgraphs, which int8 quantisation
    cannot fuse (the int8 network ran at 441 img/s instead of 817)."""
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="headstart-export-") as tmp:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        options.log_severity_level = 3  # its notes on initializers it removed are not the user's business
        onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        return (Path(tmp) / "folded.onnx").read_bytes()


def _computes_like(net: torch.nn.Module, onnx_bytes: bytes, examples: tuple[torch.Tensor, ...],
                   input_names: list[str]) -> bool:
    """Whether ONNX Runtime's outputs of ``onnx_bytes`` equal ``net``'s on a random batch like ``examples`` but one
    image larger (within 1e-3 of the outputs' scale): a tracer records one run, and a network whose computation
    depends on its input in ways the tracer cannot see would be exported wrongly without a word."""
    import onnxruntime

    generator = torch.Generator().manual_seed(0)
    shapes = [(len(x) + 1, *x.shape[1:]) for x in examples]  # another batch size: the batch is the dynamic axis
    inputs = tuple(torch.randint(0, 256, shape, dtype=x.dtype, generator=generator) if not x.is_floating_point()
                   else torch.randn(shape, dtype=x.dtype, generator=generator) for x, shape in zip(examples, shapes))
    expected = net(*inputs)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {name: x.numpy() for name, x in zip(input_names, inputs)})
    return len(got) == len(expected) and all(
        g.shape == e.shape and float(np.abs(g - e.numpy()).max()) <= 1e-3 * max(1.0, float(np.abs(e.numpy()).max()))
        for g, e in zip(got, expected))


def _exported(net: torch.nn.Module, examples: tuple[torch.Tensor, ...], input_names: list[str],
              output_names: list[str]):
    """torch.export's (dynamo's) ONNX export (opset 18): the ModelProto."""
    from torch.utils._pytree import tree_map

    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.onnx.export(net, examples, dynamo=True, input_names=input_names, output_names=output_names,
                             dynamic_shapes=tree_map(lambda _: {0: batch}, examples), opset_version=18,
                             external_data=False, verbose=False).model_proto


@contextlib.contextmanager
def _static_same_padding():
    """timm's ``pad_same`` with the input's height and width read as numbers, so that the tracer records constant
    pads (a Pad node) instead of computing them from the tensor's shape at every run (Shape, Ceil, Sub, ... nodes
    that made ONNX Runtime 32% slower on Lite0). Exact for a fixed input size, which every export here has."""
    import importlib

    from timm.layers.padding import get_same_padding

    def pad_same(x, kernel_size, stride, dilation=(1, 1), value: float = 0):
        pad_h = get_same_padding(int(x.shape[-2]), kernel_size[0], stride[0], dilation[0])
        pad_w = get_same_padding(int(x.shape[-1]), kernel_size[1], stride[1], dilation[1])
        return torch.nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2),
                                       value=value)

    patched = []
    for name in ("timm.layers.padding", "timm.layers.conv2d_same", "timm.layers.pool2d_same"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "pad_same"):
            patched.append((module, module.pad_same))
            module.pad_same = pad_same
    try:
        yield
    finally:
        for module, original in patched:
            module.pad_same = original
