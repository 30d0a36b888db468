"""CNN codes: the pretrained networks (timm, their weights and tap layers), the ONNX export of the tapped network and
its runtimes, extraction over image files, the on-disk code cache, and int8.

May import ``data`` and the top-level foundations (``errors``, ``defaults``, ``disk``); knows nothing of heads,
training, ``auto``, the audit or deployment. ``session``, ``runners``, ``quantize``, ``store`` and ``extract`` import
torch only to export a network or to run it eagerly (``codesnet``, ``onnx_export``): extraction on a CPU with the
network cached needs none; ``backbones`` and ``cards`` import it only to build or read a network.
"""
