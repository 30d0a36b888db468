"""The ONNX export of the codes network: TorchScript's tracer with timm's "same" padding fixed (today's) against
torch.export (dynamo, the previous one), in one run.

    python bench/export.py [--models tf_efficientnet_lite0 tf_efficientnet_lite1 tf_efficientnet_lite2]

For each network (auto's 5 tapped layers): seconds to export, ONNX Runtime images/s on one pre-decoded batch of 64
at the network's input size (both files alternating, 3 rounds, the best of each), the largest difference between
the two files' codes and between the traced file's and eager PyTorch's, and the graph's node types.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import onnx
import torch

from headstart.codes import onnx_export
from headstart.codes.codesnet import CodesNet
from headstart.codes.create import create_backbone
from headstart.codes.session import onnx_session

LAYERS = ["blocks.3", "blocks.4", "blocks.5", "blocks.6", "penultimate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tf_efficientnet_lite0", "tf_efficientnet_lite1",
                                                          "tf_efficientnet_lite2"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the tracer's notes on constant sizes: constant by design here
    for name in args.models:
        backbone = create_backbone(name)
        net = CodesNet(backbone, LAYERS).eval()
        height, width = backbone.preprocess.input_size
        example = (torch.zeros(2, height, width, 3, dtype=torch.uint8),)
        names = ["images"], [f"codes_{i}" for i in range(len(LAYERS))]
        files, seconds = {}, {}
        for side in ("dynamo", "traced"):
            started = time.perf_counter()
            with torch.no_grad():
                if side == "dynamo":
                    files[side] = onnx_export._exported(net, example, *names).SerializeToString()
                else:
                    files[side] = onnx_export._traced(net, example, *names)
            seconds[side] = time.perf_counter() - started
        images = np.random.default_rng(0).integers(0, 256, (64, height, width, 3), dtype=np.uint8)
        paths, sessions = {}, {}
        for side, data in files.items():
            paths[side] = f"/tmp/headstart-bench-export-{side}.onnx"
            with open(paths[side], "wb") as f:
                f.write(data)
            sessions[side] = onnx_session(paths[side])
        outputs = {side: s.run(None, {"images": images}) for side, s in sessions.items()}
        best = dict.fromkeys(sessions, 0.0)
        for _ in range(3):
            for side, session in sessions.items():
                started = time.perf_counter()
                session.run(None, {"images": images})
                best[side] = max(best[side], len(images) / (time.perf_counter() - started))
        with torch.no_grad():
            eager = [o.numpy() for o in net(torch.from_numpy(images[:16]))]
        between = max(float(np.abs(a - b).max()) for a, b in zip(outputs["dynamo"], outputs["traced"]))
        to_eager = max(float(np.abs(a - b[:16]).max()) for a, b in zip(eager, outputs["traced"]))
        print(f"{name} ({height}x{width}): export {seconds['dynamo']:.2f} s (dynamo) vs {seconds['traced']:.2f} s "
              f"(traced), {seconds['dynamo'] / seconds['traced']:.1f}x faster; ONNX Runtime {best['dynamo']:.0f} vs "
              f"{best['traced']:.0f} img/s ({best['traced'] / best['dynamo']:.2f}x); codes differ by at most "
              f"{between:.1e} (traced vs eager {to_eager:.1e})")
        for side, data in files.items():
            print(f"  {side} nodes: {', '.join(sorted({n.op_type for n in onnx.load_from_string(data).graph.node}))}")


if __name__ == "__main__":
    main()
