"""Export a saved model as one file: ONNX (normalisation, network, layer taps and head in the graph; fp32 or int8)
or TorchScript.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..codes.backbones import PENULTIMATE
from ..codes.codesnet import codes_net
from ..codes.onnx_export import on_cpu
from ..codes.quantize import MIN_CALIBRATION_IMAGES
from ..codes.runners import OnnxRunner
from ..defaults import EXPORT_FORMATS as FORMATS
from ..defaults import PRECISIONS
from ..disk import write_atomic
from ..errors import ArtifactError
from .runtime import EXPORT_FORMAT


class HeadNet(nn.Module):
    """CNN codes in, one tensor per layer of ``inputs``; class probabilities out (concatenation, the linear head,
    softmax, or a sigmoid per label for a multi-label model) and, with ``familiarity``, each image's familiarity
    (cosine similarity of its penultimate codes to the k-th nearest training image). ``int8_bank``: the training
    codes stored as int8 rows with a scale each (a quarter of the size; cosines move by about 0.002)."""

    def __init__(self, clf, inputs: list[str], familiarity: bool = True, int8_bank: bool = False):
        super().__init__()
        self.head_inputs = [inputs.index(layer) for layer in clf.layers_]
        self.familiarity = getattr(clf, "familiarity_", None) if familiarity else None
        self.penultimate = inputs.index(PENULTIMATE) if self.familiarity is not None else -1
        self.head = nn.Linear(clf.head_.weight.shape[1], clf.head_.weight.shape[0])
        self.multilabel = clf.multilabel_  # a sigmoid per label instead of the softmax
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(clf.head_.weight))
            self.head.bias.copy_(torch.from_numpy(clf.head_.bias))
        if self.familiarity is not None:
            bank = torch.from_numpy(self.familiarity.bank.astype(np.float32))
            scale = bank.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127 if int8_bank else torch.ones(len(bank), 1)
            self.register_buffer("bank", torch.round(bank / scale).to(torch.int8) if int8_bank else bank)
            self.register_buffer("bank_scale", scale if int8_bank else None)

    def forward(self, codes: tuple[torch.Tensor, ...]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Normalised images to class probabilities and familiarity."""
        logits = self.head(torch.cat([codes[i] for i in self.head_inputs], 1))
        proba = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)
        if self.familiarity is None:
            return proba
        query = nn.functional.normalize(codes[self.penultimate], dim=1)
        bank = self.bank if self.bank_scale is None else self.bank.float() * self.bank_scale
        k = min(self.familiarity.k, bank.shape[0])
        return proba, torch.topk(query @ bank.T, k, dim=1).values[:, -1]


class WholeClassifier(nn.Module):
    """uint8 NHWC images in; class probabilities out (and familiarity when the model has it): CodesNet, HeadNet."""

    def __init__(self, clf, familiarity: bool = True):
        super().__init__()
        layers = clf._code_layers() if familiarity and getattr(clf, "familiarity_", None) is not None else clf.layers_
        self.codes = codes_net(clf.backbone_, layers)
        self.head = HeadNet(clf, layers, familiarity)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """uint8 images to class probabilities."""
        return self.head(self.codes(images))


def _metadata(clf, precision: str) -> dict[str, str]:
    metadata = {
        "format": EXPORT_FORMAT,
        "class_names": json.dumps(clf.classes_),
        "preprocess": json.dumps(clf.backbone_.preprocess.to_dict()),
        "model": clf.backbone_.name,
        "weights": clf.backbone_.weights,
        "layers": json.dumps(clf.layers_),
        "strategy": clf.strategy_,
        "precision": precision,
        "input": "uint8 NHWC RGB images, resized and cropped per 'preprocess'; normalisation is in the graph",
    }
    if getattr(clf, "familiarity_", None) is not None:
        metadata["familiarity"] = json.dumps(clf.familiarity_.info())
    if clf.multilabel_:  # sigmoid outputs: each label is called at or above its threshold
        metadata["thresholds"] = json.dumps([float(t) for t in clf.head_.thresholds])
        metadata["fill_empty"] = "true" if clf.head_.fill_empty else "false"
    return metadata


def onnx_bytes(clf, precision: str, calibration: Sequence[str | Path] | None = None) -> bytes:
    """The codes network (the model's own, or quantised on ``calibration``) joined to the exported HeadNet."""
    import onnx
    import onnx.compose

    from ..codes.extract import FeatureExtractor

    layers = clf._code_layers() if getattr(clf, "familiarity_", None) is not None else clf.layers_
    if precision == clf.precision_ and set(layers) <= set(clf._extractor().computed):
        network = clf._extractor().network()
    else:
        if precision == "int8" and calibration is None:  # the training images recorded at fit, if still there
            calibration = [p for p in getattr(clf, "_calibration", None) or [] if Path(p).is_file()]
            if len(calibration) < MIN_CALIBRATION_IMAGES:
                raise ArtifactError("this model was fitted in fp32 and its training images are gone: give "
                                    "training images to calibrate int8 on (--calibration DIR)")
        network = FeatureExtractor(clf.backbone_, layers, clf.cache_dir, "onnx", precision=precision,
                                   calibration=calibration).network()
    runner = OnnxRunner(network, layers, threads=1)
    height, width = clf.backbone_.preprocess.input_size
    widths = [out.shape[1] for out in runner(np.zeros((1, height, width, 3), np.uint8))]
    codes_model = onnx.load(str(network))
    head_model = head_graph(clf, layers, widths, codes_model.opset_import, int8_bank=precision == "int8")
    outputs = [o.name for o in head_model.graph.output]
    # the exporter's IR version, which this ONNX Runtime opened for the codes: the onnx package's newest may be one
    # that the installed ONNX Runtime cannot read (onnx 1.23 writes 14; ONNX Runtime 1.30 reads up to 13)
    head_model.ir_version = codes_model.ir_version
    merged = onnx.compose.merge_models(
        codes_model, head_model, io_map=[(name, f"codes_{i}") for i, name in enumerate(runner.outputs)],
        prefix2="head/", outputs=[f"head/{name}" for name in outputs])
    for name in outputs:  # the public output names, without the prefix
        merged.graph.node.append(onnx.helper.make_node("Identity", [f"head/{name}"], [name]))
        output = next(o for o in merged.graph.output if o.name == f"head/{name}")
        output.name = name
    del merged.metadata_props[:]
    for key, value in _metadata(clf, precision).items():
        merged.metadata_props.add(key=key, value=value)
    data = merged.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def head_graph(clf, inputs: list[str], widths: list[int], opsets, int8_bank: bool = False):
    """:class:`HeadNet` as an ONNX graph written node by node (no tracing: milliseconds, where torch's exporter takes
    a second or more): codes ``codes_i`` of ``inputs`` in, ``probabilities`` (and ``familiarity``) out."""
    from onnx import TensorProto, helper, numpy_helper

    head = HeadNet(clf, inputs, int8_bank=int8_bank)
    chosen = [f"codes_{i}" for i in head.head_inputs]
    weights = [numpy_helper.from_array(clf.head_.weight.astype(np.float32), "weight"),
               numpy_helper.from_array(clf.head_.bias.astype(np.float32), "bias"),
               numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Concat", chosen, ["joined"], axis=1),
             helper.make_node("Gemm", ["joined", "weight", "bias"], ["logits"], transB=1),
             helper.make_node("Sigmoid", ["logits"], ["probabilities"]) if clf.multilabel_ else
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(clf.classes_)])]
    if head.familiarity is not None:  # cosine to every banked image, then the k-th largest
        bank = head.bank.numpy()
        k = min(head.familiarity.k, bank.shape[0])
        weights += [numpy_helper.from_array(np.ascontiguousarray(bank.T), "bank_t"),
                    numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),
                    numpy_helper.from_array(np.array([k], np.int64), "k"),
                    numpy_helper.from_array(np.array(k - 1, np.int64), "kth")]
        nodes += [helper.make_node("Mul", [f"codes_{head.penultimate}"] * 2, ["squares"]),
                  helper.make_node("ReduceSum", ["squares", "axis1"], ["sum_squares"], keepdims=1),
                  helper.make_node("Sqrt", ["sum_squares"], ["norm"]),
                  helper.make_node("Max", ["norm", "eps"], ["safe_norm"]),
                  helper.make_node("Div", [f"codes_{head.penultimate}", "safe_norm"], ["query"])]
        if head.bank_scale is not None:  # int8 rows with a scale each: dequantised in the graph
            weights.append(numpy_helper.from_array(head.bank_scale.numpy().T.astype(np.float32), "scale_t"))
            nodes += [helper.make_node("Cast", ["bank_t"], ["bank_float"], to=TensorProto.FLOAT),
                      helper.make_node("Mul", ["bank_float", "scale_t"], ["bank_scaled"])]
        nodes += [helper.make_node("MatMul", ["query", "bank_scaled" if head.bank_scale is not None else "bank_t"],
                                   ["cosines"]),
                  helper.make_node("TopK", ["cosines", "k"], ["nearest", "nearest_index"], axis=1),
                  helper.make_node("Gather", ["nearest", "kth"], ["familiarity"], axis=1)]
        outputs.append(helper.make_tensor_value_info("familiarity", TensorProto.FLOAT, ["batch"]))
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info(f"codes_{i}", TensorProto.FLOAT, ["batch", w])
                        for i, w in enumerate(widths)], outputs, weights)
    return helper.make_model(graph, opset_imports=list(opsets))


def export(clf, out: str | os.PathLike, fmt: str = "onnx", precision: str | None = None,
           calibration: Sequence[str | Path] | None = None) -> Path:
    """Write ``clf`` (a loaded or fitted TransferClassifier) to the single file ``out``, atomically.

    ``precision``: of the ONNX network, "fp32" or "int8" (default: the model's own). int8 reuses the model's
    quantised network, or quantises now with ranges from ``calibration`` (training images) for an fp32 model.
    """
    if fmt not in FORMATS:
        raise ArtifactError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    precision = precision or clf.precision_
    if precision not in PRECISIONS:
        raise ArtifactError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if fmt != "onnx" and precision != "fp32":
        raise ArtifactError("int8 export is ONNX only; use --format onnx, or --precision fp32 for TorchScript")
    out = Path(out).expanduser()
    if fmt == "onnx":
        data = onnx_bytes(clf, precision, calibration)
    else:
        import io

        net = WholeClassifier(clf, familiarity=False).eval()  # TorchScript keeps its one output
        height, width = clf.backbone_.preprocess.input_size
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad(), on_cpu(net):
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, torch.zeros(2, height, width, 3, dtype=torch.uint8))
            torch.jit.save(traced, buffer, _extra_files={"headstart.json": json.dumps(_metadata(clf, precision))})
        data = buffer.getvalue()
    write_atomic(out, data)
    return out
