"""Export a saved model as one file: ONNX (normalisation, network, layer taps and head in the graph) or TorchScript."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .backbones import CodesNet
from .cache import write_atomic
from .defaults import EXPORT_FORMATS as FORMATS
from .errors import ArtifactError
from .runtime import EXPORT_FORMAT


class WholeClassifier(nn.Module):
    """uint8 NHWC images in, class probabilities out: CodesNet, concatenation, the linear head, softmax."""

    def __init__(self, clf):
        super().__init__()
        self.codes = CodesNet(clf.backbone_, clf.layers_)
        self.head = nn.Linear(clf.head_.weight.shape[1], clf.head_.weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(clf.head_.weight))
            self.head.bias.copy_(torch.from_numpy(clf.head_.bias))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(torch.cat(self.codes(images), 1)), dim=1)


def export(clf, out: str | os.PathLike, fmt: str = "onnx") -> Path:
    """Write ``clf`` (a loaded or fitted TransferClassifier) to the single file ``out``, atomically."""
    if fmt not in FORMATS:
        raise ArtifactError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    net = WholeClassifier(clf).eval()
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
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            import onnx

            program = torch.onnx.export(net, (example,), dynamo=True, input_names=["images"],
                                        output_names=["probabilities"], opset_version=18, external_data=False,
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
