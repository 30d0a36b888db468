"""Export a saved model as one file: ONNX (normalisation, network, layer taps and head in the graph) or TorchScript."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backbones import CodesNet
from .cache import write_atomic
from .defaults import EXPORT_FORMATS as FORMATS
from .errors import ArtifactError
from .runtime import EXPORT_FORMAT


class WholeClassifier(nn.Module):
    """uint8 NHWC images in; class probabilities out (CodesNet, concatenation, the linear head, softmax) and, when
    the model has one, each image's familiarity (cosine similarity of its penultimate codes to the k-th nearest
    training image)."""

    def __init__(self, clf, familiarity: bool = True):
        super().__init__()
        self.n_head_layers = len(clf.layers_)
        self.familiarity = getattr(clf, "familiarity_", None) if familiarity else None
        layers = clf._code_layers() if self.familiarity is not None else clf.layers_
        self.codes = CodesNet(clf.backbone_, layers)
        self.penultimate = layers.index("penultimate") if self.familiarity is not None else -1
        self.head = nn.Linear(clf.head_.weight.shape[1], clf.head_.weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(clf.head_.weight))
            self.head.bias.copy_(torch.from_numpy(clf.head_.bias))
        if self.familiarity is not None:
            self.register_buffer("bank", torch.from_numpy(self.familiarity.bank.astype(np.float32)))

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        codes = self.codes(images)
        proba = torch.softmax(self.head(torch.cat(codes[:self.n_head_layers], 1)), dim=1)
        if self.familiarity is None:
            return proba
        query = nn.functional.normalize(codes[self.penultimate], dim=1)
        k = min(self.familiarity.k, self.bank.shape[0])
        return proba, torch.topk(query @ self.bank.T, k, dim=1).values[:, -1]


def export(clf, out: str | os.PathLike, fmt: str = "onnx") -> Path:
    """Write ``clf`` (a loaded or fitted TransferClassifier) to the single file ``out``, atomically."""
    if fmt not in FORMATS:
        raise ArtifactError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    net = WholeClassifier(clf, familiarity=fmt == "onnx").eval()  # TorchScript keeps its one output
    height, width = clf.backbone_.preprocess.input_size
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    metadata = {
        "format": EXPORT_FORMAT,
        "class_names": json.dumps(clf.classes_),
        "preprocess": json.dumps(clf.backbone_.preprocess.to_dict()),
        "model": clf.backbone_.name,
        "weights": clf.backbone_.weights,
        "layers": json.dumps(clf.layers_),
        "strategy": clf.strategy_,
        "input": "uint8 NHWC RGB images, resized and cropped per 'preprocess'; normalisation is in the graph",
    }
    if net.familiarity is not None:
        metadata["familiarity"] = json.dumps(net.familiarity.info())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            import onnx

            outputs = ["probabilities"] + (["familiarity"] if net.familiarity is not None else [])
            program = torch.onnx.export(net, (example,), dynamo=True, input_names=["images"],
                                        output_names=outputs, opset_version=18, external_data=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
                                        verbose=False)
            model = program.model_proto
            for key, value in metadata.items():
                model.metadata_props.add(key=key, value=value)
            data = model.SerializeToString()
            onnx.checker.check_model(onnx.load_from_string(data))
        else:
            import io

            traced = torch.jit.trace(net, example)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer, _extra_files={"headstart.json": json.dumps(metadata)})
            data = buffer.getvalue()
    write_atomic(out, data)
    return out
